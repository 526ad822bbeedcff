"""The paper's three-stage capacity search (Sec. 3.1) on Optuna's ask-and-tell interface.

Stage 1 trains a grid of N (multiples of the parameter count) with one default recipe and
finds N1, the largest N whose accuracy is still at least ``target_accuracy`` ("slightly
lower than 1"). Stage 2 trains a coarse grid of learning rate x momentum (x decay factor)
at N near N1; its best points set the bounds of stage 3, a Gaussian-process Bayesian
optimisation over the hyperparameters *and* N, with Eq. (1)'s I as the objective.

Two stages follow, so that what the search reports is a maximum and not an anecdote.
Stage 4 *brackets* the peak of I: while no trained N on one side of the best N holds less
information, it trains the best recipe one geometric step past the last N on that side,
within a budget (a peak left unbracketed is only a lower bound). Stage 5 *replicates* the
winner: the best (N, recipe) trained again with fresh data and initializations, so the
capacity is a mean with a spread, and the search's own maximum, biased upwards by being the
best of many single-seed trials, can be shown beside it.

Trials are claimed K at a time under the storage's lock and trained as one population.
Stages 1, 2, 4 and 5 are plans that follow from finished trials, so a claimed plan item is
never run twice; stage 3 has a budget that is never overshot. Every trial persists in the
storage when it finishes, so a killed worker loses only the trials it was running, and a
rerun picks up the rest.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

import optuna
import pandas as pd
import torch
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.trial import TrialState

from capq_lib.core import validate
from capq_lib.core.devices import describe, resolve_device
from capq_lib.core.info import mutual_information
from capq_lib.core.progress import bar as progress_bar
from capq_lib.core.seeds import seed_from_text
from capq_lib.engine.population import Member, train_members
from capq_lib.engine.train import SCHEDULES, Recipe
from capq_lib.experiments.maxima import Peak, best_per_n, peak
from capq_lib.experiments.storage import Heartbeat, Storage, fail_abandoned, mark_claimed
from capq_lib.nets.datasets import check_size
from capq_lib.nets.models import TABLE1, CNNSpec, FCDNNSpec, LSTMSpec, ModelSpec
from capq_lib.nets.transformer import TransformerSpec

SEED_ATTR = "seeded_from"


@dataclass(frozen=True)
class CapacityStudy:
    """How each architecture's capacity is searched; subclasses say which architectures."""

    experiment: ClassVar[str] = ""
    #: fields that pick architectures, not how they are searched
    selection: ClassVar[tuple[str, ...]] = ()
    profile: str = "custom"
    # training, shared by every trial
    #: an int, or per model name ({"A": 300, "D": 200}) where sizes differ a lot in cost
    epochs: int | dict[str, int] = 2000
    batches_per_epoch: int = 8
    schedule: str = "cosine"
    optimizer: str = "sgd"
    eval_every: int = 25
    population: int = 16
    #: initializations raced per trial (Recipe.restarts) and when the race is decided
    restarts: int = 1
    race_at: float = 0.25
    # stage 1: N grid with one recipe
    stage1_n_per_param: tuple[float, ...] = (1.0, 1.5, 2.0, 2.5, 3.0, 4.0)
    stage1_lr: float = 0.1
    stage1_momentum: float = 0.9
    target_accuracy: float = 0.99
    # stage 2: coarse hyperparameter grid near N1
    stage2_lrs: tuple[float, ...] = (0.03, 0.1, 0.3)
    stage2_momenta: tuple[float, ...] = (0.8, 0.9, 0.95)
    stage2_decay_factors: tuple[float, ...] = (0.1,)
    stage2_n_factors: tuple[float, ...] = (1.0, 1.25)
    # stage 3: Bayesian optimisation inside the bounds stage 2 sets, within these limits
    stage3_trials: int = 8
    lr_range: tuple[float, float] = (0.001, 1.0)
    momentum_range: tuple[float, float] = (0.5, 0.99)
    decay_range: tuple[float, float] = (0.1, 0.5)
    # stage 4: extend N by this factor past the edge of what was trained until the peak of I
    # is bracketed, at most this many trials per architecture
    bracket_factor: float = 1.25
    bracket_trials: int = 4
    # stage 4 also refines a peak where every sample was memorized: this many N between it
    # and the next trained N, per round, until the peak is below p = 1 or that step is
    # under 5 %, at most refine_trials per architecture
    refine_points: int = 3
    refine_trials: int = 6
    # stage 5: the winning (N, recipe) trained again with this many fresh seeds
    replicates: int = 3
    seed: int = 0

    def __post_init__(self) -> None:
        validate.lists_to_tuples(self)
        for name in ("stage1_n_per_param", "stage2_lrs", "stage2_momenta",
                     "stage2_decay_factors"):
            object.__setattr__(self, name, validate.non_empty(name, getattr(self, name)))
        # no N factors: no stage 2 (a profile that can afford only the N grid)
        object.__setattr__(self, "stage2_n_factors", tuple(self.stage2_n_factors))
        if not self.stage2_n_factors and self.stage3_trials:
            raise validate.ConfigError(
                "stage3_trials must be 0 when stage2_n_factors is empty: stage 3 searches "
                "around stage 2's best trials")
        self._check_selection()
        validate.integer("population", self.population, lo=1, hi=100000)
        validate.integer("stage3_trials", self.stage3_trials, lo=0, hi=100000)
        validate.number("bracket_factor", self.bracket_factor, lo=1.0, hi=10.0, lo_open=True)
        validate.integer("bracket_trials", self.bracket_trials, lo=0, hi=1000)
        validate.integer("refine_points", self.refine_points, lo=1, hi=64)
        validate.integer("refine_trials", self.refine_trials, lo=0, hi=1000)
        validate.integer("replicates", self.replicates, lo=0, hi=1000)
        validate.number("target_accuracy", self.target_accuracy, lo=0.5, hi=1.0)
        for r in self.stage1_n_per_param:
            validate.number("stage1_n_per_param", r, lo=0.0, hi=1000.0, lo_open=True)
        for r in self.stage2_n_factors:
            validate.number("stage2_n_factors", r, lo=0.0, hi=100.0, lo_open=True)
        for name in ("lr_range", "momentum_range", "decay_range"):
            lo, hi = (validate.number(name, v) for v in getattr(self, name))
            if not lo < hi:
                raise validate.ConfigError(f"{name} must be [low, high] with low < high")
        validate.number("lr_range", self.lr_range[0], lo=0.0, lo_open=True)
        validate.choice("schedule", self.schedule, SCHEDULES)
        if isinstance(self.epochs, dict):
            names = {s.name for s in self.specs()}
            if set(self.epochs) != names:
                raise validate.ConfigError(
                    f"epochs must be an integer or give every model its epochs; models: "
                    f"{', '.join(sorted(names))}, got {sorted(self.epochs)}")
        for spec in self.specs():  # epochs, schedule, optimizer, ... checked as for one net
            self.recipe(spec.name)
        for lr in self.stage2_lrs:
            _inside("stage2_lrs", lr, self.lr_range)
        for m in (*self.stage2_momenta, self.stage1_momentum):
            _inside("stage2_momenta", m, self.momentum_range)
        for d in self.stage2_decay_factors:
            _inside("stage2_decay_factors", d, self.decay_range)
        _inside("stage1_lr", self.stage1_lr, self.lr_range)
        if not self.specs():
            raise validate.ConfigError(f"{', '.join(self.selection)} select no architecture")
        for s in self.searches():
            s.stage1_plan()  # every N must fit its input size: fail before any training

    def _check_selection(self) -> None:
        raise NotImplementedError

    def specs(self) -> list[ModelSpec]:
        raise NotImplementedError

    @classmethod
    def from_namespace(cls, namespace: dict[str, Any]) -> CapacityStudy:
        """Build from a notebook's parameters: every study field found in ``namespace``."""
        return cls(**{f.name: namespace[f.name] for f in fields(cls) if f.name in namespace})

    @classmethod
    def from_parameters(cls, **params: Any) -> CapacityStudy:
        """Build from notebook/profile parameters, refusing names the study does not have."""
        known = {f.name for f in fields(cls)}
        unknown = set(params) - known
        if unknown:
            raise validate.ConfigError(f"unknown study parameter(s) {sorted(unknown)}; "
                                       f"known: {', '.join(sorted(known))}")
        return cls(**params)

    def searches(self) -> list[ArchSearch]:
        return [ArchSearch(spec, self) for spec in self.specs()]

    def search_config(self) -> dict[str, Any]:
        """What decides a study's trials, apart from the architecture and profile. Stages 4
        and 5 follow from the trials before them, so their budgets are left out: a larger
        budget extends a finished study instead of starting a new one."""
        skip = {*self.selection, "profile", "population", "bracket_factor", "bracket_trials",
                "refine_points", "refine_trials", "replicates"}
        if self.restarts == 1:  # no race: the same studies as before races existed
            skip |= {"restarts", "race_at"}
        return {k: v for k, v in asdict(self).items() if k not in skip}

    def recipe(self, model: str | None = None) -> Recipe:
        """How ``model`` is trained in this study (before the search sets lr, momentum and
        decay for each trial)."""
        epochs = self.epochs[model] if isinstance(self.epochs, dict) else self.epochs
        return Recipe(epochs=epochs, schedule=self.schedule,
                           batches_per_epoch=self.batches_per_epoch, eval_every=self.eval_every,
                           optimizer=self.optimizer, restarts=self.restarts,
                           race_at=self.race_at)


