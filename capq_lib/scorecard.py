"""'Paper says / we measured': comparison tables built from cached results.

Each check returns rows of (claim, paper, ours, verdict); the intro page stacks the rows of
every chapter whose results exist, so the scorecard grows with the book.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import reference
from .capacity import FCDNN_KIND
from .channel import KIND as MI_KIND
from .results import ResultsCache

COLUMNS = ["chapter", "claim", "paper says", "source", "we measured", "verdict"]


def _row(chapter: str, claim: str, paper: str, source: str, ours: str, ok: bool | None) -> dict:
    verdict = "n/a" if ok is None else ("agrees" if ok else "differs")
    return dict(zip(COLUMNS, [chapter, claim, paper, source, ours, verdict], strict=True))


def _latest(records: list[dict], profile: str | None) -> pd.DataFrame:
    rows = [r["result"] for r in records if profile is None or r["result"].get("profile") ==
            profile]
    return pd.DataFrame(rows)


def mi_rows(check: pd.DataFrame) -> list[dict]:
    """Eq. (1) against the simulation at the largest N simulated."""
    if check.empty:
        return []
    n = check.n_samples.max()
    err = float(check.loc[check.n_samples == n, "relative_error"].abs().max())
    return [_row("Mutual information", "Eq. (1) gives the bits a classifier of accuracy p "
                 "holds about N random labels", "I = N (1 - H2(p))",
                 reference.source("mutual_information.formula"),
                 f"plug-in estimate within {err:.4f} bits/sample of Eq. (1) at N = {n}",
                 err < 0.01)]


def capacity_ratios(summary: pd.DataFrame, by: str, other: str) -> list[tuple]:
    """(other value, a, b, C(b)/C(a)) for consecutive values a < b of ``by``."""
    out = []
    for val, g in summary.groupby(other):
        g = g.sort_values(by)
        for (_, a), (_, b) in zip(g.iterrows(), g.iloc[1:].iterrows(), strict=False):
            out.append((val, a[by], b[by], b.capacity_bits / a.capacity_bits))
    return out


def fcdnn_rows(summary: pd.DataFrame) -> list[dict]:
    """The FCDNN claims of Sec. 4.1 against our capacity summary."""
    if summary.empty:
        return []
    ch = "FCDNN capacity"
    lo, hi = reference.value("fcdnn.bits_per_param_range")
    mean_ref = reference.value("fcdnn.bits_per_param_mean")
    bpp = summary.bits_per_param
    rows = [
        _row(ch, "bits per parameter, mean over architectures", f"{mean_ref}",
             reference.source("fcdnn.bits_per_param_mean"),
             f"{bpp.mean():.2f} over {len(bpp)} architectures", abs(bpp.mean() - mean_ref) <= 0.3),
        _row(ch, "bits per parameter, range", f"{lo} to {hi}",
             reference.source("fcdnn.bits_per_param_range"),
             f"{bpp.min():.2f} to {bpp.max():.2f}",
             bool(bpp.min() >= lo - 0.2 and bpp.max() <= hi + 0.2)),
    ]
    widths = [r for r in capacity_ratios(summary, "width", "depth") if r[2] == 2 * r[1]]
    if widths:
        f = np.exp(np.mean(np.log([r[3] for r in widths])))
        rows.append(_row(ch, "doubling the width multiplies what is memorized by",
                         "4", reference.source("fcdnn.width_doubling_n_factor"),
                         f"{f:.2f} (capacity ratio, geometric mean of {len(widths)} pairs)",
                         3.0 <= f <= 5.0))
    if "lr_at_max" in summary:
        lr_lo, lr_hi = reference.value("fcdnn.lr_range")
        inside = int(summary.lr_at_max.between(lr_lo, lr_hi).sum())
        rows.append(_row(ch, "learning rate of the best trial lies in the paper's search range",
                         f"searched {lr_lo} to {lr_hi}", reference.source("fcdnn.lr_range"),
                         f"{inside} of {len(summary)} architectures (lr "
                         f"{summary.lr_at_max.min():.3g} to {summary.lr_at_max.max():.3g})",
                         None))
    depth1 = summary[summary.depth == 1].set_index("width").capacity_bits
    deeper = summary[(summary.depth > 1) & summary.width.isin(depth1.index)]
    if not deeper.empty:
        ratio = deeper.capacity_bits.values / depth1.loc[deeper.width].values / deeper.depth.values
        rows.append(_row(ch, "depth d memorizes d times what depth 1 does", "C(d) / C(1) = d",
                         reference.source("fcdnn.depth_n_factor"),
                         f"C(d) / (d C(1)) = {ratio.min():.2f} to {ratio.max():.2f}",
                         bool(np.all(np.abs(ratio - 1) <= 0.25))))
    return rows


def fcdnn_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Bits per parameter per architecture, and whether it lies in the paper's range."""
    lo, hi = reference.value("fcdnn.bits_per_param_range")
    t = summary[["model", "params", "n_at_max", "p_at_max", "capacity_bits",
                 "bits_per_param"]].copy()
    t["in paper's range"] = np.where((t.bits_per_param >= lo) & (t.bits_per_param <= hi),
                                     "yes", "no")
    return t


def fcdnn_styled(summary: pd.DataFrame):
    """``fcdnn_table`` formatted for the page, the paper's values in the caption."""
    lo, hi = reference.value("fcdnn.bits_per_param_range")
    mean = reference.value("fcdnn.bits_per_param_mean")
    where = reference.source("fcdnn.bits_per_param_range")
    return (fcdnn_table(summary).style.hide(axis="index")
            .format({"p_at_max": "{:.4f}", "capacity_bits": "{:,.0f}",
                     "bits_per_param": "{:.2f}", "params": "{:,}", "n_at_max": "{:,}"})
            .set_caption(f"Capacity per architecture. Paper ({where}): {lo}-{hi} bits per "
                         f"parameter, mean {mean}."))


def search_winners(trials: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    """Per model: the recipe of the trial at the capacity, and whether the paper's search
    ranges (lr 0.001-0.05, momentum 0.6-0.99) contain it."""
    lr_lo, lr_hi = reference.value("fcdnn.lr_range")
    m_lo, m_hi = reference.value("fcdnn.momentum_range")
    best = trials.loc[trials.groupby("model")["mutual_info"].idxmax()].set_index("model")
    out = summary[["model"]].copy()
    out["stage"] = [int(best.loc[m, "stage"]) for m in out.model]
    out["lr"] = [best.loc[m, "lr"] for m in out.model]
    out["momentum"] = [best.loc[m, "momentum"] for m in out.model]
    out["N"] = [int(best.loc[m, "n_samples"]) for m in out.model]
    out["lr in paper's range"] = np.where((out.lr >= lr_lo) & (out.lr <= lr_hi), "yes", "no")
    out["momentum in paper's range"] = np.where(
        (out.momentum >= m_lo) & (out.momentum <= m_hi), "yes", "no")
    return out


def scorecard(profile: str | None = None, cache: ResultsCache | None = None) -> pd.DataFrame:
    """Every claim with results under ``profile``, from the cache."""
    cache = cache or ResultsCache()
    check = _latest(cache.records(MI_KIND), profile)
    if not check.empty:
        check["relative_error"] = (check.empirical_mean - check.formula) / check.n_samples
    fc = _latest(cache.records(FCDNN_KIND), profile)
    if not fc.empty:  # one record per model: the newest study wins
        fc = fc.drop_duplicates("model", keep="last")
    return pd.DataFrame(mi_rows(check) + fcdnn_rows(fc), columns=COLUMNS)
