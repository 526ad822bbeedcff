"""Does a reported capacity stand against every other record of the same net?

A capacity chapter reports, per architecture, the mean I of fresh trainings at the peak its
search found. The same architecture is also trained elsewhere in the book (the quantization
chapter's float nets at fractions of the capacity's N, the fill sweep's nets at N = 1 to 3
times P). If any of those, as the mean over its seeds at one N and recipe (like with like:
a mean against a mean, not the best single net against a mean), stored more than the
reported capacity by over 2 standard errors, the search missed the maximum, and the page
says so instead of reporting a capacity that another record of the same net beats.
"""

from __future__ import annotations

import math

import pandas as pd

from capq_lib.core.verdicts import Z
from capq_lib.experiments import records
from capq_lib.experiments.precision import EXPERIMENT as QUANTIZATION
from capq_lib.experiments.results import ResultsCache

#: what each study of the quantization records is, in the page's words
SOURCES = {"fractions": "quantization chapter", "fill": "fill sweep"}
COLUMNS = ["model", "capacity_bits_mean", "capacity_bits_2se", "replicates", "best_other_bits",
           "best_other_where", "other_records", "exceeds"]


def other_records(family: str, profile: str | None,
                  cache: ResultsCache | None = None) -> pd.DataFrame:
    """Per model, study, recipe and N: the mean I of the float nets the other chapters
    trained (and how many seeds), under ``profile``."""
    rows = pd.DataFrame(records.rows(QUANTIZATION, profile, cache))
    cols = ["model", "study", "recipe", "n_samples", "mutual_info", "seeds"]
    if rows.empty or "family" not in rows:
        return pd.DataFrame(columns=cols)
    floats = rows[(rows.family == family) & rows.bits.isna()]
    if floats.empty:
        return pd.DataFrame(columns=cols)
    floats = floats.assign(study=floats["study"].fillna("fractions"),
                           recipe=floats["recipe"].fillna("ours"))
    return (floats.groupby(["model", "study", "recipe", "n_samples"], as_index=False)
            .agg(mutual_info=("mutual_info", "mean"), seeds=("mutual_info", "size")))


def consistency(summary: pd.DataFrame, family: str, profile: str | None,
                cache: ResultsCache | None = None) -> pd.DataFrame:
    """Per model of a capacity summary: its capacity (mean, 2 s.e.), the largest seed-mean
    I any other record of the same architecture reached and where, and whether that one
    exceeds the capacity by more than 2 s.e. (a search that missed the maximum)."""
    others = other_records(family, profile, cache)
    out = []
    for r in summary.itertuples():
        n = int(getattr(r, "replicates", 0) or 0)
        sd = float(getattr(r, "capacity_bits_sd", float("nan")))
        se2 = Z * sd / math.sqrt(n) if n > 1 and sd == sd else float("nan")
        mine = others[others.model == r.model]
        row = {"model": r.model, "capacity_bits_mean": float(r.capacity_bits_mean),
               "capacity_bits_2se": se2, "replicates": n, "best_other_bits": float("nan"),
               "best_other_where": "", "other_records": len(mine), "exceeds": False}
        if len(mine):
            best = mine.loc[mine.mutual_info.idxmax()]
            row["best_other_bits"] = float(best.mutual_info)
            row["best_other_where"] = (f"{SOURCES.get(best.study, best.study)}, N = "
                                       f"{int(best.n_samples):,}, {best.recipe} recipe, "
                                       f"mean of {int(best.seeds)} seed(s)")
            margin = se2 if se2 == se2 else 0.0
            row["exceeds"] = bool(best.mutual_info > r.capacity_bits_mean + margin)
        out.append(row)
    return pd.DataFrame(out, columns=COLUMNS)
