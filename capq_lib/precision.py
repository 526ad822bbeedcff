"""Capacity under quantization (Sec. 5): nets memorize random data at a chosen fraction of
their capacity, then lose precision, directly or progressively with retraining, and we
record p and I at every bit width.

A *unit* of work is one model, one capacity fraction and one training recipe, with a few
seeds trained together as one population; each unit is cached on its own, so an interrupted
chapter resumes after the last finished unit. The float nets are kept (``nets/``) for the
live explorer.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from . import validate
from .devices import describe, resolve_device
from .info import mutual_information
from .models import CNNSpec, FCDNNSpec, LSTMSpec, ModelSpec, build
from .population import (
    Member,
    evaluate_population,
    stack_memorization_sets,
    stack_nets,
    train_members,
    train_population,
)
from .progress import bar as progress_bar
from .quantize import DEFAULT_SCHEDULE, STEP_RULES, QuantConfig, check_bits
from .results import ResultsCache, config_key
from .train import OPTIMIZERS, SCHEDULES, TrainConfig

FAMILIES = ("fc", "cnn", "rnn")
#: where each family's capacity (and so its N at capacity) was measured
CAPACITY_EXPERIMENT = {"fc": "fcdnn-capacity", "cnn": "cnn-capacity", "rnn": "rnn-capacity"}
EXPERIMENT = "quantization"


def parse_model(family: str, name: str | int) -> ModelSpec:
    """'2x32' (depth x width) for fc, a Table-1 letter for cnn, units (8 or 'LSTM-8') for rnn."""
    validate.choice("family", family, FAMILIES)
    text = str(name)
    try:
        if family == "fc":
            depth, width = (int(v) for v in text.lower().split("x"))
            return FCDNNSpec(width=width, depth=depth)
        if family == "cnn":
            return CNNSpec(text)
        return LSTMSpec(units=int(text.removeprefix("LSTM-")))
    except (ValueError, TypeError) as err:
        if isinstance(err, validate.ConfigError):
            raise
        raise validate.ConfigError(
            f"model {name!r} is not a {family} model; use e.g. "
            f"{ {'fc': '1x32', 'cnn': 'A', 'rnn': '8'}[family]!r}") from None


@dataclass(frozen=True)
class Recipe:
    """How the float nets are trained before quantization."""

    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    schedule: str = "cosine"
    decay_factor: float = 0.1
    epochs: int = 2000
    batches_per_epoch: int = 8

    def __post_init__(self) -> None:
        validate.choice("optimizer", self.optimizer, OPTIMIZERS)
        validate.choice("schedule", self.schedule, SCHEDULES)
        self.train_config()

    def train_config(self, epochs: int | None = None, eval_every: int = 25) -> TrainConfig:
        return TrainConfig(epochs=epochs or self.epochs, lr=self.lr, momentum=self.momentum,
                           schedule=self.schedule, decay_factor=self.decay_factor,
                           batches_per_epoch=self.batches_per_epoch, eval_every=eval_every,
                           optimizer=self.optimizer)


@dataclass(frozen=True)
class QuantizationStudy:
    """Which nets are trained, at which fractions of capacity, and how they are quantized."""

    profile: str = "custom"
    fc_models: tuple[str, ...] = ("1x16", "1x32")
    cnn_models: tuple[str, ...] = ("A",)
    rnn_models: tuple[int, ...] = (8,)
    #: N = fraction x the N where each model's mutual information peaked (its capacity)
    capacity_fractions: tuple[float, ...] = (0.25, 0.5, 1.0)
    seeds: int = 2
    schedule: tuple[int, ...] = DEFAULT_SCHEDULE
    step_rule: str = "l2"
    #: epochs of retraining after each quantization step, per family
    retrain_epochs: dict[str, int] = field(
        default_factory=lambda: {"fc": 20, "cnn": 10, "rnn": 20})
    retrain_lr_factor: float = 0.1
    recipes: dict[str, dict[str, Any]] = field(default_factory=lambda: {
        "fc": {"optimizer": "sgd", "lr": 0.3, "momentum": 0.9, "epochs": 2000,
               "batches_per_epoch": 8},
        "cnn": {"optimizer": "adam", "lr": 0.003, "momentum": 0.9, "epochs": 300,
                "batches_per_epoch": 64},
        "rnn": {"optimizer": "adam", "lr": 0.01, "momentum": 0.9, "epochs": 600,
                "batches_per_epoch": 16}})
    #: the FCDNN recipe inside the paper's lr range, trained beside ours for the comparison
    paper_recipe_fc: dict[str, Any] = field(default_factory=lambda: {
        "optimizer": "sgd", "lr": 0.03, "momentum": 0.9, "schedule": "step", "epochs": 2000,
        "batches_per_epoch": 8})
    #: the long-retraining variant retrains this many times longer
    long_retrain_factor: int = 5
    #: "no loss": quantized accuracy at most this far below float (0.005 = half a point)
    lossless_tolerance: float = 0.005
    #: N at capacity per model name, to run without the capacity chapters' results
    n_at_capacity: dict[str, int] | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        validate.lists_to_tuples(self)
        for fam in FAMILIES:
            for m in self.models(fam):
                parse_model(fam, m)
        if not any(self.models(f) for f in FAMILIES):
            raise validate.ConfigError("fc_models, cnn_models and rnn_models select no model")
        for f in validate.non_empty("capacity_fractions", self.capacity_fractions):
            validate.number("capacity_fractions", f, lo=0.0, hi=4.0, lo_open=True)
        validate.integer("seeds", self.seeds, lo=1, hi=1000)
        for b in validate.non_empty("schedule", self.schedule):
            check_bits(b)
        if list(self.schedule) != sorted(self.schedule, reverse=True):
            raise validate.ConfigError(f"schedule must go from more bits to fewer, got "
                                       f"{list(self.schedule)}")
        validate.choice("step_rule", self.step_rule, STEP_RULES)
        for fam in FAMILIES:
            validate.integer(f"retrain_epochs[{fam!r}]", self.retrain_epochs.get(fam, 0),
                             lo=0, hi=100000)
            self.recipe(fam)
        Recipe(**self.paper_recipe_fc)
        validate.number("retrain_lr_factor", self.retrain_lr_factor, lo=0.0, hi=10.0,
                        lo_open=True)
        validate.integer("long_retrain_factor", self.long_retrain_factor, lo=1, hi=1000)
        validate.number("lossless_tolerance", self.lossless_tolerance, lo=0.0, hi=0.5)
        validate.integer("seed", self.seed, lo=0)

    @classmethod
    def from_namespace(cls, namespace: dict[str, Any]) -> QuantizationStudy:
        """Build from a notebook's parameters: every study field found in ``namespace``."""
        return cls(**{f.name: namespace[f.name] for f in fields(cls) if f.name in namespace})

    def models(self, family: str) -> tuple:
        return {"fc": self.fc_models, "cnn": self.cnn_models, "rnn": self.rnn_models}[family]

    def recipe(self, family: str, name: str = "ours") -> Recipe:
        try:
            return Recipe(**(self.paper_recipe_fc if name == "paper" else self.recipes[family]))
        except TypeError as err:
            raise validate.ConfigError(f"recipes[{family!r}]: {err}") from None
        except KeyError:
            raise validate.ConfigError(f"recipes must give a recipe for family {family!r}"
                                       ) from None

    def units(self) -> list[Unit]:
        """Every (model, fraction, recipe) to train; the paper-recipe FCDNNs at capacity."""
        out = []
        for fam in FAMILIES:
            for m in self.models(fam):
                spec = parse_model(fam, m)
                for f in self.capacity_fractions:
                    out.append(Unit(fam, spec, float(f), "ours"))
                if fam == "fc":
                    out.append(Unit(fam, spec, 1.0, "paper"))
        return out


