"""Quantization on real tasks (Sec. 5.2): train nets on real data, then lower the precision of
their weights step by step (retraining briefly after each step, as for memorization) and
measure training and test performance at every width.

Offline, only the MNIST test set and the PTB validation/test splits may exist; the study then
says exactly what it trained and evaluated on (``TaskData.source``), and stands in for a
missing CIFAR-10 with MNIST digits padded to 32x32x3.
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn
from torch.func import functional_call

from . import realdata, validate
from .devices import describe, resolve_device
from .progress import bar as progress_bar
from .quantize import QuantConfig, check_bits, fake_quantize, quantized_names, step_size
from .results import ResultsCache, config_key
from .surface import SurfaceConfig, classification_evaluator, lm_evaluator, loss_surface
from .taskmodels import CIFARCNN, MNISTFCDNN, CIFARResNet, WordLM, count_parameters

TASKS = ("mnist", "cifar", "resnet", "lm")
EXPERIMENT = "real-tasks"


@dataclass
class TaskData:
    train: Any
    test: Any
    source: str
    vocab: int = 0


def _split(x: torch.Tensor, y: torch.Tensor, n_test: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(x), generator=g)
    test, train = perm[:n_test], perm[n_test:]
    return (x[train], y[train]), (x[test], y[test])


def image_data(kind: str, root: Path | None, online: bool, max_train: int | None,
               max_test: int | None, seed: int = 0) -> TaskData:
    """MNIST (28x28x1) or CIFAR-10 (32x32x3) with train/test, or what stands in offline."""
    if kind == "cifar" and (realdata.available("cifar10/cifar-10-batches-py", root)
                            or realdata.available("cifar10/cifar-10-python.tar.gz", root)
                            or online):
        try:
            train, test = realdata.cifar10("train", root, online), realdata.cifar10("test", root,
                                                                                     online)
            source = "CIFAR-10: training set and test set"
            return _cap(TaskData(train, test, source), max_train, max_test)
        except realdata.DataError:
            if not (realdata.available("mnist/t10k-images-idx3-ubyte.gz", root)):
                raise
    have_train = realdata.available("mnist/train-images-idx3-ubyte.gz", root) or online
    try:
        if have_train:
            train, test = realdata.mnist("train", root, online), realdata.mnist("test", root,
                                                                                 online)
            source = "MNIST training set, MNIST test set"
        else:
            raise realdata.DataError("no MNIST training split")
    except realdata.DataError:
        x, y = realdata.mnist("test", root, online=False)
        train, test = _split(x, y, min(2000, len(x) // 5), seed)
        source = ("MNIST test set only (the training split is not available here): "
                  f"{len(train[0]):,} of its images train, the other {len(test[0]):,} test")
    if kind == "cifar":
        source = ("CIFAR-10 is not available here; stand-in: MNIST digits padded to 32x32 "
                  "and repeated over 3 channels. " + source)
        train, test = _as_cifar(train), _as_cifar(test)
    return _cap(TaskData(train, test, source), max_train, max_test)


def _as_cifar(xy):
    x, y = xy
    return nn.functional.pad(x, (2, 2, 2, 2)).repeat(1, 3, 1, 1), y


def _cap(d: TaskData, max_train: int | None, max_test: int | None) -> TaskData:
    if max_train:
        d.train = (d.train[0][:max_train], d.train[1][:max_train])
        d.source += f"; first {len(d.train[0]):,} training images used"
    if max_test:
        d.test = (d.test[0][:max_test], d.test[1][:max_test])
    return d


def lm_data(root: Path | None, online: bool, batch: int = 20,
            max_tokens: int | None = None) -> TaskData:
    """PTB word-level: train on the training split when present, else on the validation
    split; evaluate on the test split. Vocabulary from the splits used."""
    try:
        train_words = realdata.ptb_tokens("train", root, online)
        source = "PTB training split, PTB test split"
    except realdata.DataError:
        train_words = realdata.ptb_tokens("valid", root, online=False)
        source = ("PTB validation split as training data (the training split is not "
                  "available here), PTB test split as test data")
    test_words = realdata.ptb_tokens("test", root, online=False if "validation" in source
                                     else online)
    vocab = realdata.Vocabulary(train_words, test_words)
    if max_tokens:
        train_words, test_words = train_words[:max_tokens], test_words[:max_tokens]
        source += f"; first {len(train_words):,} tokens of each"
    train = realdata.batchify(vocab.encode(train_words), batch)
    test = realdata.batchify(vocab.encode(test_words), batch)
    return TaskData(train, test, source + f"; vocabulary {len(vocab):,} words", len(vocab))


def build_model(task: str, size: Any, vocab: int = 0) -> nn.Module:
    validate.choice("task", task, TASKS)
    torch.manual_seed(0)
    if task == "mnist":
        return MNISTFCDNN(int(size))
    if task == "cifar":
        return CIFARCNN(str(size))
    if task == "resnet":
        return CIFARResNet(int(size))
    return WordLM(vocab, int(size))


def model_name(task: str, size: Any) -> str:
    return {"mnist": f"2x{size}", "cifar": str(size), "resnet": f"ResNet-{size}",
            "lm": f"2x{size} LSTM"}[task]


class Quantized:
    """Run a module with some weights fake-quantized (steps fixed), float shadows learning."""

    def __init__(self, model: nn.Module, config: QuantConfig | None) -> None:
        self.model = model
        self.steps = {} if config is None else {
            n: step_size(p, config.bits, config.step_rule)
            for n, p in model.named_parameters() if n in set(quantized_names(model))}
        self.bits = config.bits if config else 0

    def __call__(self, *args, **kw):
        params = {n: (fake_quantize(p, self.steps[n], self.bits) if n in self.steps else p)
                  for n, p in self.model.named_parameters()}
        return functional_call(self.model, {**params, **dict(self.model.named_buffers())},
                               args, kw)


def train_classifier(model: nn.Module, data: tuple, epochs: int, lr: float, batch: int,
                     config: QuantConfig | None = None, seed: int = 0) -> None:
    """Adam on cross-entropy; with ``config`` the forward pass runs on quantized weights."""
    x, y = data
    run = Quantized(model, config)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=g).split(batch):
            loss = nn.functional.cross_entropy(run(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()


def train_lm(model: nn.Module, data: torch.Tensor, epochs: int, lr: float, bptt: int = 35,
             config: QuantConfig | None = None) -> None:
    """Adam with truncated backpropagation through time and gradient clipping."""
    run = Quantized(model, config)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        state = None
        for i in range(0, data.shape[0] - 1, bptt):
            x, y = data[i:i + bptt], data[i + 1:i + 1 + bptt]
            logits, state = run(x[:len(y)], state)
            state = tuple(s.detach() for s in state)
            loss = nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten())
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 0.5)
            opt.step()
    model.eval()


def evaluate(task: str, run: Callable, data: Any) -> dict[str, float]:
    ev = lm_evaluator(data) if task == "lm" else classification_evaluator(*data)
    with torch.no_grad():
        total, correct, count = ev(run)
    out = {"loss": total / count, "accuracy": correct / count}
    if task == "lm":
        out["perplexity"] = math.exp(min(out["loss"], 50.0))
    return out


@dataclass(frozen=True)
class RealTaskStudy:
    """Which nets, how long they train, and the widths they are quantized to."""

    profile: str = "custom"
    mnist_widths: tuple[int, ...] = (8, 16, 32)
    cifar_sizes: tuple[str, ...] = ("tiny", "small")
    resnet_depths: tuple[int, ...] = (20,)
    lm_units: tuple[int, ...] = (16, 32)
    bits: tuple[int, ...] = (8, 6, 5, 4, 3, 2)
    epochs: dict[str, int] = field(default_factory=lambda: {
        "mnist": 10, "cifar": 4, "resnet": 2, "lm": 3})
    retrain_epochs: dict[str, int] = field(default_factory=lambda: {
        "mnist": 1, "cifar": 1, "resnet": 1, "lm": 1})
    lr: dict[str, float] = field(default_factory=lambda: {
        "mnist": 0.002, "cifar": 0.001, "resnet": 0.002, "lm": 0.003})
    retrain_lr_factor: float = 0.1
    batch_size: int = 128
    max_train: int | None = None
    max_test: int | None = None
    max_tokens: int | None = None
    step_rule: str = "l2"
    online: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        validate.lists_to_tuples(self)
        for w in self.mnist_widths:
            validate.integer("mnist_widths", w, lo=1, hi=65536)
        for s in self.cifar_sizes:
            validate.choice("cifar_sizes", s, ("tiny", "small", "large"))
        for d in self.resnet_depths:
            validate.integer("resnet_depths", d, lo=8, hi=1202)
            if (d - 2) % 6:
                raise validate.ConfigError(f"resnet_depths must be 6n+2 (20, 32, ...), got {d}")
        for u in self.lm_units:
            validate.integer("lm_units", u, lo=1, hi=8192)
        for b in validate.non_empty("bits", self.bits):
            check_bits(b)
        if list(self.bits) != sorted(self.bits, reverse=True):
            raise validate.ConfigError(f"bits must go from more to fewer, got {list(self.bits)}")
        for t in TASKS:
            validate.integer(f"epochs[{t!r}]", self.epochs.get(t, 1), lo=1, hi=100000)
            validate.integer(f"retrain_epochs[{t!r}]", self.retrain_epochs.get(t, 0), lo=0,
                             hi=100000)
            validate.number(f"lr[{t!r}]", self.lr.get(t, 0.001), lo=0.0, hi=10.0, lo_open=True)
        validate.integer("batch_size", self.batch_size, lo=1, hi=1 << 20)
        validate.choice("step_rule", self.step_rule, ("l2", "max"))

    @classmethod
    def from_namespace(cls, namespace: dict[str, Any]) -> RealTaskStudy:
        return cls(**{f.name: namespace[f.name] for f in fields(cls) if f.name in namespace})

    def units(self) -> list[tuple[str, Any]]:
        return ([("mnist", w) for w in self.mnist_widths] +
                [("cifar", s) for s in self.cifar_sizes] +
                [("resnet", d) for d in self.resnet_depths] +
                [("lm", u) for u in self.lm_units])


def run_unit(study: RealTaskStudy, task: str, size: Any, data: TaskData, device: torch.device
             ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Train one net, quantize it progressively down ``study.bits`` with retraining, and
    measure it on its training and test data at every width; the rows, and the float and
    quantized weights (for the loss-surface chapter)."""
    model = build_model(task, size, data.vocab).to(device)
    ep, lr = study.epochs.get(task, 1), study.lr.get(task, 0.001)
    re = study.retrain_epochs.get(task, 0)

    def train(m: nn.Module, epochs: int, rate: float, cfg: QuantConfig | None) -> None:
        if task == "lm":
            train_lm(m, data.train.to(device), epochs, rate, config=cfg)
        else:
            train_classifier(m, (data.train[0].to(device), data.train[1].to(device)), epochs,
                             rate, study.batch_size, cfg, study.seed)

    def measure(m: nn.Module, cfg: QuantConfig | None) -> dict[str, dict[str, float]]:
        run = Quantized(m, cfg)
        sets = {"train": data.train, "test": data.test}
        moved = {k: (v.to(device) if task == "lm" else (v[0].to(device), v[1].to(device)))
                 for k, v in sets.items()}
        return {k: evaluate(task, run, v) for k, v in moved.items()}

    t0 = time.perf_counter()
    train(model, ep, lr, None)
    base = {"task": task, "model": model_name(task, size), "size": size,
            "params": count_parameters(model), "data": data.source, "profile": study.profile}
    rows, states = [], {"float": {k: v.cpu() for k, v in model.state_dict().items()}}

    def add(res: dict[str, dict[str, float]], bits: int | None, retrained: bool) -> None:
        for split, r in res.items():
            rows.append({**base, "bits": bits, "retrained": retrained, "split": split, **r})

    add(measure(model, None), None, False)
    shadow = copy.deepcopy(model)
    for b in study.bits:
        cfg = QuantConfig(b, study.step_rule)
        add(measure(model, cfg), b, False)  # direct, from the float net
        if re:
            train(shadow, re, lr * study.retrain_lr_factor, cfg)
        q = Quantized(shadow, cfg)
        add(measure(shadow, cfg), b, bool(re))
        frozen = copy.deepcopy(shadow)
        with torch.no_grad():
            for n, p in frozen.named_parameters():
                if n in q.steps:
                    p.copy_(fake_quantize(p, q.steps[n], b))
        states[str(b)] = {k: v.cpu() for k, v in frozen.state_dict().items()}
    for r in rows:
        r["wall_s"] = round(time.perf_counter() - t0, 2)
    return rows, {"task": task, "size": size, "vocab": data.vocab, "states": states}