@dataclass(frozen=True)
class FCDNNCapacityStudy(CapacityStudy):
    """FCDNNs of the given widths and depths (Sec. 4.1)."""

    experiment: ClassVar[str] = "fcdnn-capacity"
    selection: ClassVar[tuple[str, ...]] = ("widths", "depths", "skip")
    widths: tuple[int, ...] = (16, 32, 64)
    depths: tuple[int, ...] = (1, 2)
    skip: tuple[tuple[int, int], ...] = ()

    def _check_selection(self) -> None:
        for name in ("widths", "depths"):
            object.__setattr__(self, name, validate.non_empty(name, getattr(self, name)))
        for w in self.widths:
            validate.integer("widths", w, lo=1, hi=65536)
        for d in self.depths:
            validate.integer("depths", d, lo=1, hi=64)
        object.__setattr__(self, "skip", tuple(tuple(s) for s in self.skip))

    def specs(self) -> list[ModelSpec]:
        return [FCDNNSpec(w, d) for d in self.depths for w in self.widths
                if (w, d) not in self.skip]


@dataclass(frozen=True)
class FCDNNCNNRecipeStudy(FCDNNCapacityStudy):
    """FCDNNs searched with the CNN chapter's recipe (optimizer, learning rate, batches and
    epochs, raced initializations), so that the two families compare at equal effort."""

    experiment: ClassVar[str] = "fcdnn-capacity-cnn-recipe"

    @classmethod
    def like(cls, cnn: CNNCapacityStudy, widths: tuple[int, ...], depths: tuple[int, ...],
             n_per_param: tuple[float, ...]) -> FCDNNCNNRecipeStudy:
        """The FCDNN study that trains like ``cnn`` (with the epochs of its first model)."""
        shared = {f.name: getattr(cnn, f.name) for f in fields(CapacityStudy)
                  if f.name not in ("stage1_n_per_param", "epochs")}
        return cls(**shared, epochs=cnn.recipe(cnn.models[0]).epochs,
                   stage1_n_per_param=tuple(n_per_param), widths=tuple(widths),
                   depths=tuple(depths))


