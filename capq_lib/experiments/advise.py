"""The bits advisor: how many bits per weight a net needs, read off our own measurements.

The evidence is the quantization chapter's: for each family, the fewest bits that kept
memorized accuracy (within the chapter's tolerance) at each measured ratio of samples to
parameters. A query takes the nearest measured ratio at or above its own (more data per
parameter never needed fewer bits in the paper's Fig. 4), so the advice errs on the side of
more bits, and it refuses what it has no data for rather than extrapolate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from capq_lib.core import validate
from capq_lib.experiments import records
from capq_lib.experiments.precision import EXPERIMENT, FAMILIES, STUDY, fewest_lossless_bits
from capq_lib.experiments.results import ResultsCache

#: how far in parameter count the advice reaches beyond the nets measured
SIZE_REACH = 10


@dataclass
class Advice:
    family: str
    params: int
    samples: int
    ratio: float
    bits: int | None  # None: even the widest width measured lost accuracy
    evidence: pd.DataFrame  # the measured rows the advice rests on
    basis: str

    def text(self) -> str:
        width = f"{self.bits} bits per weight" if self.bits else \
            f"more than {int(self.evidence.widest.max())} bits per weight"
        return (f"{self.family}, {self.params} parameters, {self.samples} samples "
                f"(N/P = {self.ratio:.3g}): {width}. {self.basis}")


def measured(profile: str | None = None, cache: ResultsCache | None = None,
             tolerance: float | None = None, per_seed: bool = False) -> pd.DataFrame:
    """Fewest lossless bits of every measured (model, N) of the quantization study's main
    setting: our recipe, progressive quantization with retraining and the chapter's step
    rule, at every capacity definition (N_at_max fractions and C/2); the fill sweep's nets
    (another recipe length, no capacity point) are not evidence here. ``per_seed``: one row
    per net (its own fewest bits, with ``seed``), so a loss of one seed is not hidden in
    the seeds' mean; otherwise judged on the seeds' mean accuracy."""
    rows = []
    for record in records.of_profile(EXPERIMENT, profile, cache):
        df = pd.DataFrame(record["result"]["rows"])
        if "study" in df:
            df = df[df.study.fillna(STUDY) == STUDY]
        df = df[df.main & (df.recipe == "ours")] if len(df) else df
        if len(df):
            tol = record["config"]["study"]["lossless_tolerance"] if tolerance is None \
                else tolerance
            rows.append(fewest_lossless_bits(df, tol, per_seed))
    keys = ["family", "model", "n_samples"] + (["seed"] if per_seed else [])
    if not rows:
        return pd.DataFrame(columns=["family", "model", "params", "n_samples",
                                     "data_per_param", "capacity_fraction", "recipe",
                                     "definition", "study", "main", "fewest_lossless_bits",
                                     "float_accuracy", "widest", "tolerance",
                                     *(["seed"] if per_seed else [])])
    return pd.concat(rows, ignore_index=True).drop_duplicates(
        keys, keep="last").reset_index(drop=True)


def apart(a: float, b: float) -> tuple[str, str]:
    """``a`` and ``b`` printed with the fewest significant digits (3 at least) that tell
    them apart, so that a refusal never reads "2 is above 2"."""
    for digits in range(3, 17):
        x, y = f"{a:.{digits}g}", f"{b:.{digits}g}"
        if x != y:
            return x, y
    return repr(a), repr(b)


def advise(family: str, params: int, samples: int, table: pd.DataFrame) -> Advice:
    """Recommend a bit width for a ``family`` net of ``params`` weights holding ``samples``."""
    validate.choice("family", family, FAMILIES)
    params = validate.integer("params", params, lo=1)
    samples = validate.integer("samples", samples, lo=1)
    mine = table[table.family == family]
    if not len(mine):
        raise validate.ConfigError(
            f"no quantization measurements for family {family!r}: build the quantization "
            f"chapter first (capq build --only quantization), or pick one of "
            f"{sorted(set(table.family)) or 'none measured yet'}")
    small, large = int(mine.params.min()), int(mine.params.max())
    if not small / SIZE_REACH <= params <= large * SIZE_REACH:
        raise validate.ConfigError(
            f"params must be within {SIZE_REACH}x of the {family} nets measured ({small:,} to "
            f"{large:,} parameters, so {math.ceil(small / SIZE_REACH):,} to "
            f"{large * SIZE_REACH:,}); got {params:,}: we do not extrapolate further")
    ratio = samples / params
    top = float(mine.data_per_param.max())
    if ratio > top:
        shown, limit = apart(ratio, top)
        raise validate.ConfigError(
            f"samples per parameter (samples / params = {shown}) is above the largest "
            f"measured for {family} ({limit}, at the model's capacity): beyond it a net no "
            f"longer memorizes everything, and we have no measurement to advise from")
    # per model, the smallest measured ratio at or above the query
    above = mine[mine.data_per_param >= ratio].sort_values("data_per_param")
    evidence = above.groupby("model", sort=False).head(1)
    bits = evidence.fewest_lossless_bits
    lost = bits.isna().any()
    chosen = None if lost else int(bits.max())
    ratios = ", ".join(f"{r:.3g}" for r in evidence.data_per_param)
    needed = ", ".join(f">{int(w)}" if math.isnan(b) else str(int(b)) for b, w in
                       zip(evidence.fewest_lossless_bits, evidence.widest, strict=True))
    basis = (f"Measured: {', '.join(evidence.model)} at N/P {ratios} needed {needed} bits "
             f"(accuracy within {evidence.tolerance.iloc[0]:g} of float); the advice takes "
             f"the most.")
    return Advice(family, params, samples, ratio, chosen, evidence.reset_index(drop=True), basis)