def measure_real_tasks(study: RealTaskStudy, device: str = "auto",
                       cache: ResultsCache | None = None, root: Path | None = None,
                       progress: bool = True) -> pd.DataFrame:
    """Every net's rows, computing the ones not cached (one cache entry per net)."""
    cache = cache or ResultsCache()
    dev = resolve_device(device)
    datasets: dict[str, TaskData] = {}
    rows: list[dict[str, Any]] = []
    units = study.units()
    bar = progress_bar(total=len(units), desc="real-task nets", disable=not progress)
    for task, size in units:
        if task not in datasets:
            datasets[task] = (lm_data(root, study.online, max_tokens=study.max_tokens)
                              if task == "lm" else
                              image_data("mnist" if task == "mnist" else "cifar", root,
                                         study.online, study.max_train, study.max_test,
                                         study.seed))
        data = datasets[task]
        config = {"study": {k: v for k, v in asdict(study).items()
                            if k not in ("profile", "mnist_widths", "cifar_sizes",
                                         "resnet_depths", "lm_units")},
                  "task": task, "size": size, "data": data.source}
        path = cache.root / "nets" / f"{config_key(EXPERIMENT, config)}.pt"

        def compute(task=task, size=size, data=data, path=path) -> dict[str, Any]:
            out, states = run_unit(study, task, size, data, dev)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            torch.save(states, tmp)
            os.replace(tmp, path)
            return {"profile": study.profile, "rows": out}

        record, _ = cache.compute(EXPERIMENT, config, compute, describe(dev))
        rows += [{**r, "key": record["key"]} for r in record["result"]["rows"]]
        bar.update(1)
    bar.close()
    return pd.DataFrame(rows)