@dataclass(frozen=True)
class CNNCapacityStudy(CapacityStudy):
    """The memorization CNNs of Table 1, by letter (Sec. 4.2)."""

    experiment: ClassVar[str] = "cnn-capacity"
    selection: ClassVar[tuple[str, ...]] = ("models",)
    models: tuple[str, ...] = ("A", "D")

    def _check_selection(self) -> None:
        object.__setattr__(self, "models", validate.non_empty("models", self.models))
        for m in self.models:
            validate.choice("models", m, TABLE1)

    def specs(self) -> list[ModelSpec]:
        return [CNNSpec(m) for m in self.models]


@dataclass(frozen=True)
class RNNCapacityStudy(CapacityStudy):
    """One-layer LSTM classifiers of the given sizes over ``steps`` inputs (Sec. 4.3)."""

    experiment: ClassVar[str] = "rnn-capacity"
    selection: ClassVar[tuple[str, ...]] = ("units",)
    units: tuple[int, ...] = (8, 16)
    n_in: int = 32
    steps: int = 5

    def _check_selection(self) -> None:
        object.__setattr__(self, "units", validate.non_empty("units", self.units))
        for u in self.units:
            validate.integer("units", u, lo=1, hi=4096)

    def specs(self) -> list[ModelSpec]:
        return [LSTMSpec(u, self.n_in, self.steps) for u in self.units]


def parse_transformer(name: str) -> tuple[int, int]:
    """'1x32' -> (layers, width)."""
    try:
        layers, width = (int(v) for v in str(name).lower().removeprefix("t").split("x"))
    except ValueError:
        raise validate.ConfigError(f"models must name transformers as LAYERSxWIDTH (e.g. "
                                   f"'1x32'); got {name!r}") from None
    return layers, width


