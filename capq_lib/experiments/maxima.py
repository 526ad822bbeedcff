"""Where Eq. (1)'s I peaks over N, and whether that peak is a maximum at all.

A capacity is the largest I over the trained N. It counts as a maximum only when it is
*bracketed*: some trained N below and some above it hold less information. A peak at the
edge of what was trained says only that the capacity is at least that much (a lower bound),
however many N lie on its other side. And a peak where every sample was memorized (p = 1,
so I = N) is not a maximum either, however it is flanked: some N between it and the next
trained N stores more. It counts once the step to that next N is under ``REFINED_STEP``
(a peak just below p = 1 can be the true maximum: the paper's LSTM peaks at p = 0.9952).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from capq_lib.core.info import mutual_information

#: a peak at p = 1 counts as a maximum once the next trained N above it is this close
REFINED_STEP = 0.05


def best_per_n(trials: pd.DataFrame) -> pd.DataFrame:
    """Per model and N: the trial with the best accuracy (over recipes and seeds), and its I
    (Sec. 4.1: "the best accuracy obtained when attempted with different hyper parameters")."""
    best = trials.loc[trials.groupby(["model", "n_samples"])["accuracy"].idxmax()].copy()
    best = best.sort_values(["params", "n_samples"]).reset_index(drop=True)
    best["mutual_info"] = mutual_information(best["n_samples"], best["accuracy"])
    return best


@dataclass(frozen=True)
class Peak:
    """The largest I of one model's curve and what lies on each side of it."""

    n_at_max: int
    mutual_info: float
    #: a trained N above (below) the peak with strictly less I
    lower_above: bool
    lower_below: bool
    n_max: int  # the largest N trained
    p_at_n_max: float  # the best accuracy reached there
    p_at_max: float = 0.0  # the best accuracy at the peak's N
    n_above: int | None = None  # the nearest trained N above the peak

    @property
    def perfect(self) -> bool:
        """Every sample memorized at the peak: I = N, and more lies above."""
        return self.p_at_max >= 1.0

    @property
    def step_above(self) -> float:
        """How far the next trained N lies above the peak, as a fraction of the peak's N."""
        return (self.n_above / self.n_at_max - 1) if self.n_above else float("inf")

    @property
    def refined(self) -> bool:
        """A peak short of p = 1, or a perfect one whose next N is within REFINED_STEP."""
        return not self.perfect or self.step_above < REFINED_STEP

    @property
    def bracketed(self) -> bool:
        return self.lower_above and self.lower_below and self.refined


def peak(curve: pd.DataFrame) -> Peak:
    """The peak of one model's curve (rows of ``best_per_n`` for that model)."""
    if curve.empty:
        raise ValueError("an empty curve has no peak")
    c = curve.sort_values("n_samples")
    top = c.loc[c.mutual_info.idxmax()]
    n_star, i_star = int(top.n_samples), float(top.mutual_info)
    lower = c.mutual_info < i_star
    last = c.iloc[-1]
    above = c[c.n_samples > n_star]
    return Peak(n_star, i_star, bool((lower & (c.n_samples > n_star)).any()),
                bool((lower & (c.n_samples < n_star)).any()), int(last.n_samples),
                float(last.accuracy), float(top.accuracy),
                int(above.n_samples.iloc[0]) if len(above) else None)
