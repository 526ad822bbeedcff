"""Capacity measurement: train at many N (and a few hyperparameters), C = max over them of I.

The search (``search.py``) finds where Eq. (1)'s I peaks over N, taking for each N the best
accuracy any hyperparameter setting reached (Sec. 4.1: "the best accuracy obtained when
attempted with different hyper parameters"), brackets that peak and trains the winner again
with fresh seeds. The capacity reported is the replicates' mean (with their spread): the
search's own maximum, the best of many single-seed trials, is biased upwards and is kept
beside it so the bias shows.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from capq_lib.core import progress as progress_bars
from capq_lib.core import validate
from capq_lib.core.devices import describe, resolve_device
from capq_lib.core.info import conv_bits_per_parameter, mutual_information
from capq_lib.core.seeds import seed_from_text
from capq_lib.core.verdicts import AGREES, Estimate, greater
from capq_lib.engine.population import Member, train_members
from capq_lib.experiments.maxima import best_per_n, peak
from capq_lib.experiments.results import ResultsCache
from capq_lib.experiments.search import (
    CapacityStudy,
    refining,
    replicate_tag,
    run_worker,
    spec_columns,
    study_trials,
)

FCDNN_KIND, CNN_KIND, RNN_KIND = "fcdnn-capacity", "cnn-capacity", "rnn-capacity"
FCDNN_CNN_RECIPE_KIND = "fcdnn-capacity-cnn-recipe"
TRANSFORMER_KIND = "transformer-capacity"


def capacity_curve(trials: pd.DataFrame) -> pd.DataFrame:
    """Per model and N: the best accuracy over hyperparameters and seeds, and its I."""
    return best_per_n(trials)


#: per-family columns that ``search.spec_columns`` adds and summaries carry along
SPEC_COLUMNS = ("width", "depth", "params_conv", "params_fc", "units", "layers")
#: stages whose trials make up the search (stage 5 replicates the winner)
SEARCH_STAGES = (1, 2, 3, 4)


def _decay(trial: pd.Series) -> float:
    """A trial's decay factor (stage-3 trials of a cosine schedule record none: 0.1)."""
    decay = trial.get("decay_factor")
    return float(decay) if decay is not None and decay == decay else 0.1


def replicates_of(trials: pd.DataFrame, winner: pd.Series) -> pd.DataFrame:
    """The stage-5 trials of ``winner``'s model, N and recipe."""
    tag = replicate_tag(int(winner.n_samples), float(winner.lr), float(winner.momentum),
                        _decay(winner))
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
        mine = searched[searched.model == model]
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
               "p_replicates_sd": (float(reps.accuracy.std(ddof=1)) if len(reps) > 1
                                   else float("nan")),
               "lr_at_max": float(at.lr), "momentum_at_max": float(at.momentum),
               "decay_at_max": _decay(at),
               "n_swept": sorted(int(n) for n in c.n_samples),
               "n_grid_max": top.n_max, "p_at_n_grid_max": top.p_at_n_max,
               "bracketed": top.bracketed,
               # a peak at p = 1 is bracketed only once the next N is within 5 %
               "step_above": top.step_above if top.n_above else None,
               "bracket_trials": int(((mine.stage == 4) & ~refining(mine)).sum()),
               "refine_trials": int(refining(mine).sum())}
        if "params_conv" in row:  # the paper's conv share, assuming 2.3 bits per FC parameter
            row["conv_bits_per_param"] = conv_bits_per_parameter(
                mean, int(row["params_fc"]), int(row["params_conv"]))
            row["conv_bits_per_param_sd"] = sd / int(row["params_conv"])
        rows.append(row)
    return pd.DataFrame(rows).sort_values("params").reset_index(drop=True)


@dataclass
class CapacityResult:
    """Every trial, the accuracy-against-N curve of the grid stages (1, 2 and the bracket
    extension 4), one row per model, and capacity against training length (empty when the
    study's length check was not asked for)."""

    trials: pd.DataFrame
    curve: pd.DataFrame
    summary: pd.DataFrame
    lengths: pd.DataFrame = field(default_factory=pd.DataFrame)


def measure_capacity(study: CapacityStudy, device: str = "auto", storage: str | None = None,
                     cache: ResultsCache | None = None, progress: bool = True,
                     length_factors: tuple[float, ...] = (), length_seeds: int = 0
                     ) -> CapacityResult:
    """Run the three-stage search to its budget (resuming what the storage holds), then
    check convergence in training length (``length_factors``: the winner's replicates
    trained again for that multiple of the epochs; none: not checked), and record one
    capacity summary per architecture under the study's experiment name, with
    ``converged`` True, False, or None when it was not checked (never true by default)."""
    cache = cache or ResultsCache()
    run_worker(study, device, storage, progress)
    trials = study_trials(study, storage)
    summary = capacity_summary(trials)
    grid = trials[trials.stage.isin([1, 2, 4])]  # stage 3's scattered N would blur it
    result = CapacityResult(trials, capacity_curve(grid), summary)
    if length_factors:
        result.lengths = capacity_by_length(measure_training_length(
            study, result, tuple(length_factors), length_seeds, device, cache, progress))
    result.summary = summary = with_convergence(summary, result.lengths)
    for row in summary.to_dict("records"):
        mine = trials[trials.model == row["model"]]
        config = {"study": asdict(study), "model": row["model"]}
        cache.put(study.experiment, config, {**row, "profile": study.profile,
                                             "trials": len(mine)},
                  ", ".join(sorted(set(mine.device))), float(mine.train_wall_s.sum()))
    return result