@dataclass(frozen=True)
class TransformerCapacityStudy(CapacityStudy):
    """Transformer classifiers on exactly the LSTM chapter's data (``steps`` random binary
    vectors of ``n_in`` bits, one fair-coin label per sequence), each step a token through
    a linear embedding, the label read at the last position: the same search, bracket,
    replicates and Eq. (1) as the other families."""

    experiment: ClassVar[str] = "transformer-capacity"
    selection: ClassVar[tuple[str, ...]] = ("models",)
    models: tuple[str, ...] = ("1x16", "1x32", "2x32")
    heads: int = 2
    n_in: int = 32
    steps: int = 5

    def _check_selection(self) -> None:
        object.__setattr__(self, "models", validate.non_empty("models", self.models))
        for m in self.models:
            parse_transformer(m)
        validate.integer("heads", self.heads, lo=1, hi=64)

    def specs(self) -> list[ModelSpec]:
        return [TransformerSpec(*parse_transformer(m), heads=self.heads, n_in=self.n_in,
                                steps=self.steps) for m in self.models]


STUDIES: dict[str, type[CapacityStudy]] = {
    c.experiment: c for c in (FCDNNCapacityStudy, CNNCapacityStudy, RNNCapacityStudy,
                              TransformerCapacityStudy)}


#: the plan-key prefix of stage-4 trials that refine a peak at p = 1
REFINE_TAG = "s4r:"


def refining(trials: pd.DataFrame) -> pd.Series:
    """Which trials refine a perfect peak (the rest of stage 4 brackets it)."""
    if "plan" not in trials:
        return pd.Series(False, index=trials.index)
    return trials.plan.astype(str).str.startswith(REFINE_TAG)


def replicate_tag(n_samples: int, lr: float, momentum: float, decay_factor: float) -> str:
    """The plan-key prefix of the replicates of a winner (stage 5)."""
    return f"s5:{n_samples}:{lr:.6g}:{momentum:.6g}:{decay_factor:.6g}"


def _inside(name: str, value: float, bounds: tuple[float, float]) -> None:
    if not bounds[0] <= value <= bounds[1]:
        raise validate.ConfigError(f"{name} must lie in [{bounds[0]}, {bounds[1]}], got {value}")


def _round_n(n: float) -> int:
    return max(1, int(round(n, -1) or round(n)))


@dataclass(frozen=True)
class Planned:
    """One trial to run: where it comes from and its settings."""

    stage: int
    key: str
    params: dict[str, Any]


