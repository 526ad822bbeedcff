"""Capacity measurement: train at many N (and a few hyperparameters), C = max over them of I.

One *trial* trains one net on one random set; its outcome is cached, so a sweep that is
interrupted resumes with the trials it had not finished. The capacity of an architecture
is the largest Eq. (1) value over its trials, taking for each N the best accuracy any
hyperparameter setting reached (Sec. 4.1: "the best accuracy obtained when attempted with
different hyper parameters").
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import pandas as pd
import torch

from . import progress as progress_bars
from . import validate
from .datasets import check_size, memorization_set
from .devices import describe, resolve_device
from .info import bits_per_parameter, conv_bits_per_parameter, mutual_information
from .models import FCDNNSpec, build_fcdnn
from .results import ResultsCache
from .search import CapacityStudy, run_worker, study_trials
from .train import TrainConfig, memorize

TRIAL_KIND = "memorization-trial"
FCDNN_KIND, CNN_KIND, RNN_KIND = "fcdnn-capacity", "cnn-capacity", "rnn-capacity"


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
    best = best.sort_values(["params", "n_samples"]).reset_index(drop=True)
    best["mutual_info"] = mutual_information(best["n_samples"], best["accuracy"])
    return best


#: per-family columns that ``search.spec_columns`` adds and summaries carry along
SPEC_COLUMNS = ("width", "depth", "params_conv", "params_fc", "units")


def capacity_summary(trials: pd.DataFrame) -> pd.DataFrame:
    """Per model: capacity C = max_N I, the N and p there, and bits per parameter."""
    curve = capacity_curve(trials)
    at_max = curve.loc[curve.groupby("model")["mutual_info"].idxmax()]
    swept = {m: sorted(g.n_samples.tolist()) for m, g in curve.groupby("model")}
    out = at_max[["model", "params", *[c for c in SPEC_COLUMNS if c in at_max]]].copy()
    out["capacity_bits"] = at_max["mutual_info"]
    out["bits_per_param"] = bits_per_parameter(at_max["mutual_info"], at_max["params"])
    out["n_at_max"], out["p_at_max"] = at_max["n_samples"], at_max["accuracy"]
    out["lr_at_max"] = at_max["lr"]
    out["n_swept"] = [swept[m] for m in at_max["model"]]
    # a maximum at either end of the N grid means the grid missed the true peak
    out["interior_max"] = [swept[m][0] < n < swept[m][-1]
                           for m, n in zip(at_max["model"], at_max["n_samples"], strict=True)]
    if "params_conv" in out:  # the paper's conv share, assuming 2.3 bits per FC parameter
        out["conv_bits_per_param"] = [
            conv_bits_per_parameter(c, f, v) for c, f, v in
            zip(out.capacity_bits, out.params_fc, out.params_conv, strict=True)]
    return out.sort_values("params").reset_index(drop=True)


@dataclass
class CapacityResult:
    """Every trial, the accuracy-against-N curve of the grid stages, one row per model."""

    trials: pd.DataFrame
    curve: pd.DataFrame
    summary: pd.DataFrame


def measure_capacity(study: CapacityStudy, device: str = "auto", storage: str | None = None,
                     cache: ResultsCache | None = None, progress: bool = True) -> CapacityResult:
    """Run the three-stage search to its budget (resuming what the storage holds), then
    record one capacity summary per architecture under the study's experiment name."""
    cache = cache or ResultsCache()
    run_worker(study, device, storage, progress)
    trials = study_trials(study, storage)
    summary = capacity_summary(trials)
    for row in summary.to_dict("records"):
        mine = trials[trials.model == row["model"]]
        config = {"study": asdict(study), "model": row["model"]}
        cache.put(study.experiment, config, {**row, "profile": study.profile,
                                             "trials": len(mine)},
                  ", ".join(sorted(set(mine.device))), float(mine.train_wall_s.sum()))
    return CapacityResult(trials, capacity_curve(trials[trials.stage < 3]), summary)