@dataclass(frozen=True)
class Unit:
    family: str
    spec: ModelSpec
    fraction: float
    recipe: str


def capacity_point(study: QuantizationStudy, unit: Unit,
                   cache: ResultsCache | None = None) -> tuple[int, float | None]:
    """N where the model's I peaked and the learning rate that got there (None: use the
    recipe's), from the study's override or from the capacity chapter's results."""
    name = unit.spec.name
    if study.n_at_capacity and name in study.n_at_capacity:
        return validate.integer(f"n_at_capacity[{name!r}]", study.n_at_capacity[name],
                                lo=1), None
    from .scorecard import summaries

    rows = summaries(CAPACITY_EXPERIMENT[unit.family], study.profile, cache)
    rows = rows[rows.model == name] if len(rows) else rows
    if not len(rows):
        raise validate.ConfigError(
            f"no capacity measured for {unit.family} model {name} under profile "
            f"{study.profile!r}: build the {CAPACITY_EXPERIMENT[unit.family]} chapter first "
            f"(capq build --only {CAPACITY_EXPERIMENT[unit.family]}) or give n_at_capacity")
    row = rows.iloc[-1]
    lr = row.get("lr_at_max")
    return int(row.n_at_max), (float(lr) if lr is not None and lr == lr else None)


def _seed(*parts: Any) -> int:
    text = json.dumps(parts, sort_keys=True, default=str)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big") >> 1