@dataclass(frozen=True)
class ArchSearch:
    """The capacity search of one architecture: its studies, plans and bounds."""

    spec: ModelSpec
    study: CapacityStudy

    @property
    def name(self) -> str:
        blob = json.dumps(self.study.search_config(), sort_keys=True)
        digest = hashlib.sha256(blob.encode()).hexdigest()[:10]
        return f"{self.study.experiment}/{self.study.profile}/{self.spec.name}/{digest}"

    def attrs(self) -> dict[str, Any]:
        return {"experiment": self.study.experiment, "profile": self.study.profile,
                "family": type(self.spec).__name__, **asdict(self.spec),
                "search": self.study.search_config()}

    @property
    def n_in(self) -> int:
        """Bits per sample: distinct samples need N < 2^n_in."""
        return math.prod(self.spec.input_shape)

    def check_n(self, n: int) -> int:
        check_size(n, self.n_in)
        return n

    def n_bounds(self) -> tuple[int, int]:
        """The widest N range any stage may use: the stage-1 grid, stretched by half."""
        grid = [_round_n(r * self.spec.n_params) for r in self.study.stage1_n_per_param]
        hi = min(int(max(grid) * 1.5), 2 ** self.n_in - 1)
        return max(1, min(grid)), max(hi, max(grid))

    def distributions(self, bounds: dict[str, tuple[float, float]] | None = None) -> dict:
        s = self.study
        b = bounds or {"lr": s.lr_range, "momentum": s.momentum_range,
                       "decay_factor": s.decay_range, "n_samples": self.n_bounds()}
        out = {"n_samples": IntDistribution(int(b["n_samples"][0]), int(b["n_samples"][1]),
                                            log=True),
               "lr": FloatDistribution(*b["lr"], log=True),
               "momentum": FloatDistribution(*b["momentum"])}
        if s.schedule == "step":
            out["decay_factor"] = FloatDistribution(*b["decay_factor"])
        return out

    def stage1_plan(self) -> list[Planned]:
        s = self.study
        out = []
        for i, r in enumerate(s.stage1_n_per_param):
            n = self.check_n(_round_n(r * self.spec.n_params))
            out.append(Planned(1, f"s1:{i}", {"n_samples": n, "lr": s.stage1_lr,
                                              "momentum": s.stage1_momentum,
                                              "decay_factor": s.stage2_decay_factors[0]}))
        return out

    def n1(self, stage1: pd.DataFrame) -> int:
        """The largest N of stage 1 still memorized to ``target_accuracy``."""
        ok = stage1[stage1.accuracy >= self.study.target_accuracy]
        return int(ok.n_samples.max() if len(ok) else stage1.n_samples.min())

    def stage2_plan(self, stage1: pd.DataFrame) -> list[Planned]:
        s, n1 = self.study, self.n1(stage1)
        lo, hi = self.n_bounds()
        out, i = [], 0
        for f in s.stage2_n_factors:
            n = self.check_n(min(max(_round_n(f * n1), lo), hi))
            for lr in s.stage2_lrs:
                for m in s.stage2_momenta:
                    for d in s.stage2_decay_factors if s.schedule == "step" else (
                            s.stage2_decay_factors[0],):
                        out.append(Planned(2, f"s2:{i}", {"n_samples": n, "lr": lr,
                                                          "momentum": m, "decay_factor": d}))
                        i += 1
        return out

    def winner(self, searched: pd.DataFrame) -> pd.Series:
        """The trial at the peak of I: the best accuracy at the best N (stages 1-4)."""
        curve = best_per_n(searched.assign(model=self.spec.name, params=self.spec.n_params))
        n_star = peak(curve).n_at_max
        at = searched[searched.n_samples == n_star]
        return at.loc[at.accuracy.idxmax()]

    def _recipe(self, row: pd.Series) -> dict[str, Any]:
        decay = row.get("decay_factor")
        if decay is None or decay != decay:
            decay = self.study.stage2_decay_factors[0]
        return {"lr": float(row.lr), "momentum": float(row.momentum),
                "decay_factor": float(decay)}

    def bracket_plan(self, searched: pd.DataFrame) -> list[Planned]:
        """Stage 4: the next N to train with the winner's recipe, one geometric step past the
        largest (smallest) N trained when no N on that side holds less I; once both sides
        do, and the peak memorized every sample (I = N, so more lies above it), N between
        the peak and the next trained N (``refine``); nothing when the peak is a maximum,
        the budgets are spent or the inputs cannot hold more samples."""
        s = self.study
        curve = best_per_n(searched.assign(model=self.spec.name, params=self.spec.n_params))
        top = peak(curve)
        if top.bracketed:
            return []
        recipe = self._recipe(self.winner(searched))
        if top.lower_above and top.lower_below:
            return self.refine(searched, top, recipe)
        spent = int(((searched.stage == 4) & ~refining(searched)).sum())
        if spent >= s.bracket_trials:
            return []
        out = []
        if not top.lower_above:
            n = _round_n(curve.n_samples.max() * s.bracket_factor)
            if n < 2 ** self.n_in:
                out.append(Planned(4, f"s4:{n}", {"n_samples": n, **recipe}))
        if not top.lower_below and curve.n_samples.min() > 1:
            n = max(1, _round_n(curve.n_samples.min() / s.bracket_factor))
            if n < curve.n_samples.min():
                out.append(Planned(4, f"s4:{n}", {"n_samples": n, **recipe}))
        return out[:s.bracket_trials - spent]

    def refine(self, searched: pd.DataFrame, top: Peak, recipe: dict[str, Any]
               ) -> list[Planned]:
        """Geometric steps between a perfect peak and the next trained N above it (exact
        integers, so even a small net gets there), within ``refine_trials``."""
        s = self.study
        left = s.refine_trials - int(refining(searched).sum())
        if left <= 0 or top.n_above is None:
            return []
        lo, hi = top.n_at_max, top.n_above
        ns = sorted({int(round(lo * (hi / lo) ** (i / (s.refine_points + 1))))
                     for i in range(1, s.refine_points + 1)} - {lo, hi})
        ns = [n for n in ns if lo < n < hi and n < 2 ** self.n_in]
        return [Planned(4, f"{REFINE_TAG}{n}", {"n_samples": n, **recipe})
                for n in ns[:left]]

    def replicate_plan(self, searched: pd.DataFrame) -> list[Planned]:
        """Stage 5: the winner's N and recipe, ``replicates`` times, each with its own data
        and initialization (the plan key names the winner, so a new winner gets new ones)."""
        w = self.winner(searched)
        recipe = self._recipe(w)
        n = int(w.n_samples)
        tag = replicate_tag(n, **recipe)
        return [Planned(5, f"{tag}:{j}", {"n_samples": n, **recipe})
                for j in range(self.study.replicates)]

    def stage3_bounds(self, stage2: pd.DataFrame) -> dict[str, tuple[float, float]]:
        """Bounds around stage 2's best quarter, one grid step wider, inside the limits."""
        s = self.study
        top = stage2.nlargest(max(1, math.ceil(len(stage2) / 4)), "mutual_info")
        lrs = sorted(s.stage2_lrs)
        step = (lrs[-1] / lrs[0]) ** (1 / max(1, len(lrs) - 1)) if len(lrs) > 1 else 3.0
        lo_n, hi_n = self.n_bounds()
        return {
            "lr": (max(s.lr_range[0], top.lr.min() / step),
                   min(s.lr_range[1], top.lr.max() * step)),
            "momentum": (max(s.momentum_range[0], top.momentum.min() - 0.05),
                         min(s.momentum_range[1], top.momentum.max() + 0.05)),
            "decay_factor": (max(s.decay_range[0], top.decay_factor.min() - 0.1),
                             min(s.decay_range[1], top.decay_factor.max() + 0.1)),
            "n_samples": (max(lo_n, int(top.n_samples.min() * 0.8)),
                          min(hi_n, int(top.n_samples.max() * 1.3) + 1)),
        }


