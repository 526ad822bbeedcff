"""Eq. (1) illustrated on a simulated binary symmetric channel.

A classifier that is right with probability p on N uniform random labels, its errors
falling uniformly on both classes, is a binary symmetric channel from Y to Y_hat. We draw
labels and such predictions, estimate N * I(Y; Y_hat) from the joint histogram, and compare.
The channel is the one Eq. (1) assumes, so the two agree by construction, up to finite-sample
effects: this shows the size of those effects, not whether trained nets obey Eq. (1) (that
check is ``trained_mi``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from capq_lib.core import validate
from capq_lib.core.info import empirical_mutual_information, mutual_information
from capq_lib.experiments.results import ResultsCache

KIND = "mi-check"


@dataclass(frozen=True)
class MICheck:
    """Sample sizes, accuracies and repeats of the simulation."""

    n_samples: tuple[int, ...] = (100, 1000, 10000)
    accuracies: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
    repeats: int = 50
    seed: int = 0
    profile: str = "custom"

    def __post_init__(self) -> None:
        object.__setattr__(self, "n_samples", validate.non_empty("n_samples", self.n_samples))
        object.__setattr__(self, "accuracies",
                           validate.non_empty("accuracies", self.accuracies))
        for n in self.n_samples:
            validate.integer("n_samples", n, lo=1, hi=10**8)
        for p in self.accuracies:
            validate.number("accuracies", p, lo=0.0, hi=1.0)
        validate.integer("repeats", self.repeats, lo=2, hi=100000)
        validate.integer("seed", self.seed, lo=0)


def simulate(n_samples: int, accuracy: float, rng: np.random.Generator) -> float:
    """One draw of the plug-in estimate of N * I(Y; Y_hat) at exactly ``accuracy`` correct."""
    y = rng.integers(0, 2, n_samples)
    wrong = rng.permutation(n_samples) < round((1 - accuracy) * n_samples)
    return empirical_mutual_information(y, np.where(wrong, 1 - y, y))


def mi_check(check: MICheck, cache: ResultsCache | None = None) -> pd.DataFrame:
    """Per (N, p): Eq. (1), and the mean and spread of the empirical estimate; cached."""
    cache = cache or ResultsCache()
    rows = []
    for n in check.n_samples:
        for p in check.accuracies:
            config = {**asdict(check), "n_samples": n, "accuracies": p}

            def run(n: int = n, p: float = p) -> dict:
                rng = np.random.default_rng([check.seed, n, int(p * 1e6)])
                est = np.array([simulate(n, p, rng) for _ in range(check.repeats)])
                return {"n_samples": n, "p": p, "formula": mutual_information(n, p),
                        "empirical_mean": float(est.mean()),
                        "empirical_std": float(est.std(ddof=1)), "repeats": check.repeats,
                        "profile": check.profile}

            record, _ = cache.compute(KIND, config, run, "cpu", label=check.profile)
            rows.append(record["result"])
    df = pd.DataFrame(rows)
    df["relative_error"] = (df.empirical_mean - df.formula) / df.n_samples
    return df


def summary(check: pd.DataFrame) -> str:
    """The page's sentence on the simulation: the largest |estimate - Eq. (1)| per sample at
    the smallest and the largest N, from the data."""
    err = check.assign(abs_error=check.relative_error.abs()).groupby("n_samples").abs_error
    worst = err.max()
    lo, hi = worst.index.min(), worst.index.max()
    text = (f"Over the accuracies simulated, the mean plug-in estimate differs from Eq. (1) by "
            f"at most {worst[lo]:.4f} bits per sample at N = {lo:,}")
    if hi != lo:
        text += f" and by at most {worst[hi]:.4f} at N = {hi:,}"
    return text + "."
