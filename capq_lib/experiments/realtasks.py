"""Quantization on real tasks (Sec. 5.2): train nets on real data, then lower the precision of
their weights step by step (retraining briefly after each step, as for memorization) and
measure training and test performance at every width.

Every net trains on a training split and is tested on the matching test split: MNIST's, or
PTB's training and test splits. What a net saw (which split, how many images or tokens, how
many epochs) is in ``TaskData.source`` and in every row, and the page states it from there.
Offline, a missing split or dataset is replaced and the source says by what: MNIST test
images split in two when the MNIST training set is missing, the PTB validation split as
training text when PTB's training split is, and MNIST digits padded to 32x32x3 for a missing
CIFAR-10.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn
from torch.func import functional_call

from capq_lib.core import validate
from capq_lib.core.devices import describe, resolve_device
from capq_lib.core.progress import bar as progress_bar
from capq_lib.engine.population import retain_freed_memory
from capq_lib.engine.quantize import (
    QuantConfig,
    bake,
    check_bits,
    prepare,
    quantized_names,
    view,
)
from capq_lib.engine.surface import (
    SurfaceConfig,
    classification_evaluator,
    lm_evaluator,
    loss_surface,
)
from capq_lib.experiments import records
from capq_lib.experiments.results import ResultsCache
from capq_lib.nets import realdata
from capq_lib.nets.models import count_parameters
from capq_lib.nets.taskmodels import CIFARCNN, MNISTFCDNN, CIFARResNet, WordLM, WordTransformerLM

TASKS = ("mnist", "cifar", "resnet", "lm", "tlm")
#: the language-model tasks (PTB, next word): LSTM LMs and, beyond the paper, transformers
LM_TASKS = ("lm", "tlm")
#: the CIFAR CNNs by size (nets/taskmodels.py)
CIFAR_SIZES = ("tiny", "small", "large")
EXPERIMENT = "real-tasks"
#: what one item of a task's data is
UNIT = {"mnist": "images", "cifar": "images", "resnet": "images", "lm": "tokens",
        "tlm": "tokens"}
#: token columns of a PTB batch and steps of backpropagation through time: the usual
#: word-level LM setup
LM_COLUMNS, BPTT = 20, 35


@dataclass
class TaskData:
    """A task's training and test data, the part of the training data on which training
    performance is measured (as many items as the test data, so both splits are measured
    with the same precision), and a sentence saying where they come from."""

    train: Any  # (images, labels), or token columns (T, B) for a language model
    test: Any
    source: str
    vocab: int = 0
    train_eval: Any = None
    #: a language model's baseline: test perplexity of the training tokens' word frequencies
    unigram_perplexity: float | None = None
    #: held out of the training data: what the retraining rate is chosen on (never the test)
    val: Any = None

    def __post_init__(self) -> None:
        if self.train_eval is None:
            n = min(count(self.train), count(self.test))
            self.train_eval = (self.train[:n // self.train.shape[1]] if self.vocab else
                               (self.train[0][:n], self.train[1][:n]))

    def sizes(self) -> dict[str, int]:
        """Items (images or tokens) trained on, tested on, measured on for 'train', and
        held out for validation."""
        return {"train_items": count(self.train), "test_items": count(self.test),
                "train_eval_items": count(self.train_eval),
                "val_items": count(self.val) if self.val is not None else 0}


def hold_out(data: TaskData, fraction: float, unit: str) -> TaskData:
    """Carve the last ``fraction`` of the training items off as a validation split: the
    nets never train on it, and hyperparameters (the retraining rate) are chosen on it, so
    the test split decides nothing before it is measured."""
    if not fraction:
        return data
    if data.vocab:
        rows = data.train.shape[0]
        keep = rows - max(2, round(fraction * rows))
        data.train, data.val = data.train[:keep], data.train[keep:]
    else:
        n = len(data.train[0])
        keep = n - max(1, round(fraction * n))
        data.val = (data.train[0][keep:], data.train[1][keep:])
        data.train = (data.train[0][:keep], data.train[1][:keep])
    data.train_eval = None
    data.__post_init__()
    data.source += (f"; the last {fraction:.0%} of the training {unit} "
                    f"({count(data.val):,}) held out as a validation split, on which the "
                    f"retraining learning rate is chosen (the test split chooses nothing)")
    return data


def count(data: Any) -> int:
    """Images in (x, y), or tokens in token columns (T, B)."""
    return len(data[0]) if isinstance(data, tuple) else int(data.numel())


def cap_for(cap: int | dict[str, int] | None, task: str) -> int | None:
    """A study's cap on the items of ``task``: one number for every task, or one per task."""
    return cap.get(task) if isinstance(cap, dict) else cap


def _split(x: torch.Tensor, y: torch.Tensor, n_test: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(x), generator=g)
    test, train = perm[:n_test], perm[n_test:]
    return (x[train], y[train]), (x[test], y[test])


def _first(xy: tuple[torch.Tensor, torch.Tensor], n: int | None):
    return xy if not n else (xy[0][:n], xy[1][:n])


def _counted(what: str, used: int, total: int, unit: str) -> str:
    return (f"{what}, all {total:,} {unit}" if used == total
            else f"{what}, first {used:,} of its {total:,} {unit}")