def load_states(key: str, cache: ResultsCache | None = None) -> dict[str, Any]:
    path = (cache or ResultsCache()).root / "nets" / f"{key}.pt"
    if not path.exists():
        raise validate.ConfigError(f"no saved nets for {key}: build the real-tasks chapter")
    return torch.load(path, weights_only=True)


def rebuild(saved: dict[str, Any], which: str) -> nn.Module:
    """The float net (``which='float'``) or its quantized weights at a width ('8', '2', ...)."""
    model = build_model(saved["task"], saved["size"], saved["vocab"])
    model.load_state_dict(saved["states"][which])
    return model.eval()


def by_bits(rows: pd.DataFrame, metric: str) -> pd.DataFrame:
    """``metric`` per (task, model, split) and width, retrained rows, float as 'float'."""
    keep = rows[rows.bits.isna() | rows.retrained]
    t = keep.assign(width=keep.bits.map(lambda b: "float" if b != b else str(int(b))))
    return t.pivot_table(index=["task", "model", "params", "split"], columns="width",
                         values=metric, aggfunc="first", sort=False)


def robustness(rows: pd.DataFrame, metric: str = "accuracy", tolerance: float = 0.01,
               sets: Sequence[str] = ("train", "test")) -> pd.DataFrame:
    """Fewest bits whose metric stays within ``tolerance`` (relative) of float, per net and
    split, for every width at and above it."""
    out = []
    keep = rows[rows.bits.isna() | rows.retrained]
    for (task, model, split), g in keep.groupby(["task", "model", "split"], sort=False):
        if split not in sets:
            continue
        f = g[g.bits.isna()][metric].iloc[0]
        q = g[g.bits.notna()].sort_values("bits", ascending=False)
        higher_better = metric == "accuracy"
        ok = (q[metric] >= f * (1 - tolerance)) if higher_better else \
            (q[metric] <= f * (1 + tolerance))
        ok = ok.cummin()
        out.append({"task": task, "model": model, "params": g.params.iloc[0], "split": split,
                    "float": f, "fewest_bits": int(q.bits[ok].min()) if ok.any() else None})
    return pd.DataFrame(out)