def with_convergence(summary: pd.DataFrame, by_length: pd.DataFrame) -> pd.DataFrame:
    """``summary`` with ``converged`` per model (None: no length check covers it) and the
    growth the check measured."""
    done = converged(by_length) if len(by_length) else {}
    return summary.assign(
        converged=[done.get(m, {}).get("converged") for m in summary.model],
        length_growth=[done.get(m, {}).get("growth") for m in summary.model],
        length_factors=[done.get(m, {}).get("factors") for m in summary.model])


TRAINING_LENGTH_KIND = "training-length"


def bracketing_n(curve: pd.DataFrame, n_at_max: int) -> list[int]:
    """The N at the peak and the nearest trained N above it with less information: where a
    longer training can show whether the capacity was still growing."""
    c = curve.sort_values("n_samples")
    top = float(c.loc[c.n_samples == n_at_max, "mutual_info"].max())
    above = c[(c.n_samples > n_at_max) & (c.mutual_info < top)]
    return [int(n_at_max)] + ([int(above.n_samples.iloc[0])] if len(above) else [])


def measure_training_length(study: CapacityStudy, result: CapacityResult,
                            factors: tuple[float, ...], seeds: int, device: str = "auto",
                            cache: ResultsCache | None = None, progress: bool = True
                            ) -> pd.DataFrame:
    """Capacity against training length: each model's winning recipe trained with
    ``factor`` x the study's epochs at the N that bracket its peak, pair by pair with the
    same data and initializations at every length. At the peak's N the nets are the
    replicates' (so factor 1 is the replicates themselves, nothing retrained); at the
    nearest N above with less information, ``seeds`` more nets (none: the peak's N alone,
    the cheap design of a CPU profile). One cache record per model and factor; one row per
    trained net."""
    for f in validate.non_empty("length_factors", factors):
        validate.number("length_factors", f, lo=0.0, hi=100.0, lo_open=True)
    validate.integer("length_seeds", seeds, lo=0, hi=1000)
    cache = cache or ResultsCache()
    dev = resolve_device(device)
    specs = {s.name: s for s in study.specs()}
    rows: list[dict] = []
    todo = [(row, f) for row in result.summary.to_dict("records") for f in factors]
    bar = progress_bars.bar(total=len(todo), desc="training length", disable=not progress,
                            unit="length")
    for row, factor in todo:
        spec = specs[row["model"]]
        base = study.recipe(spec.name)
        epochs = max(1, round(factor * base.epochs))
        recipe = base.with_(epochs=epochs, lr=row["lr_at_max"], momentum=row["momentum_at_max"],
                            decay_factor=row["decay_at_max"])
        winner = pd.Series({"model": spec.name, "n_samples": row["n_at_max"],
                            "lr": row["lr_at_max"], "momentum": row["momentum_at_max"],
                            "decay_factor": row["decay_at_max"]})
        reps = replicates_of(result.trials, winner)
        ns = bracketing_n(result.curve[result.curve.model == spec.name], row["n_at_max"])
        nets = [(ns[0], int(s)) for s in reps.seed] + [
            (n, _length_seed(study.seed, spec.name, n, k)) for n in ns[1:] for k in range(seeds)]
        base_row = {**spec_columns(spec), "experiment": study.experiment, "factor": factor,
                    "epochs": epochs, "base_epochs": base.epochs}
        reused = [{**base_row, "n_samples": int(r.n_samples), "seed": int(r.seed),
                   "accuracy": float(r.accuracy), "epochs_run": int(r.epochs_run),
                   "mutual_info": float(r.mutual_info)} for r in reps.itertuples()
                  ] if factor == 1.0 else []
        train = nets[len(reused):]
        config = {"search": study.search_config(), "model": spec.name, "epochs": epochs,
                  "nets": train, "lr": row["lr_at_max"], "momentum": row["momentum_at_max"],
                  "decay_factor": row["decay_at_max"]}
        if reused:  # the record holds them too, so readers of the cache see every length
            config["reused"] = [[r["n_samples"], r["seed"]] for r in reused]

        def run(spec=spec, recipe=recipe, train=train, base_row=base_row,
                reused=reused) -> dict:
            members = [Member(n, s, s, recipe) for n, s in train]
            out = train_members(spec, members, dev) if members else None
            return {"profile": study.profile, "rows": reused + [
                {**base_row, "n_samples": m.n_samples, "seed": m.data_seed,
                 "accuracy": o.accuracy, "epochs_run": o.epochs_run,
                 "mutual_info": float(mutual_information(m.n_samples, o.accuracy))}
                for m, o in zip(members, out.members if out else [], strict=True)]}

        bar.set_postfix_str(f"{spec.name} x{factor:g}")
        record, _ = cache.compute(TRAINING_LENGTH_KIND, config, run, describe(dev),
                                  label=study.profile)
        rows += record["result"]["rows"]
        bar.update(1)
    bar.close()
    return pd.DataFrame(rows)