def image_data(kind: str, root: Path | None, online: bool, max_train: int | None,
               max_test: int | None, seed: int = 0, val_fraction: float = 0.0) -> TaskData:
    """MNIST (28x28x1) or CIFAR-10 (32x32x3) training and test images, or what stands in
    offline; the first ``max_train`` / ``max_test`` of each. Pixels are standardized with
    the mean and spread of the training images used (per channel)."""
    validate.choice("kind", kind, ("mnist", "cifar"))
    train = test = None
    names = ("training set", "test set")
    note = ""
    if kind == "cifar" and (realdata.available("cifar10/cifar-10-batches-py", root)
                            or realdata.available("cifar10/cifar-10-python.tar.gz", root)
                            or online):
        try:
            train, test = realdata.cifar10("train", root, online), realdata.cifar10("test", root,
                                                                                     online)
            names = ("CIFAR-10 training set", "CIFAR-10 test set")
        except realdata.Missing:
            if not realdata.available("mnist/t10k-images-idx3-ubyte.gz", root):
                raise
    if train is None:
        try:
            if not (realdata.available("mnist/train-images-idx3-ubyte.gz", root) or online):
                raise realdata.Missing("no MNIST training split")
            train, test = realdata.mnist("train", root, online), realdata.mnist("test", root,
                                                                                 online)
            names = ("MNIST training set", "MNIST test set")
        except realdata.Missing:
            x, y = realdata.mnist("test", root, online=False)
            train, test = _split(x, y, min(2000, len(x) // 5), seed)
            names = ("training part", "test part")
            note = (f"The MNIST training split is not available here: the {len(x):,} MNIST test "
                    f"images are split at random into {len(train[0]):,} for training and "
                    f"{len(test[0]):,} for testing. ")
        if kind == "cifar":
            note = ("CIFAR-10 is not available here; stand-in: MNIST digits padded to 32x32 "
                    "and repeated over 3 channels. " + note)
    totals = len(train[0]), len(test[0])
    train, test = _first(train, max_train), _first(test, max_test)
    if kind == "cifar" and train[0].shape[1] == 1:
        train, test = _as_cifar(train), _as_cifar(test)
    mean = train[0].mean((0, 2, 3), keepdim=True)
    spread = train[0].std((0, 2, 3), keepdim=True).clamp(min=1e-6)
    train = ((train[0] - mean) / spread, train[1])
    test = ((test[0] - mean) / spread, test[1])
    source = (note + "Trained on the " + _counted(names[0], len(train[0]), totals[0], "images")
              + "; tested on the " + _counted(names[1], len(test[0]), totals[1], "images"))
    data = hold_out(TaskData(train, test, source), val_fraction, "images")
    return _say_train_eval(data, "images")


def _say_train_eval(data: TaskData, unit: str) -> TaskData:
    n, total = count(data.train_eval), count(data.train)
    if n < total:
        data.source += (f"; training performance measured on the first {n:,} of the "
                        f"{total:,} training {unit}")
    return data


def _as_cifar(xy):
    x, y = xy
    return nn.functional.pad(x, (2, 2, 2, 2)).repeat(1, 3, 1, 1), y


def unigram_perplexity(train_ids: torch.Tensor, targets: torch.Tensor, vocab: int) -> float:
    """Perplexity of ``targets`` under the word frequencies of ``train_ids`` (add-one smoothed
    over the ``vocab`` words, so a word the training text lacks costs a finite amount): what
    an LM that ignores all context gets, the bar a useful LM must clear by far."""
    validate.integer("vocab", vocab, lo=1)
    counts = torch.bincount(train_ids.flatten(), minlength=vocab).double() + 1.0
    logp = counts.log() - counts.sum().log()
    return math.exp(-float(logp[targets.flatten()].mean()))


def lm_data(root: Path | None, online: bool, batch: int = LM_COLUMNS, max_train: int | None = None,
            max_test: int | None = None, val_fraction: float = 0.0) -> TaskData:
    """PTB word-level: train on the training split when present, else on the validation
    split; test on the test split; the first ``max_train`` / ``max_test`` tokens of each.
    The vocabulary comes from the whole splits used, so capping changes no word's id."""
    try:
        train_words = realdata.ptb_tokens("train", root, online)
        names = ("PTB training split", "PTB test split")
    except realdata.Missing:
        train_words = realdata.ptb_tokens("valid", root, online=False)
        names = ("PTB validation split (the training split is not available here)",
                 "PTB test split")
    test_words = realdata.ptb_tokens("test", root, online=online and "validation" not in names[0])
    vocab = realdata.Vocabulary(train_words, test_words)
    totals = len(train_words), len(test_words)
    train_words, test_words = train_words[:max_train or None], test_words[:max_test or None]
    train = realdata.batchify(vocab.encode(train_words), batch)
    test = realdata.batchify(vocab.encode(test_words), batch)
    source = ("Trained on the " + _counted(names[0], count(train), totals[0], "tokens")
              + "; tested on the " + _counted(names[1], count(test), totals[1], "tokens")
              + f"; vocabulary of {len(vocab):,} words from both whole splits; batches of "
              f"{batch} contiguous token columns")
    data = hold_out(TaskData(train, test, source, len(vocab)), val_fraction, "tokens")
    # the tokens the LM predicts: every row but the first of each column
    data.unigram_perplexity = unigram_perplexity(data.train, test[1:], len(vocab))
    return _say_train_eval(data, "tokens")


def build_model(task: str, size: Any, vocab: int = 0, seed: int = 0) -> nn.Module:
    validate.choice("task", task, TASKS)
    torch.manual_seed(seed)
    if task == "mnist":
        return MNISTFCDNN(int(size))
    if task == "cifar":
        return CIFARCNN(str(size))
    if task == "resnet":
        return CIFARResNet(int(size))
    if task == "tlm":
        return WordTransformerLM(vocab, int(size), BPTT)
    return WordLM(vocab, int(size))


def model_name(task: str, size: Any) -> str:
    return {"mnist": f"2x{size}", "cifar": str(size), "resnet": f"ResNet-{size}",
            "lm": f"2x{size} LSTM", "tlm": f"2x{size} transformer"}[task]


def channels_last(task: str) -> bool:
    """Conv nets run channels-last: on one CPU core it trained the CIFAR CNNs 1.3-1.7x and
    evaluated them 1.9x faster than the default layout (ResNet-8 1.1x and 1.3x)."""
    return task in ("cifar", "resnet")


def _layout(task: str, x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if channels_last(task) else x


class Quantized:
    """Run a module with some weights fake-quantized (steps fixed), float shadows learning."""

    def __init__(self, model: nn.Module, config: QuantConfig | None) -> None:
        self.model = model
        params = dict(model.named_parameters())
        # every weight matrix but the read-out: a transformer LM's embeddings too, as the
        # LSTM LMs' (quantized_names keeps a memorizing transformer's embeddings in float)
        names = quantized_names(model, deployed=True)
        names = [n for n in names if not n.startswith("output.")]
        self.prepared = None if config is None else prepare(params, names, config)

    def __call__(self, *args, **kw):
        params = {n: view(n, p, self.prepared) for n, p in self.model.named_parameters()}
        return functional_call(self.model, {**params, **dict(self.model.named_buffers())},
                               args, kw)


def _steps(epochs: float, per_epoch: int) -> int:
    """Optimizer steps in ``epochs`` passes of ``per_epoch`` steps (a fraction of a pass:
    its first steps)."""
    return max(1, math.ceil(epochs * per_epoch)) if epochs > 0 else 0


#: share of a training run spent warming the learning rate up from zero
WARMUP = 0.1


def _cosine(opt: torch.optim.Optimizer, lr: float, step: int, total: int, decay: bool) -> None:
    """A linear warm-up over the first tenth of the steps, then cosine decay to zero: a
    short run ends at a lower loss than at a constant rate, and the warm-up keeps the plain
    CNNs (no normalization layers) from dying at the start, as they did at rates above
    0.003 without it. Retraining keeps its (already small) rate constant."""
    warm = max(1, round(WARMUP * total))
    rate = (lr * min(1.0, (step + 1) / warm) * 0.5 * (1 + math.cos(math.pi * step / total))
            if decay else lr)
    for group in opt.param_groups:
        group["lr"] = rate


def _batches(n: int, batch: int, steps: int, g: torch.Generator) -> Iterator[torch.Tensor]:
    done = 0
    while done < steps:
        for idx in torch.randperm(n, generator=g).split(batch):
            if done == steps:
                return
            yield idx
            done += 1


def train_classifier(model: nn.Module, data: tuple, epochs: float, lr: float, batch: int,
                     config: QuantConfig | None = None, seed: int = 0,
                     decay: bool = True) -> None:
    """Adam on cross-entropy for ``epochs`` passes (fractions allowed); with ``config`` the
    forward pass runs on quantized weights; ``decay``: cosine learning-rate decay."""
    x, y = data
    run = Quantized(model, config)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    total = _steps(epochs, math.ceil(len(x) / batch))
    model.train()
    for step, idx in enumerate(_batches(len(x), batch, total, g)):
        _cosine(opt, lr, step, total, decay)
        loss = nn.functional.cross_entropy(run(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


def train_lm(model: nn.Module, data: torch.Tensor, epochs: float, lr: float, bptt: int = BPTT,
             config: QuantConfig | None = None, decay: bool = True, first: int = 0) -> None:
    """Adam with truncated backpropagation through time and gradient clipping, for
    ``epochs`` passes over the text (fractions allowed) from its segment ``first`` on,
    wrapping around: a short retraining then revisits some stretch of the text, not always
    its beginning (where the training perplexity is measured)."""
    run = Quantized(model, config)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    starts = list(range(0, data.shape[0] - 1, bptt))
    total = _steps(epochs, len(starts))
    model.train()
    state = None
    for step in range(total):
        i = starts[(first + step) % len(starts)]
        if i == 0:
            state = None
        _cosine(opt, lr, step, total, decay)
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
    ev = lm_evaluator(data) if task in LM_TASKS else classification_evaluator(*data)
    with torch.no_grad():
        total, correct, count_ = ev(run)
    out = {"loss": float(total) / count_, "accuracy": float(correct) / count_}
    if task in LM_TASKS:
        out["perplexity"] = math.exp(min(out["loss"], 50.0))
    return out


Cap = int | dict[str, int] | None
#: per-task settings a study takes unless told otherwise (a study may set some tasks only)
DEFAULTS: dict[str, dict[str, float]] = {
    "epochs": {"mnist": 10, "cifar": 4, "resnet": 2, "lm": 3, "tlm": 3},
    "retrain_epochs": {"mnist": 1, "cifar": 1, "resnet": 1, "lm": 1, "tlm": 1},
    "lr": {"mnist": 0.002, "cifar": 0.001, "resnet": 0.002, "lm": 0.003, "tlm": 0.001}}


@dataclass(frozen=True)
class RealTaskStudy:
    """Which nets, what they train on and how long, and the widths they are quantized to.

    ``epochs`` and ``retrain_epochs`` (after each quantization step) are passes over the
    training data, fractions allowed; ``max_train`` / ``max_test`` cap the items (images,
    tokens for the LMs) of every task, or of each task when given per task. ``direct``
    also measures every width quantized straight from the float net, without retraining."""

    profile: str = "custom"
    mnist_widths: tuple[int, ...] = (8, 16, 32)
    cifar_sizes: tuple[str, ...] = ("tiny", "small")
    resnet_depths: tuple[int, ...] = (20,)
    lm_units: tuple[int, ...] = (16, 32)
    #: beyond the paper: word-level transformer LMs (two blocks of this width), beside the
    #: LSTM LMs on the same PTB data
    tlm_units: tuple[int, ...] = ()
    bits: tuple[int, ...] = (8, 6, 5, 4, 3, 2)
    epochs: dict[str, float] = field(default_factory=lambda: dict(DEFAULTS["epochs"]))
    retrain_epochs: dict[str, float] = field(
        default_factory=lambda: dict(DEFAULTS["retrain_epochs"]))
    lr: dict[str, float] = field(default_factory=lambda: dict(DEFAULTS["lr"]))
    #: retraining runs at one of these fractions of lr, the one that does best on the
    #: validation split after each step down (one value: no choice to make)
    retrain_lr_factors: tuple[float, ...] = (0.1,)
    #: share of the training items held out as that validation split
    val_fraction: float = 0.1
    #: nets per task and size, each with its own initialization and batch order
    seeds: int = 3
    #: images per step (one number for every image task, or one per task); for the LMs,
    #: the number of contiguous token columns, 20 unless set per task
    batch_size: int | dict[str, int] = 128
    max_train: Cap = None
    max_test: Cap = None
    direct: bool = True
    step_rule: str = "l2"
    online: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        validate.lists_to_tuples(self)
        for name, default in DEFAULTS.items():  # a task left out keeps its default
            given = getattr(self, name)
            if not isinstance(given, dict):
                raise validate.ConfigError(f"{name} must map tasks to values, got {given!r}")
            for t in given:
                validate.choice(f"{name} task", t, TASKS)
            object.__setattr__(self, name, {**default, **given})
        for w in self.mnist_widths:
            validate.integer("mnist_widths", w, lo=1, hi=65536)
        for s in self.cifar_sizes:
            validate.choice("cifar_sizes", s, CIFAR_SIZES)
        for d in self.resnet_depths:
            validate.integer("resnet_depths", d, lo=8, hi=1202)
            if (d - 2) % 6:
                raise validate.ConfigError(f"resnet_depths must be 6n+2 (20, 32, ...), got {d}")
        for u in self.lm_units:
            validate.integer("lm_units", u, lo=1, hi=8192)
        for u in self.tlm_units:
            validate.integer("tlm_units", u, lo=2, hi=8192)
            if u % max(1, u // 16):
                raise validate.ConfigError(f"tlm_units must be divisible by its heads "
                                           f"(units // 16); got {u}")
        for b in validate.non_empty("bits", self.bits):
            check_bits(b)
        if list(self.bits) != sorted(self.bits, reverse=True):
            raise validate.ConfigError(f"bits must go from more to fewer, got {list(self.bits)}")
        for t in TASKS:
            validate.number(f"epochs[{t!r}]", self.epochs.get(t, 1), lo=0.0, hi=100000.0,
                            lo_open=True)
            validate.number(f"retrain_epochs[{t!r}]", self.retrain_epochs.get(t, 0), lo=0.0,
                            hi=100000.0)
            validate.number(f"lr[{t!r}]", self.lr.get(t, 0.001), lo=0.0, hi=10.0, lo_open=True)
        for name in ("max_train", "max_test"):
            cap = getattr(self, name)
            if isinstance(cap, dict):
                for t, v in cap.items():
                    validate.choice(f"{name} task", t, TASKS)
                    if v is not None:
                        validate.integer(f"{name}[{t!r}]", v, lo=1)
            elif cap is not None:
                validate.integer(name, cap, lo=1)
        for t in TASKS:
            validate.integer(f"batch_size[{t!r}]", self.batch(t), lo=1, hi=1 << 20)
        for f in validate.non_empty("retrain_lr_factors", self.retrain_lr_factors):
            validate.number("retrain_lr_factors", f, lo=0.0, hi=10.0, lo_open=True)
        validate.number("val_fraction", self.val_fraction, lo=0.0, hi=0.5)
        validate.integer("seeds", self.seeds, lo=1, hi=100)
        validate.choice("step_rule", self.step_rule, ("l2", "max"))
        for name in ("direct", "online"):
            if not isinstance(getattr(self, name), bool):
                raise validate.ConfigError(f"{name} must be true or false, got "
                                           f"{getattr(self, name)!r}")
        validate.integer("seed", self.seed, lo=0)

    @classmethod
    def from_namespace(cls, namespace: dict[str, Any]) -> RealTaskStudy:
        return cls(**{f.name: namespace[f.name] for f in fields(cls) if f.name in namespace})

    def units(self) -> list[tuple[str, Any]]:
        return ([("mnist", w) for w in self.mnist_widths] +
                [("cifar", s) for s in self.cifar_sizes] +
                [("resnet", d) for d in self.resnet_depths] +
                [("lm", u) for u in self.lm_units] +
                [("tlm", u) for u in self.tlm_units])

    def seed_list(self) -> list[int]:
        """The seeds of every net: ``seed``, ``seed + 1``, ..."""
        return [self.seed + k for k in range(self.seeds)]

    def batch(self, task: str) -> int:
        """Images per step, or token columns for the LMs."""
        if isinstance(self.batch_size, dict):
            return self.batch_size.get(task, LM_COLUMNS if task in LM_TASKS else 128)
        return LM_COLUMNS if task in LM_TASKS else self.batch_size

    def settings(self, task: str, seed: int | None = None) -> dict[str, Any]:
        """What one net of ``task`` depends on: its data, training and quantization settings
        and its seed (a net's cache key, so that changing another task's settings keeps
        it). The data split does not depend on the net's seed: every seed sees the same
        training, validation and test items."""
        return {"epochs": self.epochs.get(task, 1), "retrain_epochs":
                self.retrain_epochs.get(task, 0), "lr": self.lr.get(task, 0.001),
                "retrain_lr_factors": list(self.retrain_lr_factors),
                "val_fraction": self.val_fraction, "batch_size": self.batch(task),
                "max_train": cap_for(self.max_train, task),
                "max_test": cap_for(self.max_test, task), "bits": list(self.bits),
                "direct": self.direct, "step_rule": self.step_rule, "online": self.online,
                "data_seed": self.seed, "seed": self.seed if seed is None else seed}


def task_data(task: str, settings: dict[str, Any], root: Path | None = None) -> TaskData:
    """The data a net of ``task`` trains and is tested on, from its ``settings``."""
    validate.choice("task", task, TASKS)
    online = settings.get("online", False)
    val = settings.get("val_fraction", 0.0)
    if task in LM_TASKS:
        return lm_data(root, online, settings.get("batch_size", LM_COLUMNS),
                       max_train=settings.get("max_train"), max_test=settings.get("max_test"),
                       val_fraction=val)
    return image_data("mnist" if task == "mnist" else "cifar", root, online,
                      settings.get("max_train"), settings.get("max_test"),
                      settings.get("data_seed", settings.get("seed", 0)), val)


def start_as_unigram(model: WordLM, train: torch.Tensor, vocab: int) -> None:
    """Set the read-out bias to the log word frequencies of the training tokens (add-one
    smoothed), so an LM starts as the unigram model of its text and its first steps go to
    context: on 150,000 PTB tokens a 2x16 LM then reached test perplexity 512 in one epoch
    against 698 from the default start (Adam, lr 0.01)."""
    counts = torch.bincount(train.flatten().cpu(), minlength=vocab).float() + 1.0
    with torch.no_grad():
        model.output.bias.copy_((counts / counts.sum()).log().to(model.output.bias.device))


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def train_task_net(study: RealTaskStudy, task: str, size: Any, data: TaskData,
                   device: torch.device, seed: int | None = None
                   ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Train one net (``seed``: its initialization and batch order), quantize it
    progressively down ``study.bits`` with retraining, and measure it on its test data and
    on as much of its training data at every width; the rows, and the float and quantized
    weights (for the loss-surface chapter). After each step down, the retraining runs at
    each of ``retrain_lr_factors`` x lr from the same start, and the one that does best on
    the validation split goes on (the test split is measured, never consulted)."""
    seed = study.seed if seed is None else seed
    model = build_model(task, size, data.vocab, seed).to(device)
    if channels_last(task):
        model = model.to(memory_format=torch.channels_last)
    s = study.settings(task, seed)
    ep, lr, re = s["epochs"], s["lr"], s["retrain_epochs"]

    def put(d: Any) -> Any:
        return d.to(device) if task in LM_TASKS else (_layout(task, d[0].to(device)),
                                                   d[1].to(device))

    train_set = put(data.train)
    sets = {"train": put(data.train_eval), "test": put(data.test)}
    val = put(data.val) if data.val is not None else None
    metric = _metric(task)

    g = torch.Generator().manual_seed(seed)

    def train(m: nn.Module, epochs: float, rate: float, cfg: QuantConfig | None) -> None:
        if task in LM_TASKS:  # retraining starts at a random segment
            first = 0 if cfg is None else int(torch.randint(train_set.shape[0], (1,),
                                                            generator=g)) // BPTT
            train_lm(m, train_set, epochs, rate, config=cfg, decay=cfg is None, first=first)
        else:
            train_classifier(m, train_set, epochs, rate, s["batch_size"], cfg, seed,
                             decay=cfg is None)

    def measure(m: nn.Module, cfg: QuantConfig | None) -> dict[str, dict[str, float]]:
        run = Quantized(m, cfg)
        return {k: evaluate(task, run, v) for k, v in sets.items()}

    def score(m: nn.Module, cfg: QuantConfig) -> float:
        """Higher is better, on the validation split."""
        r = evaluate(task, Quantized(m, cfg), val)
        return -r["perplexity"] if metric == "perplexity" else r["accuracy"]

    t0 = time.perf_counter()
    if task in LM_TASKS:
        start_as_unigram(model, data.train, data.vocab)
    train(model, ep, lr, None)
    base = {"task": task, "model": model_name(task, size), "size": size, "seed": seed,
            "params": count_parameters(model), "data": data.source, "profile": study.profile,
            "unit": UNIT[task], **data.sizes(), "epochs": ep, "retrain_epochs": re, "lr": lr,
            "batch_size": s["batch_size"], "unigram_perplexity": data.unigram_perplexity}
    rows, states = [], {"float": _snapshot(model)}

    def add(res: dict[str, dict[str, float]], bits: int | None, retrained: bool,
            factor: float | None = None) -> None:
        for split, r in res.items():
            rows.append({**base, "bits": bits, "retrained": retrained, "split": split,
                         "retrain_lr_factor": factor,
                         "retrain_lr": None if factor is None else lr * factor, **r})

    add(measure(model, None), None, False)
    shadow = copy.deepcopy(model)
    factors = list(study.retrain_lr_factors)
    for b in study.bits:
        cfg = QuantConfig(b, study.step_rule)
        if study.direct:
            add(measure(model, cfg), b, False)  # straight from the float net
        chosen = factors[0]
        if re:
            tries = []
            for f in factors:
                m = shadow if len(factors) == 1 else copy.deepcopy(shadow)
                train(m, re, lr * f, cfg)
                tries.append((score(m, cfg) if len(factors) > 1 and val is not None else 0.0,
                              -factors.index(f), f, m))
            _, _, chosen, shadow = max(tries, key=lambda t: t[:2])
        q = Quantized(shadow, cfg)
        add(measure(shadow, cfg), b, bool(re), chosen if re else None)
        frozen = copy.deepcopy(shadow)
        bake(dict(frozen.named_parameters()), q.prepared)
        states[str(b)] = _snapshot(frozen)
    for r in rows:
        r["wall_s"] = round(time.perf_counter() - t0, 2)
    return rows, {"task": task, "size": size, "seed": seed, "vocab": data.vocab,
                  "states": states}


def measure_real_tasks(study: RealTaskStudy, device: str = "auto",
                       cache: ResultsCache | None = None, root: Path | None = None,
                       progress: bool = True) -> pd.DataFrame:
    """Every net's rows, computing the ones not cached (one cache entry per net)."""
    retain_freed_memory()  # else an LM step spent 35 % of its time remapping its 28 MB logits
    cache = cache or ResultsCache()
    dev = resolve_device(device)
    datasets: dict[tuple, TaskData] = {}
    rows: list[dict[str, Any]] = []
    units = [(task, size, seed) for task, size in study.units() for seed in study.seed_list()]
    bar = progress_bar(total=len(units), desc="real-task nets", disable=not progress)
    for task, size, seed in units:
        settings = study.settings(task, seed)
        which = ("lm" if task in LM_TASKS else "mnist" if task == "mnist" else "cifar",
                 settings["max_train"], settings["max_test"])
        if which not in datasets:
            datasets[which] = task_data(task, settings, root)
        data = datasets[which]
        config = {"study": settings, "task": task, "size": size, "data": data.source}

        def compute(task=task, size=size, data=data, seed=seed
                    ) -> tuple[dict[str, Any], Any]:
            out, states = train_task_net(study, task, size, data, dev, seed)
            return {"profile": study.profile, "rows": out}, states

        # the net is part of its record: a lost .pt makes the record a miss, so it is
        # trained (and saved) again instead of orphaning the loss-surface chapter
        record, _ = cache.compute(EXPERIMENT, config, compute, describe(dev), artifact=True,
                                  label=study.profile)
        rows += [{**r, "profile": study.profile, "key": record["key"]}
                 for r in record["result"]["rows"]]
        bar.update(1)
    bar.close()
    return pd.DataFrame(rows)


def seed_means(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per net, width and split: the metrics averaged over the seeds (with their
    standard deviations as ``*_sd``), what the page's figures and tables show. The
    verdicts use the seeds themselves."""
    if rows.empty or "seed" not in rows:
        return rows
    keys = ["task", "model", "bits", "retrained", "split"]
    metrics = [m for m in ("accuracy", "loss", "perplexity") if m in rows]
    g = rows.groupby(keys, dropna=False, sort=False)
    first = g.first().drop(columns=metrics + ["seed"], errors="ignore")
    means = g[metrics].mean()
    sds = g[metrics].std().add_suffix("_sd")
    out = first.join(means).join(sds).reset_index()
    out["seeds"] = g.size().values
    return out


def load_states(key: str, cache: ResultsCache | None = None) -> dict[str, Any]:
    try:
        return (cache or ResultsCache()).load_artifact(
            EXPERIMENT, key, "build the real-tasks chapter again (it retrains the lost net)")
    except (FileNotFoundError, ValueError) as err:
        raise validate.ConfigError(str(err)) from None


def rebuild(saved: dict[str, Any], which: str) -> nn.Module:
    """The float net (``which='float'``) or its quantized weights at a width ('8', '2', ...)."""
    model = build_model(saved["task"], saved["size"], saved["vocab"], saved.get("seed", 0))
    model.load_state_dict(saved["states"][which])
    return model.eval()


def by_bits(rows: pd.DataFrame, metric: str) -> pd.DataFrame:
    """``metric`` per (task, model, split) and width (mean over seeds), retrained rows,
    float as 'float'."""
    rows = seed_means(rows)
    keep = rows[rows.bits.isna() | rows.retrained]
    t = keep.assign(width=keep.bits.map(lambda b: "float" if b != b else str(int(b))))
    return t.pivot_table(index=["task", "model", "params", "split"], columns="width",
                         values=metric, aggfunc="first", sort=False)


def robustness(rows: pd.DataFrame, metric: str = "accuracy", tolerance: float = 0.01,
               sets: Sequence[str] = ("train", "test")) -> pd.DataFrame:
    """Fewest bits whose metric stays within ``tolerance`` (relative) of float, per net and
    split, for every width at and above it."""
    out = []
    rows = seed_means(rows)
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


#: how the page names each task's nets (on the real data; see ``stand_in_name``)
FAMILY = {"mnist": "MNIST FCDNNs", "cifar": "CIFAR-10 CNNs", "resnet": "CIFAR-style ResNets",
          "lm": "PTB word-level LMs", "tlm": "PTB word-level transformer LMs"}
#: ... and on what stands in when CIFAR-10 is missing
STAND_IN_FAMILY = {"cifar": "CIFAR-10 CNNs on a stand-in (MNIST padded to 32x32x3)",
                   "resnet": "CIFAR-style ResNets on a stand-in (MNIST padded to 32x32x3)"}


def on_stand_in(data: str) -> bool:
    """Whether a net's data sentence says that something stood in for missing data."""
    return any(w in str(data) for words in FETCH_HINTS.values() for w in words)


def family_name(rows: pd.DataFrame, task: str) -> str:
    """How a figure or sentence names ``task``'s nets in ``rows`` (a stand-in as such)."""
    data = rows[rows.task == task].data
    return stand_in_name(task, data.iloc[0] if len(data) else "")


def stand_in_name(task: str, data: str) -> str:
    """A task's nets named with their data: a stand-in is called a stand-in."""
    if task in STAND_IN_FAMILY and "CIFAR-10 is not available" in str(data):
        return STAND_IN_FAMILY[task]
    return FAMILY.get(task, task)


def _metric(task: str) -> str:
    return "perplexity" if task in LM_TASKS else "accuracy"


def _epochs(n: Any) -> str:
    n = float(n)
    return f"{n:g} epoch{'' if n == 1 else 's'}"


def data_statement(rows: pd.DataFrame) -> str:
    """What each family of nets trained and was tested on, and how long it trained, in
    Markdown, from the rows (their data sentence and training settings)."""
    floats = rows[rows.bits.isna()].drop_duplicates(["task", "model"])
    lines = []
    for task, g in floats.groupby("task", sort=False):
        r = g.iloc[0]
        how = ""
        if "epochs" in r and r.epochs == r.epochs:
            retrained = rows[(rows.task == task) & rows.retrained.astype(bool)]
            chosen = sorted(set(retrained.get("retrain_lr", pd.Series(dtype=float)).dropna()))
            rates = ", ".join(_rate(x) for x in chosen) or "none"
            how = (f" Each net trained for {_epochs(r.epochs)} (Adam, learning rate "
                   f"{_rate(r.lr)} warming up, then decaying to zero on a cosine), then for "
                   f"{_epochs(r.retrain_epochs)} after each step down the widths, at the "
                   f"retraining rate that did best on the validation split (chosen: {rates}).")
        seeds = rows[rows.task == task]["seed"].nunique() if "seed" in rows else 1
        lines.append(f"- *{stand_in_name(task, r.data)}* ({', '.join(g.model)}; {seeds} "
                     f"seed{'s' if seeds != 1 else ''} each): {r.data}.{how}")
    missing = [name for name, words in FETCH_HINTS.items()
               if any(w in str(d) for d in floats.data for w in words)]
    if missing:
        lines.append(f"\nWhat stands in above is the data that was missing here: "
                     f"`capq data fetch {' '.join(sorted(set(missing)))}` downloads it "
                     f"(checked by MD5) on a machine that is online; then rebuild this chapter.")
    return "\n".join(lines)


#: words of a data sentence that mean a dataset (or its training split) was missing
FETCH_HINTS = {"cifar10": ("CIFAR-10 is not available",),
               "mnist": ("MNIST training split is not available",),
               "ptb": ("the training split is not available",)}


def quality(rows: pd.DataFrame) -> pd.DataFrame:
    """Each float net's training and test performance, what it trained on and for how long,
    and for the LMs the unigram baseline and the ratio of test perplexity to it: the numbers
    a claim about a net should check first (is the net any good?)."""
    out = []
    rows = seed_means(rows)
    for (task, model), g in rows[rows.bits.isna()].groupby(["task", "model"], sort=False):
        m = _metric(task)
        split = g.set_index("split")[m]
        r = g.iloc[0]
        base = r.get("unigram_perplexity")
        out.append({"task": task, "model": model, "params": r.params,
                    "trained on": f"{int(r.get('train_items', 0)):,} {r.get('unit', '')}",
                    "epochs": r.get("epochs"), "metric": m,
                    "float train": split.get("train"), "float test": split.get("test"),
                    "unigram perplexity": base if task in LM_TASKS else None,
                    "test / unigram": (split.get("test") / base
                                       if task in LM_TASKS and base and base == base else None)})
    return pd.DataFrame(out)


def _num(value: float, fmt: str) -> str:
    text = format(value, fmt)
    return format(0.0, fmt) if float(text) == 0 else text  # no "-0"


def _rate(value: float) -> str:
    return f"{value:.8f}".rstrip("0").rstrip(".")


def _span(values: Sequence[float], fmt: str) -> str:
    lo, hi = _num(min(values), fmt), _num(max(values), fmt)
    return lo if lo == hi else f"{lo} to {hi}"


def reading_notes(rows: pd.DataFrame, tolerance: float = 0.01) -> list[str]:
    """Sentences for the end of the page, each computed from the rows: how good the float
    nets are, how much they memorized (training against test performance in float), and
    which nets end a retrained step *better* than their float selves (retraining is also
    more training; such a curve reads 'no loss', not 'quantization helps')."""
    if rows.empty:
        return []
    rows = seed_means(rows)
    q = quality(rows)
    data = rows.groupby("task", sort=False).data.first()

    def name(task: str) -> str:
        return stand_in_name(task, data.get(task, ""))

    notes = []
    parts = []
    for task, g in q.groupby("task", sort=False):
        if task in LM_TASKS:
            parts.append(f"the {name(task)} reach test perplexity "
                         f"{_span(g['float test'], '.0f')} against "
                         f"{_span(g['unigram perplexity'], '.0f')} for a unigram model of "
                         f"their training text ({_span(g['test / unigram'], '.2f')} of it)")
        else:
            parts.append(f"the {name(task)} reach float test accuracy "
                         f"{_span(g['float test'], '.3f')}")
    notes.append("How good the float nets are: " + "; ".join(parts) + ".")
    gaps = []
    for task, g in q.groupby("task", sort=False):
        gap = (g["float test"] - g["float train"]) if task in LM_TASKS else \
            (g["float train"] - g["float test"])
        unit = "perplexity" if task in LM_TASKS else "accuracy"
        gaps.append(f"{name(task)} {_span(list(gap), '+.0f' if task in LM_TASKS else '+.3f')} "
                    f"{unit}")
    notes.append("How much they memorized, as training minus test performance in float "
                 "(test minus training perplexity for the LMs): " + "; ".join(gaps) + ". "
                 "Where this gap is small, the training set holds little that the test set "
                 "does not, and the two splits can only differ a little under quantization.")
    better = []
    keep = rows[rows.retrained & rows.bits.notna()]
    for (task, model, split), g in keep.groupby(["task", "model", "split"], sort=False):
        m = _metric(task)
        f = rows[(rows.task == task) & (rows.model == model) & (rows.split == split)
                 & rows.bits.isna()][m].iloc[0]
        gain = (f - g[m]) / f if m == "perplexity" else (g[m] - f) / f
        if (gain > tolerance).any():
            b = g.bits[gain > tolerance]
            better.append(f"{model} ({split}, at {', '.join(str(int(x)) for x in b)} bits)")
    if better:
        notes.append(f"Retraining after each step is also more training: {len(better)} "
                     f"net/split pair(s) end some retrained width more than "
                     f"{tolerance:.0%} better than in float: {'; '.join(better)}. Read such a "
                     "curve as 'no loss', not as quantization helping.")
    else:
        notes.append(f"No net ends a retrained width more than {tolerance:.0%} better than "
                     "its float self, so the extra training that retraining adds does not "
                     "flatter the curves here.")
    return notes


def trained(profile: str | None, cache: ResultsCache | None = None) -> pd.DataFrame:
    """The newest real-task record per net under ``profile``, of its first seed (the loss
    surfaces look at one net per size): task, size, model, key, and the settings that
    rebuild its data."""
    out: dict[tuple, dict[str, Any]] = {}
    for r in records.of_profile(EXPERIMENT, profile, cache):
        c = r["config"]
        seed = int(c["study"].get("seed", 0))
        key = (c["task"], str(c["size"]))
        if key in out and out[key]["seed"] < seed:
            continue
        out[key] = {"task": c["task"], "size": c["size"], "seed": seed,
                    "model": model_name(c["task"], c["size"]), "key": r["key"],
                    "study": c["study"], "data": c["data"]}
    return pd.DataFrame(list(out.values()))


SURFACE_EXPERIMENT = "loss-surfaces"


def measure_surfaces(profile: str, nets: Sequence[tuple[str, Any]], widths: Sequence[str],
                     config: SurfaceConfig, samples: int, cache: ResultsCache | None = None,
                     root: Path | None = None, progress: bool = True,
                     device: str = "cpu") -> pd.DataFrame:
    """Loss and accuracy surfaces of the real-task nets (float and quantized), on up to
    ``samples`` training and test items (tokens for the LMs), one cache entry per net and
    width."""
    retain_freed_memory()
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
        if r.data not in datasets:
            datasets[r.data] = task_data(r.task, r.study, root)
        data = datasets[r.data]
        for w in widths:
            if w not in saved["states"]:
                raise validate.ConfigError(f"width {w!r} was not measured for {r.model}; "
                                           f"measured: {', '.join(saved['states'])}")
            cfg = {"net": r.key, "width": w, "surface": asdict(config), "samples": samples}

            def compute(r=r, w=w, saved=saved, data=data) -> dict[str, Any]:
                net = rebuild(saved, w).to(dev)
                if channels_last(r.task):
                    net = net.to(memory_format=torch.channels_last)
                evs = {}
                for split, d in (("train", data.train), ("test", data.test)):
                    if r.task in LM_TASKS:
                        evs[split] = lm_evaluator(d[:max(2, samples // d.shape[1])].to(dev))
                    else:
                        evs[split] = classification_evaluator(
                            _layout(r.task, d[0][:samples].to(dev)), d[1][:samples].to(dev))
                label = "float" if w == "float" else f"{w} bits"
                df = pd.concat([loss_surface(net, ev, config).assign(
                    task=r.task, model=r.model, width=label, split=s)
                    for s, ev in evs.items()], ignore_index=True)
                return {"profile": profile, "rows": df.to_dict("records")}

            rec, _ = cache.compute(SURFACE_EXPERIMENT, cfg, compute, describe(dev),
                                   label=profile)
            # how many directions each mean is over, and what the net trained on (a
            # stand-in or the real data), for the claims judged from the curves
            parts.append(pd.DataFrame(rec["result"]["rows"]).assign(
                directions=config.directions, data=r.data))
            bar.update(1)
    bar.close()
    return pd.concat(parts, ignore_index=True)


def cached_surfaces(profile: str | None, cache: ResultsCache | None = None) -> pd.DataFrame:
    """Every loss-surface point under ``profile`` from the cache (for readers such as the
    scorecard that must not compute), with the number of directions each mean is over and
    the data its net trained on."""
    cache = cache or ResultsCache()
    nets = {r["key"]: r["config"]["data"] for r in records.of_profile(EXPERIMENT, None, cache)}
    parts = [pd.DataFrame(r["result"]["rows"]).assign(
        directions=r["config"]["surface"]["directions"], data=nets.get(r["config"]["net"], ""))
        for r in records.of_profile(SURFACE_EXPERIMENT, profile, cache)]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def quality_table(rows: pd.DataFrame) -> pd.DataFrame:
    """``quality`` for the page, in few columns: what each net trained on and for how long
    in one, the float performance on each split, and for LMs the unigram bar beside it."""
    q = quality(rows)
    fmt = {"accuracy": "{:.4f}", "perplexity": "{:.1f}"}
    return pd.DataFrame({
        "model": [f"{m} ({t})" for m, t in zip(q.model, q.task, strict=True)],
        "params": q.params.map("{:,}".format),
        "trained on": [f"{on} \u00d7 {e:g} epochs" for on, e in
                       zip(q["trained on"], q.epochs, strict=True)],
        "float, train": [fmt[m].format(v) for m, v in zip(q.metric, q["float train"],
                                                          strict=True)],
        "float, test": [fmt[m].format(v) for m, v in zip(q.metric, q["float test"],
                                                         strict=True)],
        "unigram (test / it)": [f"{u:.0f} ({r:.2f})" if u == u and u is not None else ""
                                for u, r in zip(q["unigram perplexity"], q["test / unigram"],
                                                strict=True)]})