def evaluate_quantized(spec: ModelSpec, nets: Sequence[nn.Module], x: torch.Tensor,
                       y: torch.Tensor, n: torch.Tensor, config: QuantConfig | None
                       ) -> list[float]:
    """Each net's accuracy on its own set with its weights quantized directly (None: float)."""
    model = stack_nets(spec, nets, x.device)
    model.quantize_weights(config)
    return evaluate_population(model, x, y, n)[0].tolist()


def progressive(spec: ModelSpec, nets: Sequence[nn.Module], members: Sequence[Member],
                x: torch.Tensor, y: torch.Tensor, retrain: TrainConfig,
                schedule: Iterable[int], rule: str) -> dict[int, list[float]]:
    """Quantize step by step down the schedule, retraining the float shadow weights with
    fake quantization after each step; accuracy per bit width. A member whose retraining
    ended below its accuracy right after quantization keeps the weights it had before
    (retraining is there to recover, and a net at capacity can be knocked off instead)."""
    out, nets = {}, list(nets)
    n = torch.full((len(nets),), members[0].n_samples, device=x.device)
    for bits in schedule:
        config = QuantConfig(bits, rule)
        before = evaluate_quantized(spec, nets, x, y, n, config)
        model = stack_nets(spec, nets, x.device)
        model.quantize_weights(config)
        res = train_population(model, members, x, y, retrain)
        keep = [m.accuracy >= b for m, b in zip(res.members, before, strict=True)]
        out[bits] = [m.accuracy if k else b
                     for m, b, k in zip(res.members, before, keep, strict=True)]
        nets = [m.model if k else net for m, net, k in zip(res.members, nets, keep, strict=True)]
    return out