def open_study(storage: Storage, name: str, attrs: dict[str, Any],
               sampler: optuna.samplers.BaseSampler | None = None) -> optuna.Study:
    """Create or load a study, refusing one made for another architecture or profile."""
    study = optuna.create_study(study_name=name, storage=storage.optuna, direction="maximize",
                                load_if_exists=True, sampler=sampler)
    attrs = json.loads(json.dumps(attrs))  # as stored: tuples become lists
    have = study.user_attrs
    if not have:
        for k, v in attrs.items():
            study.set_user_attr(k, v)
        return study
    for k, v in attrs.items():
        if k in have and have[k] != v:
            raise validate.ConfigError(
                f"study {name!r} in storage {storage.url} was created with {k}="
                f"{have[k]!r}, not {k}={v!r} as asked; choose another storage or profile")
    return study


def trials_frame(study: optuna.Study, states: tuple = (TrialState.COMPLETE,)) -> pd.DataFrame:
    rows = []
    for t in study.get_trials(deepcopy=False, states=states):
        if SEED_ATTR in t.user_attrs:
            continue
        rows.append({"number": t.number, "state": t.state.name, **t.params, **t.user_attrs,
                     "value": t.value})
    cols = ["number", "state", "n_samples", "lr", "momentum", "stage", "plan", "accuracy",
            "mutual_info", "value"]
    return pd.DataFrame(rows, columns=list(dict.fromkeys(cols + [k for r in rows for k in r])))


@dataclass
class Claim:
    status: str  # "work" | "wait" | "done"
    study: optuna.Study | None = None
    trials: list[tuple[optuna.trial.Trial, Planned]] | None = None


def _ask_planned(study: optuna.Study, arch: ArchSearch, todo: list[Planned], k: int) -> Claim:
    out = []
    for item in todo[:k]:
        dists = arch.distributions()
        lo, hi = dists["n_samples"].low, dists["n_samples"].high
        n = int(item.params["n_samples"])  # stage 4 may step outside the grid's range
        dists["n_samples"] = IntDistribution(min(lo, n), max(hi, n), log=True)
        params = {name: item.params[name] for name in dists}
        study.enqueue_trial(params, user_attrs={"stage": item.stage, "plan": item.key},
                            skip_if_exists=False)
        trial = study.ask(dists)
        mark_claimed(study, trial)
        out.append((trial, Planned(item.stage, item.key, {**item.params, **trial.params})))
    return Claim("work", study, out)


