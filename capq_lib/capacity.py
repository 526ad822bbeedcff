"""Capacity measurement: train at many N (and a few hyperparameters), C = max over them of I.

One *trial* trains one net on one random set; its outcome is cached, so a sweep that is
interrupted resumes with the trials it had not finished. The capacity of an architecture
is the largest Eq. (1) value over its trials, taking for each N the best accuracy any
hyperparameter setting reached (Sec. 4.1: "the best accuracy obtained when attempted with
different hyper parameters").
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import pandas as pd
import torch

from . import progress as progress_bars
from . import validate
from .datasets import check_size, memorization_set
from .devices import describe, resolve_device
from .info import bits_per_parameter, mutual_information
from .models import FCDNNSpec, build_fcdnn
from .results import ResultsCache
from .train import TrainConfig, memorize

TRIAL_KIND = "memorization-trial"
FCDNN_KIND = "fcdnn-capacity"


@dataclass(frozen=True)
class MemorizationTrial:
    """One net of ``spec`` trained on ``n_samples`` random samples."""

    spec: FCDNNSpec
    n_samples: int
    train: TrainConfig
    data_seed: int = 0
    init_seed: int = 0

    def __post_init__(self) -> None:
        check_size(self.n_samples, self.spec.n_in)
        validate.integer("data_seed", self.data_seed, lo=0)
        validate.integer("init_seed", self.init_seed, lo=0)

    def config(self) -> dict:
        return {"model": {"family": "fcdnn", **asdict(self.spec)}, "n_samples": self.n_samples,
                "train": self.train.as_dict(), "data_seed": self.data_seed,
                "init_seed": self.init_seed}

    def run(self, device: torch.device) -> dict:
        """Train and report p, I and the effort it took."""
        data = memorization_set(self.n_samples, self.spec.n_in, self.data_seed)
        model = build_fcdnn(self.spec, self.init_seed).to(device)
        out = memorize(model, data, self.train, seed=self.init_seed)
        return {"accuracy": out.accuracy, "loss": out.loss, "epochs_run": out.epochs_run,
                "mutual_info": mutual_information(self.n_samples, out.accuracy),
                "train_wall_s": out.wall_time_s}


def run_trials(trials: list[MemorizationTrial], device: str = "auto",
               cache: ResultsCache | None = None, progress: bool = True,
               desc: str = "trials") -> pd.DataFrame:
    """Run (or read from the cache) every trial; one row per trial."""
    dev = resolve_device(device)
    cache = cache or ResultsCache()
    rows = []
    bar_ = progress_bars.bar(trials, desc=desc, disable=not progress, unit="net")
    for trial in bar_:
        bar_.set_postfix_str(f"{trial.spec.name} N={trial.n_samples} lr={trial.train.lr:g}")
        record, hit = cache.compute(TRIAL_KIND, trial.config(), lambda t=trial: t.run(dev),
                                    describe(dev))
        rows.append({"model": trial.spec.name, "width": trial.spec.width,
                     "depth": trial.spec.depth, "params": trial.spec.n_params,
                     "n_samples": trial.n_samples, "lr": trial.train.lr,
                     "momentum": trial.train.momentum, "schedule": trial.train.schedule,
                     "data_seed": trial.data_seed, "init_seed": trial.init_seed,
                     **record["result"], "cached": hit})
    return pd.DataFrame(rows)


def capacity_curve(trials: pd.DataFrame) -> pd.DataFrame:
    """Per model and N: the best accuracy over hyperparameters and seeds, and its I."""
    best = trials.loc[trials.groupby(["model", "n_samples"])["accuracy"].idxmax()]
    best = best.sort_values(["depth", "width", "n_samples"]).reset_index(drop=True)
    best["mutual_info"] = mutual_information(best["n_samples"], best["accuracy"])
    return best


def capacity_summary(trials: pd.DataFrame) -> pd.DataFrame:
    """Per model: capacity C = max_N I, the N and p there, and bits per parameter."""
    curve = capacity_curve(trials)
    at_max = curve.loc[curve.groupby("model")["mutual_info"].idxmax()]
    swept = {m: sorted(g.n_samples.tolist()) for m, g in curve.groupby("model")}
    out = pd.DataFrame({
        "model": at_max["model"], "width": at_max["width"], "depth": at_max["depth"],
        "params": at_max["params"], "capacity_bits": at_max["mutual_info"],
        "bits_per_param": bits_per_parameter(at_max["mutual_info"], at_max["params"]),
        "n_at_max": at_max["n_samples"], "p_at_max": at_max["accuracy"],
        "lr_at_max": at_max["lr"],
        "n_swept": [swept[m] for m in at_max["model"]],
        # a maximum at either end of the N grid means the grid missed the true peak
        "interior_max": [swept[m][0] < n < swept[m][-1]
                         for m, n in zip(at_max["model"], at_max["n_samples"], strict=True)],
    })
    return out.sort_values(["depth", "width"]).reset_index(drop=True)


@dataclass(frozen=True)
class FCDNNCapacityStudy:
    """An FCDNN capacity sweep: architectures x N grid (multiples of params) x lr x seeds."""

    widths: tuple[int, ...] = (16, 32, 64)
    depths: tuple[int, ...] = (1, 2)
    n_per_param: tuple[float, ...] = (1.0, 1.5, 2.0, 2.5, 3.0, 4.0)
    lrs: tuple[float, ...] = (0.1, 0.3)
    epochs: int = 1500
    momentum: float = 0.9
    schedule: str = "cosine"
    decay_factor: float = 0.1
    batches_per_epoch: int = 8
    seeds: int = 1
    skip: tuple[tuple[int, int], ...] = field(default=())
    profile: str = "custom"

    def __post_init__(self) -> None:
        for name in ("widths", "depths", "n_per_param", "lrs"):
            object.__setattr__(self, name, validate.non_empty(name, getattr(self, name)))
        for w in self.widths:
            validate.integer("widths", w, lo=1, hi=65536)
        for d in self.depths:
            validate.integer("depths", d, lo=1, hi=64)
        for r in self.n_per_param:
            validate.number("n_per_param", r, lo=0.0, hi=1000.0, lo_open=True)
        validate.integer("seeds", self.seeds, lo=1, hi=100)
        object.__setattr__(self, "skip", tuple(tuple(s) for s in self.skip))
        self.trials()  # every (N, width) pair must be possible: fail before any training

    def specs(self) -> list[FCDNNSpec]:
        return [FCDNNSpec(w, d) for d in self.depths for w in self.widths
                if (w, d) not in self.skip]

    def n_grid(self, spec: FCDNNSpec) -> list[int]:
        return sorted({max(1, int(round(r * spec.n_params, -1) or 1)) for r in self.n_per_param})

    def trials(self) -> list[MemorizationTrial]:
        out = []
        for spec in self.specs():
            for n in self.n_grid(spec):
                for lr in self.lrs:
                    train = TrainConfig(epochs=self.epochs, lr=lr, momentum=self.momentum,
                                        schedule=self.schedule, decay_factor=self.decay_factor,
                                        batches_per_epoch=self.batches_per_epoch)
                    for seed in range(self.seeds):
                        out.append(MemorizationTrial(spec, n, train, seed, seed))
        return out


@dataclass
class CapacityResult:
    trials: pd.DataFrame
    curve: pd.DataFrame
    summary: pd.DataFrame


def fcdnn_capacity(study: FCDNNCapacityStudy, device: str = "auto",
                   cache: ResultsCache | None = None, progress: bool = True) -> CapacityResult:
    """Run the study (cached per trial) and record one capacity summary per architecture."""
    cache = cache or ResultsCache()
    trials = run_trials(study.trials(), device, cache, progress, desc=FCDNN_KIND)
    summary = capacity_summary(trials)
    dev = describe(resolve_device(device))
    for row in summary.to_dict("records"):
        wall = float(trials.loc[trials.model == row["model"], "train_wall_s"].sum())
        config = {"study": asdict(study), "model": row["model"]}
        cache.put(FCDNN_KIND, config, {**row, "profile": study.profile}, dev, wall)
    return CapacityResult(trials, capacity_curve(trials), summary)