def _length_seed(base: int, model: str, n: int, k: int) -> int:
    return seed_from_text(f"length:{base}:{model}:{n}:{k}")


def capacity_by_length(lengths: pd.DataFrame) -> pd.DataFrame:
    """Per model and length factor: the capacity there, the largest over the bracketing N of
    the seeds' mean I, with its standard deviation and the N where it lies."""
    g = lengths.groupby(["model", "factor", "epochs", "n_samples"], as_index=False)
    per_n = g.agg(mean=("mutual_info", "mean"), sd=("mutual_info", "std"),
                  seeds=("seed", "size"), p=("accuracy", "mean"))
    best = per_n.loc[per_n.groupby(["model", "factor"])["mean"].idxmax()]
    spec = lengths.drop_duplicates("model")[
        ["model", "params", *[c for c in SPEC_COLUMNS if c in lengths]]]
    return best.rename(columns={"mean": "capacity_bits", "sd": "capacity_bits_sd"}) \
        .merge(spec, on="model").sort_values(["params", "factor"]).reset_index(drop=True)


def converged(by_length: pd.DataFrame) -> dict[str, dict]:
    """Per model: had the capacity at the study's own length (factor 1) stopped growing?
    It had not when a longer training stored more, beyond the seeds' spread, or, without a
    longer one, when the last step up to factor 1 still stored more (capacity was rising
    into the chapter's length). ``converged`` False makes the chapter's capacity only a lower
    bound of what its recipe stores."""
    out = {}
    for model, g in by_length.groupby("model"):
        g = g.sort_values("factor")
        at = g[g.factor == 1.0]
        if at.empty or len(g) < 2:
            continue
        one = at.iloc[0]
        longer, shorter = g[g.factor > 1.0], g[g.factor < 1.0]
        lo, hi = (one, longer.iloc[-1]) if len(longer) else (shorter.iloc[-1], one)
        grows = greater(_length_estimate(hi), _length_estimate(lo))
        out[model] = {"converged": grows.outcome != AGREES,
                      "growth": float(hi.capacity_bits / lo.capacity_bits - 1),
                      "from_factor": float(lo.factor), "to_factor": float(hi.factor),
                      "factors": [float(f) for f in g.factor]}
    return out


def _length_estimate(row: pd.Series) -> Estimate:
    se = float(row.capacity_bits_sd) / math.sqrt(row.seeds) if row.seeds > 1 else float("nan")
    return Estimate(float(row.capacity_bits), se, int(row.seeds))


def length_findings(by_length: pd.DataFrame) -> str:
    """The page's sentences on capacity against training length, written from the data:
    each length's value (± 2 s.e. over the seeds, as everywhere in the book) and the
    change of the value shown between the lengths the convergence verdict compares."""
    done = converged(by_length)
    out = []
    for model, g in by_length.groupby("model", sort=False):
        conv = "params_conv" in g and g.params_conv.notna().all()
        size = g.params_conv if conv else g.params
        share = (g.capacity_bits - (2.3 * g.params_fc if conv else 0)) / size
        sd = g.capacity_bits_sd / size
        unit = "conv bits per parameter" if conv else "bits per parameter"
        points = ", ".join(f"{Estimate.from_sd(b, s, n).cell()} after {e:,} epochs"
                           for b, s, n, e in zip(share, sd, g.seeds, g.epochs, strict=True))
        text = f"Model {model}: {points} ({unit}, \u00b1 2 s.e. over the seeds)."
        if model in done:
            d = done[model]
            by_factor = dict(zip(g.factor, share, strict=True))
            change = by_factor[d["to_factor"]] / by_factor[d["from_factor"]] - 1
            span = (f"from {d['from_factor']:g}x to {d['to_factor']:g}x the chapter's epochs "
                    f"the {unit} changed by {100 * change:+.0f} %, ")
            text += " " + span[0].upper() + span[1:] + (
                "within the seeds' spread: no growth is resolved at the chapter's length."
                if d["converged"] else
                "more than the seeds' spread: the capacity had not converged at the "
                "chapter's length, and the value reported above is a lower bound for this "
                "recipe.")
        out.append(text)
    return " ".join(out)