def claim(arch: ArchSearch, storage: Storage, k: int) -> Claim:
    """Under the storage lock: fail dead workers' trials, then claim up to k trials of the
    first stage with work left (a stage waits for the running trials of the one before)."""
    with storage.lock():
        study = open_study(storage, arch.name, arch.attrs())
        fail_abandoned(study)
        frame = trials_frame(study, (TrialState.COMPLETE, TrialState.RUNNING))
        taken = set(frame.plan.dropna())
        complete = frame[frame.state == "COMPLETE"]
        running = frame[frame.state == "RUNNING"]
        for stage, plan in ((1, arch.stage1_plan), (2, arch.stage2_plan)):
            done_before = complete[complete.stage < stage]
            items = plan() if stage == 1 else plan(done_before[done_before.stage == 1])
            todo = [p for p in items if p.key not in taken]
            if todo:
                return _ask_planned(study, arch, todo, k)
            if (running.stage == stage).any():
                return Claim("wait")
        searched = complete[complete.stage.isin([1, 2, 4])]
        if arch.study.stage3_trials:
            s3 = _claim_stage3(arch, storage, complete, k)
            if s3.status != "done":
                return s3
            s3_done = trials_frame(s3.study, (TrialState.COMPLETE,))
            searched = pd.concat([searched, s3_done], ignore_index=True)
        for stage, plan in ((4, arch.bracket_plan), (5, arch.replicate_plan)):
            if (running.stage == stage).any():
                return Claim("wait")
            todo = [p for p in plan(searched) if p.key not in taken]
            if todo:
                return _ask_planned(study, arch, todo, k)
        return Claim("done")


def _claim_stage3(arch: ArchSearch, storage: Storage, complete: pd.DataFrame, k: int) -> Claim:
    """Stage 3's trials (Bayesian optimisation in the bounds stage 2 set), or "done" with
    the stage-3 study once its budget is met."""
    s3_name = arch.name + "/stage3"
    names = {s.study_name for s in optuna.get_all_study_summaries(storage.optuna)}
    s2 = complete[complete.stage == 2]
    bounds = arch.stage3_bounds(s2)
    sampler = optuna.samplers.GPSampler(seed=arch.study.seed + len(complete),
                                        n_startup_trials=min(4, len(s2)))
    s3 = open_study(storage, s3_name, {**arch.attrs(), "stage": 3}, sampler=sampler)
    if s3_name not in names:
        s3.set_user_attr("bounds", bounds)
        dists = arch.distributions(bounds)
        for _, row in s2.iterrows():  # stage 2's results, where they fit, seed the GP
            params = {n: row[n] for n in dists}
            if all(d.low <= params[n] <= d.high for n, d in dists.items()):
                s3.add_trial(optuna.trial.create_trial(
                    params=params, distributions=dists, value=row["mutual_info"],
                    user_attrs={SEED_ATTR: int(row["number"])}))
    fail_abandoned(s3)
    dists = arch.distributions({k_: tuple(v) for k_, v in s3.user_attrs["bounds"].items()})
    live = trials_frame(s3, (TrialState.COMPLETE, TrialState.RUNNING))
    left = arch.study.stage3_trials - len(live)
    if left <= 0:
        return Claim("wait" if (live.state == "RUNNING").any() else "done", s3)
    out = []
    for _ in range(min(k, left)):
        trial = s3.ask(dists)
        trial.set_user_attr("stage", 3)
        mark_claimed(s3, trial)
        params = {"decay_factor": arch.study.stage2_decay_factors[0], **trial.params}
        out.append((trial, Planned(3, f"s3:{trial.number}", params)))
    return Claim("work", s3, out)


def _seed(key: str, base: int) -> int:
    """A data and init seed per planned trial, the same in every process."""
    return seed_from_text(f"{base}:{key}")


def run_claim(arch: ArchSearch, claim_: Claim, device: torch.device) -> None:
    """Train the claimed trials as one population and report each to the storage."""
    seeds = [_seed(p.key, arch.study.seed) for _, p in claim_.trials]
    recipe = arch.study.recipe(arch.spec.name)
    members = [Member(int(p.params["n_samples"]), s, s,
                      recipe.with_(lr=float(p.params["lr"]), momentum=float(p.params["momentum"]),
                                   decay_factor=float(p.params["decay_factor"])))
               for (_, p), s in zip(claim_.trials, seeds, strict=True)]
    storage = claim_.study._storage
    with Heartbeat(storage, [t._trial_id for t, _ in claim_.trials]):
        out = train_members(arch.spec, members, device)
    where = describe(device)
    for (trial, planned), m, res, seed in zip(claim_.trials, members, out.members, seeds,
                                              strict=True):
        info = mutual_information(m.n_samples, res.accuracy)
        for k, v in {"stage": planned.stage, "accuracy": res.accuracy, "loss": res.loss,
                     "epochs_run": res.epochs_run, "mutual_info": info, "seed": seed,
                     "init_seed": res.init_seed,
                     "decay_factor": m.recipe.decay_factor, "device": where,
                     "population_wall_s": out.wall_time_s,
                     "population_size": len(members)}.items():
            trial.set_user_attr(k, v)
        claim_.study.tell(trial, info)