def run_unit(study: QuantizationStudy, unit: Unit, n_samples: int, device: torch.device,
             lr: float | None = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Train the unit's float nets (our recipe at ``lr``, the one that reached capacity, when
    given), then quantize them every way the study asks; the records and the nets (state
    dicts, data seeds) for the explorer."""
    recipe = study.recipe(unit.family, unit.recipe)
    if lr is not None and unit.recipe == "ours":
        recipe = Recipe(**{**asdict(recipe), "lr": lr})
    seeds = [_seed(study.seed, unit.spec.name, unit.fraction, unit.recipe, k)
             for k in range(study.seeds)]
    members = [Member(n_samples, recipe.lr, recipe.momentum, recipe.decay_factor, s, s)
               for s in seeds]
    x, y = stack_memorization_sets(members, unit.spec.input_shape, device)
    trained = train_members(unit.spec, members, recipe.train_config(), device, data=(x, y))
    nets = [m.model for m in trained.members]
    lrs = [recipe.lr] * len(seeds)
    if unit.fraction < 1.0:
        # below capacity every sample should be memorized; the lr that was best at capacity
        # can be too high for a small N (a seed stalls), so such seeds get one retry at a
        # third of it, kept if it memorizes more
        stalled = [k for k, m in enumerate(trained.members) if m.accuracy < 1.0]
        if stalled:
            retry = [Member(n_samples, recipe.lr / 3, recipe.momentum, recipe.decay_factor,
                            seeds[k], seeds[k]) for k in stalled]
            again = train_members(unit.spec, retry, recipe.train_config(), device,
                                  data=(x[stalled], y[stalled]))
            for k, m in zip(stalled, again.members, strict=True):
                if m.accuracy > trained.members[k].accuracy:
                    nets[k], lrs[k] = m.model, recipe.lr / 3
    n = torch.full((len(seeds),), n_samples, device=device)
    base = {"family": unit.family, "model": unit.spec.name, "params": unit.spec.n_params,
            "n_samples": n_samples, "capacity_fraction": unit.fraction,
            "data_per_param": n_samples / unit.spec.n_params, "recipe": unit.recipe,
            "profile": study.profile}
    rows: list[dict[str, Any]] = []

    def add(accs: Sequence[float], bits: int | None, rule: str | None, retrained: bool,
            epochs: int, main: bool = False) -> None:
        for seed, lr, acc in zip(seeds, lrs, accs, strict=True):
            rows.append({**base, "seed": seed, "lr": lr, "bits": bits, "step_rule": rule,
                         "retrained": retrained, "retrain_epochs": epochs, "accuracy": acc,
                         "mutual_info": float(mutual_information(n_samples, acc)),
                         "main": main})

    add(evaluate_quantized(unit.spec, nets, x, y, n, None), None, None, False, 0, True)
    for rule in STEP_RULES:
        for bits in study.schedule:
            add(evaluate_quantized(unit.spec, nets, x, y, n, QuantConfig(bits, rule)),
                bits, rule, False, 0)
    epochs = study.retrain_epochs.get(unit.family, 0)
    variants = [(study.step_rule, epochs)]
    if unit.family == "fc" and unit.fraction == 1.0 and epochs:  # the divergence study
        variants += [(r, epochs) for r in STEP_RULES if r != study.step_rule]
        variants.append((study.step_rule, epochs * study.long_retrain_factor))
    retrain_members = [Member(n_samples, lr * study.retrain_lr_factor, recipe.momentum,
                              recipe.decay_factor, s, s) for s, lr in zip(seeds, lrs, strict=True)]
    for i, (rule, ep) in enumerate(variants if epochs else []):
        cfg = recipe.train_config(epochs=ep, eval_every=max(1, min(5, ep)))
        cfg = TrainConfig(**{**cfg.as_dict(), "schedule": "cosine"})
        for bits, accs in progressive(unit.spec, nets, retrain_members, x, y, cfg,
                                      study.schedule, rule).items():
            add(accs, bits, rule, True, ep, i == 0)
    if not epochs:  # no retraining asked: direct quantization with the study's rule is main
        for r in rows:
            r["main"] = r["main"] or (r["step_rule"] == study.step_rule)
    saved = {"family": unit.family, "model": unit.spec.name, "n_samples": n_samples,
             "data_seeds": seeds, "recipe": unit.recipe, "fraction": unit.fraction,
             "state_dicts": [{k: v.cpu() for k, v in net.state_dict().items()} for net in nets]}
    return rows, saved


def unit_config(study: QuantizationStudy, unit: Unit, n_samples: int) -> dict[str, Any]:
    """What decides a unit's records (the cache key)."""
    skip = {"profile", "fc_models", "cnn_models", "rnn_models", "capacity_fractions",
            "n_at_capacity"}
    return {"study": {k: v for k, v in asdict(study).items() if k not in skip},
            "retry_below_capacity": "lr/3", "family": unit.family, "model": unit.spec.name,
            "fraction": unit.fraction, "recipe": unit.recipe, "n_samples": n_samples}


def nets_dir(cache: ResultsCache) -> Path:
    return cache.root / "nets"