def trained(profile: str | None, cache: ResultsCache | None = None) -> pd.DataFrame:
    """The newest real-task record per net under ``profile``: task, size, model, key, and
    the settings that rebuild its data."""
    out = {}
    for r in (cache or ResultsCache()).records(EXPERIMENT):
        if profile is None or r["result"].get("profile") == profile:
            c = r["config"]
            out[(c["task"], str(c["size"]))] = {
                "task": c["task"], "size": c["size"], "model": model_name(c["task"], c["size"]),
                "key": r["key"], "study": c["study"], "data": c["data"]}
    return pd.DataFrame(list(out.values()))


def task_data(task: str, settings: dict[str, Any], root: Path | None = None) -> TaskData:
    """The data a net was trained and tested on, rebuilt from its study settings."""
    if task == "lm":
        return lm_data(root, settings.get("online", False), max_tokens=settings.get("max_tokens"))
    return image_data("mnist" if task == "mnist" else "cifar", root, settings.get("online", False),
                      settings.get("max_train"), settings.get("max_test"), settings.get("seed", 0))


SURFACE_EXPERIMENT = "loss-surfaces"


def measure_surfaces(profile: str, nets: Sequence[tuple[str, Any]], widths: Sequence[str],
                     config: SurfaceConfig, samples: int, cache: ResultsCache | None = None,
                     root: Path | None = None, progress: bool = True,
                     device: str = "cpu") -> pd.DataFrame:
    """Loss and accuracy surfaces of the real-task nets (float and quantized), on up to
    ``samples`` training and test items (tokens for the LMs), one cache entry per net and
    width."""
    cache = cache or ResultsCache()
    dev = resolve_device(device)
    have = trained(profile, cache)
    validate.integer("samples", samples, lo=1)
    parts = []
    todo = []
    for task, size in nets:
        row = have[(have.task == task) & (have["size"].astype(str) == str(size))] \
            if len(have) else have
        if not len(row):
            raise validate.ConfigError(f"no trained {task} net of size {size} under profile "
                                       f"{profile!r}: build the real-tasks chapter first")
        todo.append(row.iloc[0])
    bar = progress_bar(total=len(todo) * len(widths), desc="surfaces", disable=not progress)
    datasets: dict[str, TaskData] = {}
    for r in todo:
        saved = load_states(r.key, cache)
        if r.task not in datasets:
            datasets[r.task] = task_data(r.task, r.study, root)
        data = datasets[r.task]
        for w in widths:
            if w not in saved["states"]:
                raise validate.ConfigError(f"width {w!r} was not measured for {r.model}; "
                                           f"measured: {', '.join(saved['states'])}")
            cfg = {"net": r.key, "width": w, "surface": asdict(config), "samples": samples}

            def compute(r=r, w=w, saved=saved, data=data) -> dict[str, Any]:
                net = rebuild(saved, w).to(dev)
                evs = {}
                for split, d in (("train", data.train), ("test", data.test)):
                    if r.task == "lm":
                        evs[split] = lm_evaluator(d[:max(2, samples // d.shape[1])].to(dev))
                    else:
                        evs[split] = classification_evaluator(d[0][:samples].to(dev),
                                                              d[1][:samples].to(dev))
                label = "float" if w == "float" else f"{w} bits"
                df = pd.concat([loss_surface(net, ev, config).assign(
                    task=r.task, model=r.model, width=label, split=s)
                    for s, ev in evs.items()], ignore_index=True)
                return {"profile": profile, "rows": df.to_dict("records")}

            rec, _ = cache.compute(SURFACE_EXPERIMENT, cfg, compute, describe(dev))
            parts.append(pd.DataFrame(rec["result"]["rows"]))
            bar.update(1)
    bar.close()
    return pd.concat(parts, ignore_index=True)
