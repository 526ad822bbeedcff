"""Capacity measurement: train at many N (and a few hyperparameters), C = max over them of I.

The search (``search.py``) finds where Eq. (1)'s I peaks over N, taking for each N the best
accuracy any hyperparameter setting reached (Sec. 4.1: "the best accuracy obtained when
attempted with different hyper parameters"), brackets that peak and trains the winner again
with fresh seeds. The capacity reported is the replicates' mean (with their spread): the
search's own maximum, the best of many single-seed trials, is biased upwards and is kept
beside it so the bias shows.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import torch

from . import progress as progress_bars
from . import validate
from .datasets import check_size, memorization_set
from .devices import describe, resolve_device
from .info import conv_bits_per_parameter, mutual_information
from .maxima import best_per_n, peak
from .models import FCDNNSpec, build_fcdnn
from .results import ResultsCache
from .search import CapacityStudy, replicate_tag, run_worker, study_trials
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
    return best_per_n(trials)


#: per-family columns that ``search.spec_columns`` adds and summaries carry along
SPEC_COLUMNS = ("width", "depth", "params_conv", "params_fc", "units")
#: stages whose trials make up the search (stage 5 replicates the winner)
SEARCH_STAGES = (1, 2, 3, 4)


def replicates_of(trials: pd.DataFrame, winner: pd.Series) -> pd.DataFrame:
    """The stage-5 trials of ``winner``'s model, N and recipe."""
    decay = winner.get("decay_factor")
    tag = replicate_tag(int(winner.n_samples), float(winner.lr), float(winner.momentum),
                        float(decay) if decay == decay and decay is not None else 0.1)
    if "plan" not in trials:
        return trials.iloc[0:0]
    mine = trials[(trials.model == winner.model) & (trials.stage == 5)]
    return mine[mine.plan.astype(str).str.startswith(tag + ":")]


def capacity_summary(trials: pd.DataFrame) -> pd.DataFrame:
    """Per model: the capacity C (the mean I of the winner's replicates, with their standard
    deviation, beside the search's own maximum), whether the search's peak is bracketed,
    the N and p there, and bits per parameter (of the mean)."""
    searched = trials[trials.stage.isin(SEARCH_STAGES)]
    curve = best_per_n(searched)
    rows = []
    for model, c in curve.groupby("model", sort=False):
        top = peak(c)
        at = c[c.n_samples == top.n_at_max].iloc[0]
        reps = replicates_of(trials, at)
        info = mutual_information(reps.n_samples, reps.accuracy) if len(reps) else []
        mean = float(np.mean(info)) if len(reps) else top.mutual_info
        sd = float(np.std(info, ddof=1)) if len(reps) > 1 else float("nan")
        params = int(at.params)
        row = {"model": model, "params": params,
               **{k: at[k] for k in SPEC_COLUMNS if k in at and at[k] == at[k]},
               "capacity_bits": mean, "capacity_bits_mean": mean, "capacity_bits_sd": sd,
               "capacity_bits_search_max": top.mutual_info, "replicates": len(reps),
               "bits_per_param": mean / params, "bits_per_param_sd": sd / params,
               "n_at_max": top.n_at_max, "p_at_max": float(at.accuracy),
               "p_replicates": float(reps.accuracy.mean()) if len(reps) else float("nan"),
               "lr_at_max": float(at.lr), "momentum_at_max": float(at.momentum),
               "n_swept": sorted(int(n) for n in c.n_samples),
               "n_grid_max": top.n_max, "p_at_n_grid_max": top.p_at_n_max,
               "bracketed": top.bracketed,
               "bracket_trials": int((searched[searched.model == model].stage == 4).sum())}
        if "params_conv" in row:  # the paper's conv share, assuming 2.3 bits per FC parameter
            row["conv_bits_per_param"] = conv_bits_per_parameter(
                mean, int(row["params_fc"]), int(row["params_conv"]))
            row["conv_bits_per_param_sd"] = sd / int(row["params_conv"])
        rows.append(row)
    return pd.DataFrame(rows).sort_values("params").reset_index(drop=True)


@dataclass
class CapacityResult:
    """Every trial, the accuracy-against-N curve of the grid stages (1, 2 and the bracket
    extension 4), one row per model."""

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
    grid = trials[trials.stage.isin([1, 2, 4])]  # stage 3's scattered N would blur it
    return CapacityResult(trials, capacity_curve(grid), summary)
