"""Capacity under quantization (Sec. 5): nets memorize random data at a chosen fraction of
their capacity, then lose precision, directly or progressively with retraining, and we
record p and I at every bit width.

"A fraction of capacity" has two readings, and we run both. Ours: a fraction of N_at_max,
the N where a model's I peaked. The paper's (Sec. 5.1: a net of about 2^17 bits trained on
2^16 samples): a fraction of C, the capacity in bits, so its "half capacity" is N = C/2,
fewer samples than N_at_max/2 by the factor 1 - H2(p) at the peak. Every row says which
(``definition``: "N_at_max/2", "C/2", "N_at_max x 1", ...).

A *unit* of work is one model, one capacity fraction and one training recipe, with a few
seeds trained together as one population; each unit is cached on its own, so an interrupted
chapter resumes after the last finished unit. The float nets are kept (``nets/``) for the
live explorer.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import pandas as pd
import torch
from torch import nn

from capq_lib.core import reference, validate
from capq_lib.core.devices import describe, resolve_device
from capq_lib.core.info import mutual_information
from capq_lib.core.progress import bar as progress_bar
from capq_lib.core.seeds import derived_seed
from capq_lib.engine.population import (
    Member,
    evaluate_population,
    stack_memorization_sets,
    stack_nets,
    train_members,
    train_population,
)
from capq_lib.engine.quantize import DEFAULT_SCHEDULE, STEP_RULES, QuantConfig, check_bits
from capq_lib.engine.train import Recipe
from capq_lib.experiments import records
from capq_lib.experiments.results import ResultsCache
from capq_lib.nets.models import CNNSpec, FCDNNSpec, LSTMSpec, ModelSpec, build

FAMILIES = ("fc", "cnn", "rnn")
FAMILY_NAMES = {"fc": "FCDNN", "cnn": "CNN", "rnn": "LSTM"}
#: where each family's capacity (and so its N at capacity) was measured
CAPACITY_EXPERIMENT = {"fc": "fcdnn-capacity", "cnn": "cnn-capacity", "rnn": "rnn-capacity"}
EXPERIMENT = "quantization"
#: what a unit's fraction multiplies: N_at_max (where I peaked) or C (capacity in bits)
BASES = ("n_at_max", "capacity_bits")
#: the ``study`` label of this module's rows (the fill sweep's rows say "fill")
STUDY = "fractions"
#: tolerances of the lossless sensitivity table (accuracy points / 100)
SENSITIVITY_TOLERANCES = (0.0, 0.005, 0.01, 0.02)


def definition(basis: str, fraction: float) -> str:
    """The row label of a capacity setting: "N_at_max/2", "C/2", "N_at_max x 0.25", ..."""
    name = {"n_at_max": "N_at_max", "capacity_bits": "C"}[validate.choice("basis", basis,
                                                                           BASES)]
    return f"{name}/2" if fraction == 0.5 else f"{name} x {fraction:g}"


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
class QuantizationStudy:
    """Which nets are trained, at which fractions of capacity, and how they are quantized."""

    profile: str = "custom"
    fc_models: tuple[str, ...] = ("1x16", "1x32")
    cnn_models: tuple[str, ...] = ("A",)
    rnn_models: tuple[int, ...] = (8,)
    #: N = fraction x the N where each model's mutual information peaked (N_at_max)
    capacity_fractions: tuple[float, ...] = (0.25, 0.5, 1.0)
    #: N = fraction x C, the model's capacity in bits: the paper's definition (0.5: N = C/2)
    capacity_bits_fractions: tuple[float, ...] = (0.5,)
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
    #: the capacity C in bits per model name, beside ``n_at_capacity`` (for the C units)
    capacity_bits: dict[str, float] | None = None
    seed: int = 0
    #: the fill sweep (experiments/fill.py): FCDNNs at these N / P, progressively quantized
    fill_models: tuple[str, ...] = ("1x32", "2x32")
    fill_n_per_param: tuple[float, ...] = (1.0, 1.5, 2.0, 2.5, 3.0)
    fill_seeds: int = 4
    fill_recipes: tuple[str, ...] = ("ours", "paper")
    #: training epochs per fill recipe, overriding the recipe's own (none: the recipe's)
    fill_epochs: dict[str, int] | None = None
    #: (model, recipe) pairs of the fill sweep left out, e.g. to fit a time budget
    fill_skip: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        validate.lists_to_tuples(self)
        for fam in FAMILIES:
            for m in self.models(fam):
                parse_model(fam, m)
        if not any(self.models(f) for f in FAMILIES):
            raise validate.ConfigError("fc_models, cnn_models and rnn_models select no model")
        for f in validate.non_empty("capacity_fractions", self.capacity_fractions):
            validate.number("capacity_fractions", f, lo=0.0, hi=4.0, lo_open=True)
        for f in self.capacity_bits_fractions:
            validate.number("capacity_bits_fractions", f, lo=0.0, hi=4.0, lo_open=True)
        for name, c in (self.capacity_bits or {}).items():
            validate.number(f"capacity_bits[{name!r}]", c, lo=0.0, lo_open=True)
            if name not in (self.n_at_capacity or {}):
                raise validate.ConfigError(
                    f"capacity_bits gives model {name!r} without n_at_capacity: give its N "
                    f"at capacity too, or neither (both then come from the capacity chapters)")
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
            if self.models(fam) or (fam == "fc" and self.fill_models):
                self.recipe(fam)  # a family without nets needs no recipe
        Recipe(**self.paper_recipe_fc)
        validate.number("retrain_lr_factor", self.retrain_lr_factor, lo=0.0, hi=10.0,
                        lo_open=True)
        validate.integer("long_retrain_factor", self.long_retrain_factor, lo=1, hi=1000)
        validate.number("lossless_tolerance", self.lossless_tolerance, lo=0.0, hi=0.5)
        validate.integer("seed", self.seed, lo=0)
        for r in validate.non_empty("fill_n_per_param", self.fill_n_per_param):
            validate.number("fill_n_per_param", r, lo=0.0, hi=64.0, lo_open=True)
        for m in self.fill_models:
            spec = parse_model("fc", m)
            most = round(max(self.fill_n_per_param) * spec.n_params)
            if most >= 2 ** spec.n_in:
                raise validate.ConfigError(
                    f"fill_n_per_param up to {max(self.fill_n_per_param)} asks fill model {m} "
                    f"for N = {most} samples, more than its {spec.n_in} input bits can tell "
                    f"apart ({2 ** spec.n_in}): use a wider model or smaller ratios")
        validate.integer("fill_seeds", self.fill_seeds, lo=1, hi=1000)
        for name in self.fill_recipes:
            validate.choice("fill_recipes", name, ("ours", "paper"))
        for name, e in (self.fill_epochs or {}).items():
            validate.choice("fill_epochs key", name, ("ours", "paper"))
            validate.integer(f"fill_epochs[{name!r}]", e, lo=1, hi=1_000_000)
        object.__setattr__(self, "fill_skip", tuple(tuple(p) for p in self.fill_skip))
        for pair in self.fill_skip:
            if len(pair) != 2 or pair[0] not in self.fill_models or \
                    pair[1] not in self.fill_recipes:
                raise validate.ConfigError(
                    f"fill_skip must list [model, recipe] pairs of fill_models "
                    f"{list(self.fill_models)} and fill_recipes {list(self.fill_recipes)}; "
                    f"got {list(pair)}")

    def fill_pairs(self) -> list[tuple[str, str]]:
        """The (model, recipe) pairs the fill sweep trains."""
        return [(m, r) for m in self.fill_models for r in self.fill_recipes
                if (m, r) not in self.fill_skip]

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
        """Every (model, fraction, recipe) to train: our recipe at each fraction of N_at_max
        and of C, the paper-recipe FCDNNs at N_at_max."""
        out = []
        for fam in FAMILIES:
            for m in self.models(fam):
                spec = parse_model(fam, m)
                for f in self.capacity_fractions:
                    out.append(Unit(fam, spec, float(f), "ours"))
                for f in self.capacity_bits_fractions:
                    out.append(Unit(fam, spec, float(f), "ours", "capacity_bits"))
                if fam == "fc":
                    out.append(Unit(fam, spec, 1.0, "paper"))
        return out


@dataclass(frozen=True)
class Unit:
    family: str
    spec: ModelSpec
    fraction: float
    recipe: str
    #: what ``fraction`` multiplies: "n_at_max" or "capacity_bits" (the paper's C/2)
    basis: str = "n_at_max"

    @property
    def definition(self) -> str:
        return definition(self.basis, self.fraction)


@dataclass(frozen=True)
class CapacityPoint:
    """What the capacity chapters measured for one model: N where I peaked, the capacity C
    in bits there (None when unknown) and the lr that got there (None: use the recipe's)."""

    n_at_max: int
    capacity_bits: float | None = None
    lr: float | None = None
    #: where the point comes from, for readers: measured here, given, or the paper's
    origin: str = "measured here"

    def n_samples(self, unit: Unit) -> int:
        """The unit's N: its fraction of N_at_max, or of C."""
        if unit.basis == "n_at_max":
            return max(2, round(unit.fraction * self.n_at_max))
        if self.capacity_bits is None:
            raise validate.ConfigError(
                f"capacity_bits must give the capacity in bits of model {unit.spec.name!r} "
                f"beside its n_at_capacity: its {unit.definition} unit needs it")
        return max(2, round(unit.fraction * self.capacity_bits))


def capacity_point(study: QuantizationStudy, unit: Unit,
                   cache: ResultsCache | None = None) -> CapacityPoint:
    """N_at_max, C and the learning rate of the model's capacity, from the study's overrides
    (``n_at_capacity`` with ``capacity_bits``) or from the capacity chapter's results."""
    name = unit.spec.name
    if study.n_at_capacity and name in study.n_at_capacity:
        c = (study.capacity_bits or {}).get(name)
        return CapacityPoint(validate.integer(f"n_at_capacity[{name!r}]",
                                              study.n_at_capacity[name], lo=1),
                             None if c is None else float(c), origin="given (n_at_capacity)")
    rows = records.summaries(CAPACITY_EXPERIMENT[unit.family], study.profile, cache)
    rows = rows[rows.model == name] if len(rows) else rows
    if not len(rows) and os.environ.get("CAPQ_BATCH") != "1":
        return paper_point(unit)
    if not len(rows):
        raise validate.ConfigError(
            f"no capacity measured for {unit.family} model {name} under profile "
            f"{study.profile!r}: build the {CAPACITY_EXPERIMENT[unit.family]} chapter first "
            f"(capq build --only {CAPACITY_EXPERIMENT[unit.family]}) or give n_at_capacity "
            f"and capacity_bits")
    row = rows.iloc[-1]
    lr, c = row.get("lr_at_max"), row.get("capacity_bits")
    return CapacityPoint(int(row.n_at_max), float(c) if c is not None and c == c else None,
                         float(lr) if lr is not None and lr == lr else None)


def paper_point(unit: Unit) -> CapacityPoint:
    """Where the capacity chapter has not run (a fresh kernel: Colab, Binder), the capacity
    the paper reports for this kind of model (its bits per parameter x P, or Table 1's
    capacity for a CNN), so that the page and its explorer work at once; said loudly, and
    never used by a book build (``CAPQ_BATCH``), which needs the measured capacity."""
    spec, paper = unit.spec, reference.paper()
    if unit.family == "cnn" and spec.name in paper["cnn"]["table1"]["models"]:
        bits = float(paper["cnn"]["table1"]["models"][spec.name]["capacity_bits"])
    else:
        per = {"fc": "fcdnn.bits_per_param_mean", "rnn": "rnn.bits_per_param"}
        bits = float(reference.value(per.get(unit.family, "fcdnn.bits_per_param_mean"))
                     ) * spec.n_params
    warnings.warn(f"no capacity measured for {spec.name} here: using the paper's "
                  f"{bits:,.0f} bits (N_at_max taken as that many samples); run the "
                  f"{CAPACITY_EXPERIMENT[unit.family]} notebook first for measured values",
                  stacklevel=2)
    return CapacityPoint(max(2, round(bits)), bits, None,
                         origin="the paper's (no capacity measured here)")


def evaluate_quantized(spec: ModelSpec, nets: Sequence[nn.Module], x: torch.Tensor,
                       y: torch.Tensor, n: torch.Tensor, config: QuantConfig | None,
                       deployed: bool = False) -> list[float]:
    """Each net's accuracy on its own set with its weights quantized directly (None: float;
    ``deployed``: embeddings and read-out too)."""
    model = stack_nets(spec, nets, x.device)
    model.quantize_weights(config, deployed)
    return evaluate_population(model, x, y, n)[0].tolist()


def retrain_recipe(recipe: Recipe, epochs: int, lr: float) -> Recipe:
    """How a net is retrained after each quantization step: ``epochs`` of its recipe at
    ``lr`` on a cosine schedule, evaluated every few epochs."""
    return recipe.with_(epochs=epochs, lr=lr, schedule="cosine",
                        eval_every=max(1, min(5, epochs)))


def progressive(spec: ModelSpec, nets: Sequence[nn.Module], members: Sequence[Member],
                x: torch.Tensor, y: torch.Tensor, schedule: Iterable[int],
                rule: str, deployed: bool = False) -> dict[int, list[float]]:
    """Quantize step by step down the schedule, retraining the float shadow weights with
    fake quantization after each step (each member by its own, retraining, recipe);
    accuracy per bit width. A member whose retraining
    ended below its accuracy right after quantization keeps the weights it had before
    (retraining is there to recover, and a net at capacity can be knocked off instead)."""
    out, nets = {}, list(nets)
    n = torch.tensor([m.n_samples for m in members], device=x.device)
    for bits in schedule:
        config = QuantConfig(bits, rule)
        before = evaluate_quantized(spec, nets, x, y, n, config, deployed)
        model = stack_nets(spec, nets, x.device)
        model.quantize_weights(config, deployed)
        res = train_population(model, members, x, y)
        keep = [m.accuracy >= b for m, b in zip(res.members, before, strict=True)]
        out[bits] = [m.accuracy if k else b
                     for m, b, k in zip(res.members, before, keep, strict=True)]
        nets = [m.model if k else net for m, net, k in zip(res.members, nets, keep, strict=True)]
    return out


@dataclass
class TrainedUnit:
    """A unit's float nets at N samples: one per seed, each on its own memorization set
    (``x``, ``y`` stacked), with the lr each was trained at."""

    seeds: list[int]
    nets: list[nn.Module]
    lrs: list[float]
    recipe: Recipe
    x: torch.Tensor
    y: torch.Tensor


def unit_seeds(study: QuantizationStudy, unit: Unit) -> list[int]:
    """The data and initialization seed of each of the unit's nets."""
    # the N_at_max units keep the seeds they had before C units existed (same cache, nets)
    tag = () if unit.basis == "n_at_max" else ("C",)
    return [derived_seed(study.seed, unit.spec.name, *tag, unit.fraction, unit.recipe, k)
            for k in range(study.seeds)]


def train_unit(study: QuantizationStudy, unit: Unit, n_samples: int, device: torch.device,
               lr: float | None = None, point: CapacityPoint | None = None,
               progress: bool = False) -> TrainedUnit:
    """The unit's float nets, by our recipe at ``lr`` (the one that reached capacity) when
    given; below capacity a seed that stalled gets one retry at a third of the lr."""
    recipe = study.recipe(unit.family, unit.recipe)
    if lr is not None and unit.recipe == "ours":
        recipe = recipe.with_(lr=lr)
    seeds = unit_seeds(study, unit)
    members = [Member(n_samples, s, s, recipe) for s in seeds]
    x, y = stack_memorization_sets(members, unit.spec.input_shape, device)
    trained = train_members(unit.spec, members, device, progress=progress, data=(x, y))
    nets = [m.model for m in trained.members]
    lrs = [recipe.lr] * len(seeds)
    n_at_max = point.n_at_max if point is not None else None
    if unit.fraction < 1.0 or (n_at_max is not None and n_samples < n_at_max):
        # below capacity every sample should be memorized; the lr that was best at capacity
        # can be too high for a small N (a seed stalls), so such seeds get one retry at a
        # third of it, kept if it memorizes more
        stalled = [k for k, m in enumerate(trained.members) if m.accuracy < 1.0]
        if stalled:
            retry = [members[k].with_recipe(lr=recipe.lr / 3) for k in stalled]
            again = train_members(unit.spec, retry, device, progress=progress,
                                  data=(x[stalled], y[stalled]))
            for k, m in zip(stalled, again.members, strict=True):
                if m.accuracy > trained.members[k].accuracy:
                    nets[k], lrs[k] = m.model, recipe.lr / 3
    return TrainedUnit(seeds, nets, lrs, recipe, x, y)


def quantize_unit(study: QuantizationStudy, unit: Unit, n_samples: int, device: torch.device,
                  lr: float | None = None, point: CapacityPoint | None = None
                  ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Train the unit's float nets (``train_unit``), then quantize them every way the study
    asks; the records and the nets (state dicts, data seeds) for the explorer. ``point``
    (the model's N_at_max and C) labels the rows; a C unit's ``capacity_fraction`` is its N
    as a fraction of N_at_max."""
    t = train_unit(study, unit, n_samples, device, lr, point)
    seeds, nets, lrs, recipe, x, y = t.seeds, t.nets, t.lrs, t.recipe, t.x, t.y
    n_at_max = point.n_at_max if point is not None else None
    n = torch.full((len(seeds),), n_samples, device=device)
    fraction = unit.fraction if unit.basis == "n_at_max" else \
        (round(n_samples / n_at_max, 4) if n_at_max else float("nan"))
    base = {"family": unit.family, "model": unit.spec.name, "params": unit.spec.n_params,
            "n_samples": n_samples, "capacity_fraction": fraction,
            "data_per_param": n_samples / unit.spec.n_params, "recipe": unit.recipe,
            "profile": study.profile, **labels(unit, point)}
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
    if unit.family == "fc" and unit.fraction == 1.0 and unit.basis == "n_at_max" and epochs:
        # the divergence study
        variants += [(r, epochs) for r in STEP_RULES if r != study.step_rule]
        variants.append((study.step_rule, epochs * study.long_retrain_factor))
    for i, (rule, ep) in enumerate(variants if epochs else []):
        retrain = [Member(n_samples, s, s, retrain_recipe(recipe, ep, lr * study.retrain_lr_factor))
                   for s, lr in zip(seeds, lrs, strict=True)]
        for bits, accs in progressive(unit.spec, nets, retrain, x, y, study.schedule,
                                      rule).items():
            add(accs, bits, rule, True, ep, i == 0)
    if not epochs:  # no retraining asked: direct quantization with the study's rule is main
        for r in rows:
            r["main"] = r["main"] or (r["step_rule"] == study.step_rule)
    saved = {"family": unit.family, "model": unit.spec.name, "n_samples": n_samples,
             "data_seeds": seeds, "recipe": unit.recipe, "fraction": unit.fraction,
             "definition": unit.definition,
             "state_dicts": [{k: v.cpu() for k, v in net.state_dict().items()} for net in nets]}
    return rows, saved


def labels(unit: Unit, point: CapacityPoint | None) -> dict[str, Any]:
    """The columns that say which study and which capacity definition a row belongs to."""
    return {"study": STUDY, "definition": unit.definition, "capacity_basis": unit.basis,
            "n_at_max": point.n_at_max if point else None,
            "capacity_bits": point.capacity_bits if point else None}


#: study fields that do not change a fractions unit's records (kept out of its cache key,
#: so units cached before these fields existed still count)
_NOT_IN_UNIT_KEY = {"profile", "fc_models", "cnn_models", "rnn_models", "capacity_fractions",
                    "n_at_capacity", "capacity_bits_fractions", "capacity_bits", "fill_models",
                    "fill_n_per_param", "fill_seeds", "fill_recipes", "fill_epochs",
                    "fill_skip"}


def unit_config(study: QuantizationStudy, unit: Unit, n_samples: int) -> dict[str, Any]:
    """What decides a unit's records (the cache key)."""
    config = {"study": {k: v for k, v in asdict(study).items() if k not in _NOT_IN_UNIT_KEY},
              "retry_below_capacity": "lr/3", "family": unit.family, "model": unit.spec.name,
              "fraction": unit.fraction, "recipe": unit.recipe, "n_samples": n_samples}
    if unit.basis != "n_at_max":
        config["basis"] = unit.basis
    return config


def unit_record_config(study: QuantizationStudy, unit: Unit, point: CapacityPoint
                       ) -> dict[str, Any]:
    """The cache config of a unit's record, at the N and lr its capacity point gives."""
    return {**unit_config(study, unit, point.n_samples(unit)), "lr": point.lr}


@dataclass
class UnitNets:
    """Float nets of one unit, as the explorers need them, and where they came from."""

    spec: ModelSpec
    nets: list[nn.Module]
    n_samples: int
    seeds: list[int]
    #: where the nets and their N come from, said under the explorer
    source: str


def first_look_units(study: QuantizationStudy) -> list[Unit]:
    """One unit per model for a first look: our recipe at the study's largest fraction of
    N_at_max (full capacity by default), smallest model first (the quickest to train)."""
    ours = [u for u in study.units() if u.basis == "n_at_max" and u.recipe == "ours"]
    top = max(u.fraction for u in ours)  # a study has a model and a fraction at least
    return sorted((u for u in ours if u.fraction == top), key=lambda u: u.spec.n_params)


def unit_nets(study: QuantizationStudy, unit: Unit, device: str = "auto",
              cache: ResultsCache | None = None, progress: bool = True) -> UnitNets:
    """A unit's float nets without its quantization runs: the chapter's saved ones when the
    cache has the unit, else trained now (the same seeds, recipe and lr, so the same nets
    the chapter will save), so that a fresh kernel can explore before the chapter ran."""
    cache = cache or ResultsCache()
    point = capacity_point(study, unit, cache)
    n = point.n_samples(unit)
    record = cache.get(EXPERIMENT, unit_record_config(study, unit, point))
    if record is not None:
        return load_nets(record["key"], cache)
    dev = resolve_device(device)
    start = time.perf_counter()
    t = train_unit(study, unit, n, dev, point.lr, point, progress)
    took = time.perf_counter() - start
    return UnitNets(unit.spec, [net.cpu() for net in t.nets], n, t.seeds,
                    f"trained just now, {took:.0f} s on {describe(dev)}; N at capacity: "
                    f"{point.origin}")


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
    sizes = [p.n_samples(u) for u, p in zip(units, points, strict=True)]
    for unit, point, n in zip(units, points, sizes, strict=True):
        lr = point.lr
        config = unit_record_config(study, unit, point)

        def compute(unit: Unit = unit, n: int = n, lr: float | None = lr,
                    point: CapacityPoint = point) -> tuple[dict[str, Any], Any]:
            records, nets = quantize_unit(study, unit, n, dev, lr, point)
            return {"profile": study.profile, "rows": records}, nets

        # the nets are part of the record: saved before it, and a record without them a miss
        record, _ = cache.compute(EXPERIMENT, config, compute, describe(dev), artifact=True,
                                  label=study.profile)
        # the labels come from the unit (records cached before labels existed lack them)
        rows += [{**r, **labels(unit, point), "profile": study.profile, "key": record["key"]}
                 for r in record["result"]["rows"]]
        bar.update(1)
    bar.close()
    return pd.DataFrame(rows)


def load_nets(key: str, cache: ResultsCache | None = None) -> UnitNets:
    """A unit's saved float nets (record ``key``), verified, as the explorers need them."""
    cache = cache or ResultsCache()
    try:
        saved = cache.load_artifact(EXPERIMENT, key, "rerun the quantization chapter")
    except (FileNotFoundError, ValueError) as err:
        raise validate.ConfigError(str(err)) from None
    spec = parse_model(saved["family"], saved["model"])
    nets = []
    for sd in saved["state_dicts"]:
        net = build(spec)
        net.load_state_dict(sd)
        nets.append(net)
    return UnitNets(spec, nets, saved["n_samples"], list(saved["data_seeds"]),
                    "saved by this chapter")


#: what identifies a trained setting (a group of seeds); each only where the rows have it
#: (rows made before "definition" and "study" existed do not; only the fill sweep's rows have
#: "n_per_param")
_SETTING = ["family", "model", "params", "n_samples", "capacity_fraction", "data_per_param",
            "n_per_param", "recipe", "definition", "study"]
_QUANT = ["step_rule", "retrained", "retrain_epochs", "main"]


def _keys(rows: pd.DataFrame, per_seed: bool) -> list[str]:
    return [k for k in _SETTING if k in rows] + (["seed"] if per_seed else [])


def accuracy_by_bits(rows: pd.DataFrame, per_seed: bool = False) -> pd.DataFrame:
    """Mean over seeds (or, ``per_seed``, each net) per (model, N, recipe, rule, retrained,
    epochs, bits); the float accuracy as its own column for the loss."""
    keys = _keys(rows, per_seed)
    floats = rows[rows.bits.isna()].groupby(keys, as_index=False, dropna=False)[
        ["accuracy", "mutual_info"]].mean().rename(
        columns={"accuracy": "float_accuracy", "mutual_info": "float_mi"})
    q = rows[rows.bits.notna()].groupby([*keys, *_QUANT, "bits"], as_index=False,
                                        dropna=False)[["accuracy", "mutual_info"]].mean()
    q = q.merge(floats, on=keys)
    q["bits"] = q.bits.astype(int)
    return q


def fewest_lossless_bits(rows: pd.DataFrame, tolerance: float,
                         per_seed: bool = False) -> pd.DataFrame:
    """Per setting (``per_seed``: per net), the fewest bits b such that every width >= b
    keeps the mean accuracy within ``tolerance`` of float (NaN if even the widest loses)."""
    q = accuracy_by_bits(rows, per_seed)
    q["lossless"] = q.accuracy >= q.float_accuracy - tolerance - 1e-12
    keys = [*_keys(rows, per_seed), *_QUANT]
    out = []
    for k, g in q.groupby(keys, sort=False, dropna=False):
        g = g.sort_values("bits", ascending=False)
        ok = g.lossless.cummin()  # lossless at this width and every wider one
        fewest = g.bits[ok].min() if ok.any() else float("nan")
        out.append({**dict(zip(keys, k, strict=True)), "fewest_lossless_bits": fewest,
                    "float_accuracy": g.float_accuracy.iloc[0],
                    "float_mi": g.float_mi.iloc[0], "widest": g.bits.max(),
                    "tolerance": tolerance})
    return pd.DataFrame(out)


def shown_bits(fewest: float, widest: int) -> str:
    """A fewest-lossless-bits value for a table: "> widest" where even the widest lost."""
    return f">{int(widest)}" if fewest != fewest else str(int(fewest))


def ranked_bits(table: pd.DataFrame) -> pd.Series:
    """Fewest lossless bits with "even the widest lost" as widest + 1: worse than any
    measured width, never dropped (what orderings and monotonicity checks compare)."""
    return table.fewest_lossless_bits.fillna(table.widest + 1)


def main_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The main setting of the fractions study: our recipe, progressive with the study's
    rule (rows of the fill sweep and other studies left out)."""
    t = table[table.main & (table.recipe == "ours")]
    return t[t.study.fillna(STUDY) == STUDY] if "study" in t else t


#: the capacity settings the lossless tables compare, in the order they are shown
DEFINITIONS = ("N_at_max x 1", "N_at_max/2", "C/2")


def lossless_by_definition(table: pd.DataFrame) -> pd.DataFrame:
    """Per family, the fewest lossless bits (the most any of its models needed, main
    setting) at full capacity and at half capacity under each definition, beside the
    paper's full-capacity widths and its half-capacity FCDNN (4 bits at N = C/2)."""
    full_ref = reference.value("quantization.lossless_bits_full_capacity")
    half_ref = reference.value("quantization.half_capacity_fc")["lossless_bits"]
    main = main_rows(table)
    out = []
    for fam, g in main.groupby("family", sort=False):
        row = {"family": FAMILY_NAMES[fam], "models": ", ".join(dict.fromkeys(g.model))}
        for d in DEFINITIONS:
            b = g[g.definition == d].fewest_lossless_bits
            row[d] = "-" if not len(b) else shown_bits(
                float("nan") if b.isna().any() else b.max(), g.widest.max())
        row["paper, full (N_at_max)"] = full_ref[fam]
        row["paper, C/2"] = half_ref if fam == "fc" else "-"
        out.append(row)
    return pd.DataFrame(out)


def half_capacity_sizes(rows: pd.DataFrame) -> pd.DataFrame:
    """Per model, N under each half-capacity definition: how many more samples our
    N_at_max/2 asks a net to hold than the paper's C/2."""
    main = main_rows(rows)
    out = []
    for model, g in main.groupby("model", sort=False):
        n = g.drop_duplicates("definition").set_index("definition").n_samples
        if {"N_at_max/2", "C/2"} <= set(n.index):
            out.append({"family": g.family.iloc[0], "model": model,
                        "params": int(g.params.iloc[0]),
                        "N_at_max": g.n_at_max.iloc[0] if "n_at_max" in g else None,
                        "C (bits)": g.capacity_bits.iloc[0] if "capacity_bits" in g else None,
                        "N at N_at_max/2": int(n["N_at_max/2"]), "N at C/2": int(n["C/2"]),
                        "extra samples": n["N_at_max/2"] / n["C/2"] - 1})
    return pd.DataFrame(out)


def lossless_sensitivity(rows: pd.DataFrame,
                         tolerances: Sequence[float] = SENSITIVITY_TOLERANCES,
                         definitions: Sequence[str] = DEFINITIONS) -> pd.DataFrame:
    """Fewest lossless bits at each tolerance, per model, capacity definition and seed (and
    the seeds' mean accuracy, as the chapter's verdicts use), main setting: how much the
    verdict "lossless down to b bits" depends on the tolerance."""
    main = rows[rows.study.fillna(STUDY) == STUDY] if "study" in rows else rows
    main = main[(main.recipe == "ours") & main.main & main.definition.isin(definitions)]
    parts = []
    for per_seed in (True, False):
        for tol in tolerances:
            t = main_rows(fewest_lossless_bits(main, tol, per_seed))
            if not per_seed:
                t = t.assign(seed="mean")
            parts.append(t.assign(tolerance=tol))
    if not parts or not sum(len(p) for p in parts):
        return pd.DataFrame()
    t = pd.concat(parts, ignore_index=True)
    t["bits"] = [shown_bits(b, w) for b, w in zip(t.fewest_lossless_bits, t.widest,
                                                   strict=True)]
    t["tolerance"] = [f"{100 * v:g} pt" for v in t.tolerance]
    # seeds numbered 1, 2, ... within each setting (the data seeds are long hashes)
    nets = t[t.seed != "mean"]
    number = nets.groupby(["model", "definition"]).seed.rank(method="dense").astype(int)
    t["seed"] = t.seed.astype(str)
    t.loc[nets.index, "seed"] = number.astype(str)
    order = {d: i for i, d in enumerate(definitions)}
    wide = t.pivot_table(index=["family", "model", "definition", "n_samples", "seed"],
                         columns="tolerance", values="bits", aggfunc="first", sort=False)
    wide = wide[[f"{100 * v:g} pt" for v in tolerances]].reset_index()
    wide.columns.name = None
    wide["_d"] = wide.definition.map(order)
    wide["_m"] = wide.seed == "mean"
    return wide.sort_values(["family", "model", "_d", "_m"], kind="stable").drop(
        columns=["_d", "_m"]).reset_index(drop=True)


def fewer_samples_fewer_bits(table: pd.DataFrame) -> pd.DataFrame:
    """Per model (main setting): its fewest lossless bits at every measured N / P, "> widest"
    counted as worse than the widest width (not dropped), and whether they never fall as
    N / P grows: the data behind the paper's Fig. 4 claim."""
    out = []
    for (fam, model), g in main_rows(table).groupby(["family", "model"], sort=False):
        g = g.sort_values("data_per_param")
        ranked = ranked_bits(g)
        out.append({"family": fam, "model": model, "points": len(g),
                    "N/P": ", ".join(f"{r:.2f}" for r in g.data_per_param),
                    "fewest lossless bits": ", ".join(
                        shown_bits(b, w) for b, w in zip(g.fewest_lossless_bits, g.widest,
                                                         strict=True)),
                    "monotone": bool(ranked.is_monotonic_increasing) if len(g) >= 2 else None})
    return pd.DataFrame(out)


def half_capacity_lines(table: pd.DataFrame, sizes: pd.DataFrame) -> list[str]:
    """Sentences for Fig. 3(b): how much larger our N_at_max/2 is than the paper's C/2, and
    each family's fewest lossless bits under both, beside the paper's FCDNN at C/2."""
    lines = []
    if len(sizes):
        extra = 100 * sizes["extra samples"]
        lines.append(f"N_at_max/2 asks for {extra.min():.0f} to {extra.max():.0f} % more "
                     f"samples than C/2 ({', '.join(sizes.model)}).")
    half_ref = reference.value("quantization.half_capacity_fc")
    main = main_rows(table)
    for fam, g in main.groupby("family", sort=False):
        parts = []
        for d in ("N_at_max/2", "C/2"):
            b = g[g.definition == d]
            if len(b):
                parts.append(f"{d} " + ", ".join(
                    f"{m} {shown_bits(x, w)}" for m, x, w in
                    zip(b.model, b.fewest_lossless_bits, b.widest, strict=True)))
        if parts:
            ref = (f" (the paper: its {half_ref['depth']}x{half_ref['width']} FCDNN at C/2 "
                   f"kept every sample at {half_ref['lossless_bits']} bits)") if fam == "fc" \
                else ""
            lines.append(f"{FAMILY_NAMES[fam]}s, fewest lossless bits at half capacity: "
                         f"{'; '.join(parts)}{ref}.")
    return lines


def sensitivity_lines(sens: pd.DataFrame) -> list[str]:
    """Sentences for the sensitivity table: how far the fewest lossless bits move between
    the strictest and the loosest tolerance, and how far seeds of one setting disagree."""
    if sens.empty:
        return []
    cols = [c for c in sens.columns if c.endswith(" pt")]
    nets = sens[sens.seed != "mean"]

    def value(v: str) -> float:  # "> w" counts as w + 1
        return float(v[1:]) + 1 if v.startswith(">") else float(v)

    lo, hi = nets[cols[0]].map(value), nets[cols[-1]].map(value)
    drop = lo - hi
    lines = [f"Per net, loosening the tolerance from {cols[0]} to {cols[-1]} lowers the "
             f"fewest lossless bits by {drop.min():.0f} to {drop.max():.0f} bits (mean "
             f"{drop.mean():.1f}, {len(nets)} nets)."]
    spread = []
    for c in cols:
        s = nets.groupby(["model", "definition"])[c].agg(lambda v: v.map(value).max()
                                                         - v.map(value).min())
        spread.append(f"{s.max():.0f} at {c}")
    lines.append(f"Seeds of one model and setting disagree by at most {', '.join(spread)}.")
    return lines


def recipe_lines(rows: pd.DataFrame, study: QuantizationStudy) -> list[str]:
    """What the FCDNNs at full capacity were trained with (learning rates as recorded),
    beside the learning-rate range the paper searched."""
    lo, hi = reference.value("fcdnn.lr_range")
    fc = rows[(rows.family == "fc") & rows.bits.isna() & (rows.capacity_fraction == 1.0)]
    if "definition" in fc:
        fc = fc[fc.definition == definition("n_at_max", 1.0)]
    parts = []
    for name, label in (("ours", "our recipe"), ("paper", "the paper-range recipe")):
        g = fc[fc.recipe == name]
        if len(g):
            r = study.recipe("fc", name)
            lrs = ", ".join(f"{v:g}" for v in sorted(set(g.lr)))
            why = (f"as recorded: the capacity chapter's winning rate, or a third of it for a "
                   f"net that stalled; the recipe's own lr {r.lr:g} applies only without one"
                   if sorted(set(g.lr)) != [r.lr] else "the recipe's")
            parts.append(f"{label} ({r.optimizer.upper()}, {r.schedule} decay, lr {lrs} "
                         f"({why}), {r.epochs} epochs)")
    if not parts:
        return []
    outside = sorted({float(v) for v in fc.lr if not lo <= v <= hi})
    where = (f"lr {', '.join(f'{v:g}' for v in outside)} lies outside it" if outside
             else "every lr lies inside it")
    return [f"The FCDNNs at full capacity were trained with {' and with '.join(parts)}; the "
            f"paper searched lr {lo} to {hi} ({where})."]


def what_was_quantized(rows: pd.DataFrame, study: QuantizationStudy) -> str:
    """Which nets this page quantized, per family, and which family it left out: the
    sentence under the chapter's first code cell, written from the records."""
    names = {"fc": "FCDNNs", "cnn": "CNNs", "rnn": "LSTMs"}
    parts, left = [], []
    for fam, name in names.items():
        mine = rows[rows.family == fam] if len(rows) else rows
        if len(mine):
            parts.append(f"{name} {', '.join(dict.fromkeys(mine.model))}")
        elif not study.models(fam):
            left.append(name)
    seeds = rows.seed.nunique() if len(rows) else 0
    units = rows.key.nunique() if len(rows) else 0
    text = (f"Quantized here: {'; '.join(parts) or 'nothing'} ({units} units, {seeds} seeds "
            f"each, {len(rows):,} measurements).")
    if left:
        text += f" Not under this profile: {', '.join(left)}."
    return text
