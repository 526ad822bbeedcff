"""Verdicts that could have come out either way: agrees, differs, or inconclusive.

A verdict compares a measured value with the paper's under a stated test. A measurement is
an :class:`Estimate`: a mean over replicates with its standard error, and a flag for a
value that is only a lower bound (a maximum left unbracketed, a training that had not
converged). Each test looks at the interval ``mean +- Z * se``: it agrees when the whole
interval passes the test, differs when the whole interval fails it, and is inconclusive
when the interval straddles the line, when the value is a lower bound that could still move
past it, or when there is nothing (or a single seed) to judge from.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: interval half-width in standard errors (about 95 % for a normal mean)
Z = 2.0
AGREES, DIFFERS, INCONCLUSIVE = "agrees", "differs", "inconclusive"
#: a claim the profile did not measure (the scorecard still shows it, with why)
NOT_MEASURED = "not measured"
OUTCOMES = (AGREES, DIFFERS, INCONCLUSIVE, NOT_MEASURED)


@dataclass(frozen=True)
class Verdict:
    outcome: str
    #: why an inconclusive verdict is inconclusive (lower bound, one seed, precondition ...)
    reason: str = ""

    def __str__(self) -> str:
        return f"{self.outcome} ({self.reason})" if self.reason else self.outcome


def agrees() -> Verdict:
    return Verdict(AGREES)


def differs(reason: str = "") -> Verdict:
    return Verdict(DIFFERS, reason)


def inconclusive(reason: str) -> Verdict:
    return Verdict(INCONCLUSIVE, reason)


def not_measured(reason: str) -> Verdict:
    return Verdict(NOT_MEASURED, reason)


@dataclass(frozen=True)
class Estimate:
    """A measured value: the mean over ``n`` replicates, its standard error, and whether
    it is only a lower bound of the quantity the paper reports."""

    mean: float
    se: float = 0.0
    n: int = 1
    lower_bound: bool = False
    #: why it is a lower bound, when that is not plain ("convergence not checked", ...)
    caveat: str = ""

    @property
    def why_lower(self) -> str:
        return self.caveat or "lower bound"

    @classmethod
    def of(cls, values: Sequence[float], lower_bound: bool = False) -> Estimate:
        """Mean and standard error of replicate values."""
        v = np.asarray(values, dtype=float)
        v = v[~np.isnan(v)]
        if not v.size:
            return cls(float("nan"), float("nan"), 0, lower_bound)
        se = float(v.std(ddof=1) / math.sqrt(v.size)) if v.size > 1 else float("nan")
        return cls(float(v.mean()), se, int(v.size), lower_bound)

    @property
    def missing(self) -> bool:
        return self.n == 0 or self.mean != self.mean

    @property
    def low(self) -> float:
        return self.mean - Z * self.se

    @property
    def high(self) -> float:
        return self.mean + Z * self.se

    @classmethod
    def from_sd(cls, mean: float, sd: float, n: int, lower_bound: bool = False,
                caveat: str = "") -> Estimate:
        """From a mean and the standard deviation of its ``n`` replicates (what the
        capacity summaries record)."""
        n = int(n) if n == n else 0
        se = sd / math.sqrt(n) if n > 1 and sd == sd else float("nan")
        return cls(float(mean), se, max(n, 1) if mean == mean else 0, lower_bound, caveat)

    def cell(self, fmt: str = ".2f") -> str:
        """'2.31 ± 0.04': the one way this book prints an estimate, ± two standard errors
        (the interval the verdicts use); the bare mean where there is no spread. Tables
        say "± 2 s.e." in their header, sentences through :meth:`text`."""
        if self.missing:
            return "not measured"
        core = f"{self.mean:{fmt}}"
        if self.n > 1 and self.se == self.se:
            core += f" \u00b1 {Z * self.se:{fmt}}"
        return ("\u2265 " if self.lower_bound else "") + core

    def text(self, fmt: str = ".2f", what: str = "seeds") -> str:
        """'2.31 ± 0.04 (2 s.e., 3 seeds)'; '≥ 2.31 ...' for a lower bound. ``what`` names
        the replicates. The same numbers as :meth:`cell`, labelled."""
        if self.missing:
            return "not measured"
        label = "2 s.e., " if self.n > 1 and self.se == self.se else ""
        count = f" ({label}{self.n} {what})" if self.n != 1 else f" (1 {what.rstrip('s')})"
        return self.cell(fmt) + count


def mean_of(estimates: Sequence[Estimate]) -> Estimate:
    """The mean of several estimates (e.g. over a family's models): standard errors add in
    quadrature, a lower bound anywhere makes the mean a lower bound."""
    live = [e for e in estimates if not e.missing]
    if not live:
        return Estimate(float("nan"), float("nan"), 0)
    se = math.sqrt(sum(e.se ** 2 for e in live)) / len(live)
    return Estimate(float(np.mean([e.mean for e in live])), se, min(e.n for e in live),
                    any(e.lower_bound for e in live),
                    next((e.caveat for e in live if e.lower_bound and e.caveat), ""))


def _judgeable(e: Estimate) -> Verdict | None:
    if e.missing:
        return inconclusive("not measured")
    if e.lower_bound:
        return inconclusive(e.why_lower)
    if e.n < 2 or e.se != e.se:
        return inconclusive("one seed")
    return None


def within(e: Estimate, target: float, tolerance: float) -> Verdict:
    """Is the value ``target +- tolerance``? Agrees when the whole interval lies inside the
    band, differs when it lies wholly outside."""
    early = _judgeable(e)
    if early:
        return early
    lo, hi = target - tolerance, target + tolerance
    if lo <= e.low and e.high <= hi:
        return agrees()
    if e.high < lo or e.low > hi:
        return differs()
    return inconclusive("within noise of the tolerance")


def in_range(e: Estimate, low: float, high: float) -> Verdict:
    """Does the value lie in [low, high]?"""
    return within(e, (low + high) / 2, (high - low) / 2)


def greater(a: Estimate, b: Estimate) -> Verdict:
    """Is a > b? A lower bound can only be trusted on the side it bounds: a lower-bound a
    that already exceeds b does, a lower-bound b below a might not stay there."""
    for e in (a, b):
        if e.missing:
            return inconclusive("not measured")
        if e.n < 2 or e.se != e.se:
            return inconclusive("one seed")
    d = a.mean - b.mean
    spread = Z * math.sqrt(a.se ** 2 + b.se ** 2)
    if d - spread > 0 and not b.lower_bound:
        return agrees()
    if d + spread < 0 and not a.lower_bound:
        return differs()
    bound = next((e for e in (a, b) if e.lower_bound), None)
    return inconclusive(bound.why_lower if bound else "difference within noise")


def ordered(estimates: Sequence[Estimate]) -> Verdict:
    """Is estimates[0] < estimates[1] < ...? Differs if any pair is reversed."""
    pairs = [greater(b, a) for a, b in zip(estimates, estimates[1:], strict=False)]
    if not pairs:
        return inconclusive("fewer than two values")
    if any(p.outcome == DIFFERS for p in pairs):
        return differs()
    if all(p.outcome == AGREES for p in pairs):
        return agrees()
    return inconclusive(next(p.reason for p in pairs if p.outcome == INCONCLUSIVE))


@dataclass(frozen=True)
class Bits:
    """Fewest lossless bits: a width, or None when even the widest width measured lost
    (then the net needs more than ``widest``)."""

    fewest: int | None
    widest: int

    def text(self) -> str:
        return f">{self.widest}" if self.fewest is None else str(self.fewest)

    @property
    def at_least(self) -> int:
        """The fewest bits it can need: its width, or one more than the widest."""
        return self.widest + 1 if self.fewest is None else self.fewest


def bits_near(e: Estimate, paper: float, slack: float) -> Verdict:
    """Do the seeds' fewest lossless bits match the paper's width within ``slack``? A lower
    bound (a seed lossy even at the widest width) can only differ, when it is already
    beyond the band."""
    if e.lower_bound and not e.missing:
        return differs() if e.low > paper + slack else inconclusive(e.why_lower)
    return within(e, paper, slack)


def at_most(e: Estimate, limit: float) -> Verdict:
    """Is the value at most ``limit``: its interval wholly at or below it (agrees), wholly
    above it (differs)? A lower bound can only differ, once it is already above."""
    if e.lower_bound and not e.missing:
        return differs() if e.low > limit else inconclusive(e.why_lower)
    early = _judgeable(e)
    if early:
        return early
    if e.high <= limit:
        return agrees()
    if e.low > limit:
        return differs()
    return inconclusive("within noise of the tolerance")


def bits_at_most_seeds(e: Estimate, limit: float, slack: float) -> Verdict:
    """Do the seeds stay lossless at ``limit`` bits: their interval of fewest lossless
    bits at most ``limit + slack`` (agrees), or wholly above it (differs)?"""
    return at_most(e, limit + slack)


def positive(e: Estimate) -> Verdict:
    """Is the value above zero beyond noise (agrees), below it beyond noise (differs)?"""
    early = _judgeable(e)
    if early:
        return early
    if e.low > 0:
        return agrees()
    if e.high < 0:
        return differs()
    return inconclusive("difference within noise")


def rises_between(low: Estimate, high: Estimate) -> Verdict:
    """Does the value rise from ``low`` (fewer samples per parameter) to ``high``? Agrees
    when the rise exceeds 2 s.e., differs when it falls or stays exactly level (no change
    at no spread), inconclusive within noise."""
    for e in (low, high):
        early = None if e.lower_bound else _judgeable(e)
        if early:
            return early
    d = high.mean - low.mean
    spread = Z * math.sqrt(low.se ** 2 + high.se ** 2)
    if d - spread > 0 and not low.lower_bound:
        return agrees()
    if d + spread <= 0 and not high.lower_bound:
        return differs("no change" if d == 0 else "")
    return inconclusive(low.why_lower if low.lower_bound else "difference within noise")


def bits_match(ours: Bits, paper: int, slack: int = 1) -> Verdict:
    """Does our fewest lossless width equal the paper's within ``slack`` bits?"""
    if ours.fewest is None:
        return differs() if ours.widest >= paper + slack else inconclusive(
            f"lossy even at {ours.widest} bits, the widest measured")
    return agrees() if abs(ours.fewest - paper) <= slack else differs()


def bits_at_most(ours: Bits, limit: int) -> Verdict:
    """Does the net stay lossless at ``limit`` bits (fewest lossless <= limit)?"""
    if ours.fewest is None:
        return differs() if ours.widest >= limit else inconclusive(
            f"lossy even at {ours.widest} bits, the widest measured")
    return agrees() if ours.fewest <= limit else differs()


def rises(points: Sequence[tuple[float, Bits]]) -> Verdict:
    """Do fewer samples per parameter need fewer bits? ``points`` are (x, bits) of one
    model: agrees when the bits never fall as x grows and the largest x needs strictly more
    than the smallest; differs on any fall, or when the bits do not change at all."""
    if len(points) < 2:
        return inconclusive("fewer than two fractions measured")
    pts = sorted(points, key=lambda p: p[0])
    need = [b.at_least for _, b in pts]
    for (_, a), (_, b) in zip(pts, pts[1:], strict=False):
        if b.fewest is not None and a.at_least > b.fewest:  # more data, fewer bits
            return differs()
    if pts[0][1].fewest is None and pts[-1][1].fewest is None:
        return inconclusive("lossy even at the widest width at every fraction")
    return agrees() if need[-1] > need[0] else differs("no change across fractions")


def slope(x: Sequence[float], y: Sequence[float]) -> Estimate:
    """Least-squares slope of y on x with its standard error."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    if x.size < 3 or np.ptp(x) == 0:
        return Estimate(float("nan"), float("nan"), int(x.size))
    xc = x - x.mean()
    b = float((xc * (y - y.mean())).sum() / (xc ** 2).sum())
    resid = y - y.mean() - b * xc
    se = float(math.sqrt((resid ** 2).sum() / (x.size - 2) / (xc ** 2).sum()))
    return Estimate(b, se, int(x.size))


def trend_up(s: Estimate, least: float) -> Verdict:
    """Does y grow with x by at least ``least`` per unit? Agrees when the slope's interval
    lies above zero, differs when it lies below ``least`` (a trend too weak, or none)."""
    early = _judgeable(s)
    if early:
        return early
    if s.low > 0:
        return agrees()
    if s.high < least:
        return differs()
    return inconclusive("slope within noise")


def all_hold(k: int, n: int) -> Verdict:
    """A claim about every net: agrees when all ``n`` show it, differs when one does not."""
    if n == 0:
        return inconclusive("no net meets the precondition")
    return agrees() if k == n else differs()