def measure_quantization(study: QuantizationStudy, device: str = "auto",
                         cache: ResultsCache | None = None, progress: bool = True
                         ) -> pd.DataFrame:
    """Every unit's records (computing the missing units, one cache entry each)."""
    cache = cache or ResultsCache()
    dev = resolve_device(device)
    units = study.units()
    points = [capacity_point(study, u, cache) for u in units]  # fail before any training
    rows: list[dict[str, Any]] = []
    bar = progress_bar(total=len(units), desc="quantization units", disable=not progress)
    for unit, (n_cap, lr) in zip(units, points, strict=True):
        n = max(2, round(unit.fraction * n_cap))
        config = {**unit_config(study, unit, n), "lr": lr}
        path = nets_dir(cache) / f"{config_key(EXPERIMENT, config)}.pt"

        def compute(unit: Unit = unit, n: int = n, path: Path = path,
                    lr: float | None = lr) -> dict[str, Any]:
            records, nets = run_unit(study, unit, n, dev, lr)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            torch.save(nets, tmp)  # the nets land before the record that points at them
            os.replace(tmp, path)
            return {"profile": study.profile, "rows": records}

        record, _ = cache.compute(EXPERIMENT, config, compute, describe(dev))
        rows += [{**r, "profile": study.profile, "key": record["key"]}
                 for r in record["result"]["rows"]]
        bar.update(1)
    bar.close()
    return pd.DataFrame(rows)


def load_nets(key: str, cache: ResultsCache | None = None) -> tuple[ModelSpec, list[nn.Module],
                                                                    dict[str, Any]]:
    """A unit's float nets, as the explorer needs them."""
    cache = cache or ResultsCache()
    path = nets_dir(cache) / f"{key}.pt"
    if not path.exists():
        raise validate.ConfigError(f"no saved nets for unit {key}: rerun the chapter")
    saved = torch.load(path, weights_only=True)
    spec = parse_model(saved["family"], saved["model"])
    nets = []
    for sd in saved["state_dicts"]:
        net = build(spec)
        net.load_state_dict(sd)
        nets.append(net)
    return spec, nets, saved


def accuracy_by_bits(rows: pd.DataFrame) -> pd.DataFrame:
    """Mean over seeds per (model, fraction, recipe, rule, retrained, epochs, bits); the float
    accuracy as its own column for the loss."""
    keys = ["family", "model", "params", "n_samples", "capacity_fraction", "data_per_param",
            "recipe"]
    floats = rows[rows.bits.isna()].groupby(keys, as_index=False)[["accuracy", "mutual_info"]]\
        .mean().rename(columns={"accuracy": "float_accuracy", "mutual_info": "float_mi"})
    q = rows[rows.bits.notna()].groupby(
        [*keys, "step_rule", "retrained", "retrain_epochs", "main", "bits"], as_index=False)[
        ["accuracy", "mutual_info"]].mean()
    q = q.merge(floats, on=keys)
    q["bits"] = q.bits.astype(int)
    return q


def fewest_lossless_bits(rows: pd.DataFrame, tolerance: float) -> pd.DataFrame:
    """Per setting, the fewest bits b such that every width >= b keeps the mean accuracy
    within ``tolerance`` of float (NaN if even the widest loses)."""
    q = accuracy_by_bits(rows)
    q["lossless"] = q.accuracy >= q.float_accuracy - tolerance
    keys = ["family", "model", "params", "n_samples", "capacity_fraction", "data_per_param",
            "recipe", "step_rule", "retrained", "retrain_epochs", "main"]
    out = []
    for k, g in q.groupby(keys, sort=False):
        g = g.sort_values("bits", ascending=False)
        ok = g.lossless.cummin()  # lossless at this width and every wider one
        fewest = g.bits[ok].min() if ok.any() else float("nan")
        out.append({**dict(zip(keys, k, strict=True)), "fewest_lossless_bits": fewest,
                    "float_accuracy": g.float_accuracy.iloc[0], "widest": g.bits.max(),
                    "tolerance": tolerance})
    return pd.DataFrame(out)