@dataclass
class WorkerReport:
    trials_run: int
    wall_time_s: float


def run_worker(study: CapacityStudy, device: str = "auto", storage: str | None = None,
               progress: bool = True, poll_s: float = 2.0) -> WorkerReport:
    """Work on every architecture's search until all budgets are met; resumable."""
    dev = resolve_device(device)
    store = Storage(storage)
    searches = study.searches()
    start, ran = time.perf_counter(), 0
    # stage 4 may need fewer trials than its budget: the total is an upper bound
    total = sum(len(a.stage1_plan()) + len(study.stage2_n_factors) * len(study.stage2_lrs)
                * len(study.stage2_momenta) * (len(study.stage2_decay_factors)
                                               if study.schedule == "step" else 1)
                + study.stage3_trials + study.bracket_trials + study.replicates
                for a in searches)
    bar = progress_bar(total=total, desc="capacity search", unit="trial", disable=not progress)
    bar.update(sum(len(arch_trials(a, store)) for a in searches))
    while True:
        pending = worked = False
        for arch in searches:
            c = claim(arch, store, study.population)
            if c.status == "done":
                continue
            pending = True
            if c.status == "work":
                bar.set_postfix_str(f"{arch.spec.name} stage {c.trials[0][1].stage}")
                run_claim(arch, c, dev)
                ran += len(c.trials)
                bar.update(len(c.trials))
                worked = True
        if not pending:
            break
        if not worked:
            time.sleep(poll_s)
    bar.close()
    return WorkerReport(ran, time.perf_counter() - start)


def spec_columns(spec: ModelSpec) -> dict[str, Any]:
    """What tables show of an architecture: its name, parameter counts, family knobs."""
    out: dict[str, Any] = {"model": spec.name, "params": spec.n_params}
    if isinstance(spec, FCDNNSpec):
        out.update(width=spec.width, depth=spec.depth)
    elif isinstance(spec, CNNSpec):
        out.update(params_conv=spec.n_params_conv, params_fc=spec.n_params_fc)
    elif isinstance(spec, TransformerSpec):
        out.update(layers=spec.layers, width=spec.width)
    else:
        out.update(units=spec.units)
    return out


def arch_trials(arch: ArchSearch, storage: Storage) -> pd.DataFrame:
    """Every finished trial of one architecture, both studies, with its model columns."""
    names = {s.study_name for s in optuna.get_all_study_summaries(storage.optuna)}
    frames = []
    for name in (arch.name, arch.name + "/stage3"):
        if name in names:
            frames.append(trials_frame(optuna.load_study(study_name=name,
                                                         storage=storage.optuna)))
    if not frames or all(f.empty for f in frames):
        return pd.DataFrame()
    df = pd.concat([f for f in frames if not f.empty], ignore_index=True)
    for k, v in spec_columns(arch.spec).items():
        df[k] = v
    df["train_wall_s"] = df["population_wall_s"] / df["population_size"]
    return df


def study_trials(study: CapacityStudy, storage: str | None = None) -> pd.DataFrame:
    store = Storage(storage)
    frames = [arch_trials(a, store) for a in study.searches()]
    frames = [f for f in frames if not f.empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def bounds_table(study: CapacityStudy, storage: str | None = None) -> pd.DataFrame:
    """Stage 3's bounds per architecture, as set by stage 2."""
    store = Storage(storage)
    rows = []
    for a in study.searches():
        try:
            s3 = optuna.load_study(study_name=a.name + "/stage3", storage=store.optuna)
        except KeyError:
            continue
        b = s3.user_attrs.get("bounds", {})
        fmt = {"lr": "{:.3g} to {:.3g}", "momentum": "{:.2f} to {:.2f}",
               "decay_factor": "{:.2f} to {:.2f}", "n_samples": "{:,.0f} to {:,.0f}"}
        shown = [k for k in b if k != "decay_factor" or a.study.schedule == "step"]
        rows.append({"model": a.spec.name,
                     **{f"stage-3 {k}": fmt[k].format(*b[k]) for k in shown}})
    return pd.DataFrame(rows)
