"""The fill sweep: do nets that store more bits per parameter need more bits per weight?

Our FCDNNs at capacity need 8 bits where the paper's need 6, and our recipe stores more per
parameter than the paper's (Sec. 4.1: 2.3 bits). The sweep tests that link directly: FCDNNs
trained at several N / P (so that the float I / P varies) with our recipe and with the
paper-range one, every net quantized progressively with the quantization study's schedule,
step rule and retraining; per net, the bits it stored per parameter in float against the
fewest bits that kept its accuracy.

Each (model, recipe) is one population (every N and seed in one ``train_members`` call) and
one cache record, so an interrupted chapter resumes after the last finished pair. The same
(N, seed) gets the same data and initialization under both recipes: the recipes are
compared on identical nets.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy import stats

from capq_lib.core.devices import describe, resolve_device
from capq_lib.core.info import mutual_information
from capq_lib.core.progress import bar as progress_bar
from capq_lib.core.seeds import derived_seed
from capq_lib.engine.population import Member, stack_memorization_sets, train_members
from capq_lib.engine.quantize import QuantConfig
from capq_lib.engine.train import Recipe
from capq_lib.experiments import records
from capq_lib.experiments.precision import (
    EXPERIMENT,
    QuantizationStudy,
    evaluate_quantized,
    fewest_lossless_bits,
    parse_model,
    progressive,
    retrain_recipe,
    shown_bits,
)
from capq_lib.experiments.results import ResultsCache
from capq_lib.nets.models import FCDNNSpec

STUDY = "fill"
#: how far from the paper's 2.3 bits per parameter a net counts as "storing what the
#: paper's nets stored"
NEAR_PAPER = 0.25


def fill_recipe(study: QuantizationStudy, name: str) -> Recipe:
    """The FCDNN recipe ``name`` ("ours" or "paper") with the sweep's epochs, if it sets any."""
    recipe = study.recipe("fc", name)
    epochs = (study.fill_epochs or {}).get(name)
    return recipe if epochs is None else replace(recipe, epochs=epochs)


def fill_config(study: QuantizationStudy, spec: FCDNNSpec, recipe: str) -> dict[str, Any]:
    """What decides one (model, recipe) record of the sweep (its cache key)."""
    return {"sweep": STUDY, "model": spec.name, "recipe": recipe,
            "training": fill_recipe(study, recipe).as_dict(),
            "n_per_param": list(study.fill_n_per_param), "seeds": study.fill_seeds,
            "study": {"schedule": list(study.schedule), "step_rule": study.step_rule,
                      "retrain_epochs": study.retrain_epochs.get("fc", 0),
                      "retrain_lr_factor": study.retrain_lr_factor,
                      "lossless_tolerance": study.lossless_tolerance, "seed": study.seed}}


def plan(study: QuantizationStudy, spec: FCDNNSpec) -> list[tuple[float, int, int]]:
    """(N / P, N, seed) of every net of one model: fresh data and init per seed and N, the
    same under both recipes."""
    p = spec.n_params
    return [(float(r), max(2, round(r * p)),
             derived_seed(study.seed, STUDY, spec.name, float(r), k))
            for r in study.fill_n_per_param for k in range(study.fill_seeds)]


def run_fill(study: QuantizationStudy, spec: FCDNNSpec, recipe_name: str,
             device: torch.device) -> list[dict[str, Any]]:
    """Train every net of one (model, recipe) as one population, then quantize them
    progressively (directly, when the study retrains for 0 epochs); one row per net and
    width, each carrying the net's float bits per parameter and fewest lossless bits."""
    recipe = fill_recipe(study, recipe_name)
    nets_plan = plan(study, spec)
    members = [Member(n, s, s, recipe) for _, n, s in nets_plan]
    x, y = stack_memorization_sets(members, spec.input_shape, device)
    trained = train_members(spec, members, device, data=(x, y))
    nets = [m.model for m in trained.members]
    n = torch.tensor([m.n_samples for m in members], device=device)
    floats = evaluate_quantized(spec, nets, x, y, n, None)
    epochs = study.retrain_epochs.get("fc", 0)
    if epochs:
        retrain = [replace(m, recipe=retrain_recipe(recipe, epochs,
                                                    recipe.lr * study.retrain_lr_factor))
                   for m in members]
        by_bits = progressive(spec, nets, retrain, x, y, study.schedule, study.step_rule)
    else:
        by_bits = {b: evaluate_quantized(spec, nets, x, y, n, QuantConfig(b, study.step_rule))
                   for b in study.schedule}
    rows = []
    for k, ((ratio, n_k, seed), acc) in enumerate(zip(nets_plan, floats, strict=True)):
        base = {"family": "fc", "model": spec.name, "params": spec.n_params,
                "n_samples": n_k, "n_per_param": ratio, "data_per_param": n_k / spec.n_params,
                "capacity_fraction": None, "recipe": recipe_name, "study": STUDY,
                "definition": STUDY, "seed": seed, "lr": recipe.lr,
                "train_epochs": recipe.epochs, "profile": study.profile}
        net = [{**base, "bits": None, "step_rule": None, "retrained": False,
                "retrain_epochs": 0, "accuracy": acc, "main": True}]
        net += [{**base, "bits": b, "step_rule": study.step_rule, "retrained": bool(epochs),
                 "retrain_epochs": epochs, "accuracy": accs[k], "main": True}
                for b, accs in by_bits.items()]
        for r in net:
            r["mutual_info"] = float(mutual_information(n_k, r["accuracy"]))
        fewest = fewest_lossless_bits(pd.DataFrame(net), study.lossless_tolerance,
                                      per_seed=True).fewest_lossless_bits.iloc[0]
        for r in net:
            r["bits_per_param_float"] = net[0]["mutual_info"] / spec.n_params
            r["fewest_lossless_bits"] = None if fewest != fewest else int(fewest)
        rows += net
    return rows


def measure_fill(study: QuantizationStudy, device: str = "auto",
                 cache: ResultsCache | None = None, progress: bool = True) -> pd.DataFrame:
    """Every (model, recipe) of the sweep (computing the missing ones, one record each): one
    row per net and width, records of kind "quantization" with ``study`` = "fill"."""
    cache = cache or ResultsCache()
    dev = resolve_device(device)
    pairs = [(parse_model("fc", m), r) for m, r in study.fill_pairs()]
    rows: list[dict[str, Any]] = []
    bar = progress_bar(total=len(pairs), desc="fill sweep", disable=not progress)
    for spec, recipe in pairs:
        def compute(spec: FCDNNSpec = spec, recipe: str = recipe) -> dict[str, Any]:
            return {"profile": study.profile, "rows": run_fill(study, spec, recipe, dev)}

        record, _ = cache.compute(EXPERIMENT, fill_config(study, spec, recipe), compute,
                                  describe(dev), label=study.profile)
        rows += [{**r, "profile": study.profile, "key": record["key"]}
                 for r in record["result"]["rows"]]
        bar.update(1)
    bar.close()
    return pd.DataFrame(rows)


def per_net(rows: pd.DataFrame, tolerance: float) -> pd.DataFrame:
    """One row per net: float accuracy, bits stored per parameter (float I / P) and the
    fewest lossless bits of that net at ``tolerance`` (not of the seeds' mean). Works on the
    fractions study's rows too (their main setting, one row per net and capacity setting)."""
    t = fewest_lossless_bits(rows, tolerance, per_seed=True)
    t = t[t.main].copy()
    t["bits_per_param_float"] = t.float_mi / t.params
    ratio = t.data_per_param.round(3)
    t["n_per_param"] = t.n_per_param.fillna(ratio) if "n_per_param" in t else ratio
    t["ranked_bits"] = t.fewest_lossless_bits.fillna(t.widest + 1)
    cols = ["model", "params", "recipe", "definition", "seed", "n_samples", "n_per_param",
            "float_accuracy", "bits_per_param_float", "fewest_lossless_bits", "widest",
            "ranked_bits"]
    return t[[c for c in cols if c in t]].reset_index(drop=True)


def summary(nets: pd.DataFrame) -> pd.DataFrame:
    """Mean and spread over seeds per (model, recipe, N / P): bits stored per parameter and
    fewest lossless bits (a net that lost even at the widest width counts as widest + 1)."""
    g = nets.groupby(["recipe", "model", "n_per_param"], sort=True)
    out = g.agg(nets=("seed", "size"), bpp_mean=("bits_per_param_float", "mean"),
                bpp_sd=("bits_per_param_float", "std"), bits_mean=("ranked_bits", "mean"),
                bits_sd=("ranked_bits", "std"), bits_min=("ranked_bits", "min"),
                bits_max=("ranked_bits", "max"),
                lost_at_widest=("fewest_lossless_bits", lambda s: int(s.isna().sum())))
    return out.reset_index()


def fit(nets: pd.DataFrame) -> pd.DataFrame:
    """Per recipe, a least-squares line of fewest lossless bits against bits stored per
    parameter over all its nets (both models, every N and seed): slope with a 95 % interval
    and where the line crosses 6 and 8 bits. The verdict's input."""
    out = []
    for recipe, g in nets.groupby("recipe", sort=False):
        x, y = g.bits_per_param_float.to_numpy(), g.ranked_bits.to_numpy(dtype=float)
        row: dict[str, Any] = {"recipe": recipe, "nets": len(g),
                               "lost_at_widest": int(g.fewest_lossless_bits.isna().sum()),
                               "bpp_min": float(x.min()), "bpp_max": float(x.max())}
        if len(g) >= 3 and np.ptp(x) > 0:
            res = stats.linregress(x, y)
            t = stats.t.ppf(0.975, len(g) - 2)
            row.update(slope=res.slope, slope_lo=res.slope - t * res.stderr,
                       slope_hi=res.slope + t * res.stderr, intercept=res.intercept,
                       r=res.rvalue, p_value=res.pvalue)
            for b in (6, 8):
                row[f"bpp_at_{b}_bits"] = (b - res.intercept) / res.slope \
                    if res.slope != 0 else math.nan
        out.append(row)
    return pd.DataFrame(out)


def _count(k: int, noun: str) -> str:
    return f"{k} {noun}" if k == 1 else f"{k} {noun}s"


def _range(v: pd.Series) -> str:
    return f"{v.min():.2f}" if v.min() == v.max() else f"{v.min():.2f}-{v.max():.2f}"


def findings(nets: pd.DataFrame, paper_bpp: float, paper_bits: int) -> list[str]:
    """The sweep's answer in sentences, every number from ``nets`` (``per_net``): per recipe
    the trend of bits needed against bits stored, where its nets need at most ``paper_bits``
    and 8 or more, and what our nets storing about ``paper_bpp`` bits per parameter need."""
    if nets.empty:
        return ["The fill sweep has no nets (fill_models is empty)."]
    names = {"ours": "Our recipe", "paper": "The paper-range recipe"}
    widest = int(nets.widest.max())
    lines = []
    for _, f in fit(nets).iterrows():
        g = nets[nets.recipe == f.recipe]
        lost = f"; {f.lost_at_widest} lost even at {widest} bits (counted as {widest + 1})" \
            if f.lost_at_widest else ""
        head = (f"{names.get(f.recipe, f.recipe)}: {_count(f.nets, 'net')} "
                f"({', '.join(dict.fromkeys(g.model))}) stored {f.bpp_min:.2f} to "
                f"{f.bpp_max:.2f} bits per parameter in float{lost}.")
        if "slope" not in f or f.slope != f.slope:
            lines.append(f"{head} Too few distinct fills to fit a trend.")
            continue
        if f.slope_lo > 0:
            trend = (f"the fewest lossless bits rise with the bits stored, by {f.slope:.1f} "
                     f"bits per extra bit per parameter (95 % interval {f.slope_lo:.1f} to "
                     f"{f.slope_hi:.1f}, r = {f.r:.2f})")
            cross = [f"{b} bits at about {f[f'bpp_at_{b}_bits']:.2f} bits per parameter"
                     for b in (paper_bits, 8) if f[f"bpp_at_{b}_bits"] == f[f"bpp_at_{b}_bits"]]
            trend += f"; the fitted line reaches {' and '.join(cross)}" if cross else ""
        elif f.slope_hi < 0:
            trend = (f"the fewest lossless bits *fall* as the bits stored grow (slope "
                     f"{f.slope:.1f}, 95 % interval {f.slope_lo:.1f} to {f.slope_hi:.1f})")
        else:
            trend = (f"no clear trend: slope {f.slope:.1f} bits per extra bit per parameter, "
                     f"95 % interval {f.slope_lo:.1f} to {f.slope_hi:.1f} includes 0")
        few, many = g[g.ranked_bits <= paper_bits], g[g.ranked_bits >= 8]
        where = []
        if len(few):
            where.append(f"the {_count(len(few), 'net')} that needed at most {paper_bits} "
                         f"bits stored {_range(few.bits_per_param_float)} bits per parameter")
        else:
            where.append(f"no net needed {paper_bits} bits or fewer")
        if len(many):
            where.append(f"the {len(many)} that needed 8 or more stored "
                         f"{_range(many.bits_per_param_float)}")
        else:
            where.append("none needed 8 or more")
        lines.append(f"{head} Across them {trend}. By net, {'; '.join(where)}.")
    lines += _at_equal_fill(nets, names) + _saturation(nets, names)
    ours = nets[nets.recipe == "ours"]
    near = ours[(ours.bits_per_param_float - paper_bpp).abs() <= NEAR_PAPER]
    if len(ours) and len(near):
        ok = int((near.ranked_bits <= paper_bits).sum())
        shown = ", ".join(shown_bits(b, w) for b, w in
                          zip(near.sort_values("fewest_lossless_bits").fewest_lossless_bits,
                              near.sort_values("fewest_lossless_bits").widest, strict=True))
        lines.append(f"Nets of our recipe that stored what the paper's did ({paper_bpp} +- "
                     f"{NEAR_PAPER} bits per parameter, {_count(len(near), 'net')}): {ok} of "
                     f"{len(near)} kept their accuracy at {paper_bits} bits (their fewest "
                     f"lossless bits: {shown}).")
    elif len(ours):
        lines.append(f"None of our recipe's nets stored within {NEAR_PAPER} of the paper's "
                     f"{paper_bpp} bits per parameter (theirs: "
                     f"{_range(ours.bits_per_param_float)}).")
    return lines


def _at_equal_fill(nets: pd.DataFrame, names: dict[str, str]) -> list[str]:
    """The recipes compared at the same bits per parameter: the nets of each whose fill lies
    in the range both recipes reached, their mean fill and mean fewest lossless bits."""
    recipes = list(dict.fromkeys(nets.recipe))
    if len(recipes) < 2:
        return []
    span = nets.groupby("recipe").bits_per_param_float.agg(["min", "max"])
    lo, hi = span["min"].max(), span["max"].min()
    if hi <= lo:
        return ["The recipes reached no common fill (no bits per parameter reached by both), "
                "so they cannot be compared at equal fill."]
    inside = nets[nets.bits_per_param_float.between(lo, hi)]
    parts = []
    for r in recipes:
        g = inside[inside.recipe == r]
        sd = f", sd {g.ranked_bits.std():.1f}" if len(g) > 1 else ""
        parts.append(f"{names.get(r, r).lower()}'s {_count(len(g), 'net')} (mean fill "
                     f"{g.bits_per_param_float.mean():.2f}) needed {g.ranked_bits.mean():.1f} "
                     f"bits on average{sd}")
    return [f"At equal fill, over the range both recipes reached ({lo:.2f} to {hi:.2f} bits "
            f"per parameter): {'; '.join(parts)}."]


def _saturation(nets: pd.DataFrame, names: dict[str, str]) -> list[str]:
    """Bits needed by nets that memorized every sample against nets that did not (p < 1: at
    or past capacity), per recipe: is it the fill alone, or also being full?"""
    parts = []
    for recipe, g in nets.groupby("recipe", sort=False):
        done, short = g[g.float_accuracy >= 1.0], g[g.float_accuracy < 1.0]
        if len(done) and len(short):
            parts.append(f"{names.get(recipe, recipe).lower()}: {len(done)} nets that "
                         f"memorized every sample ({_range(done.bits_per_param_float)} bits "
                         f"per parameter) needed {done.ranked_bits.mean():.1f} bits on "
                         f"average, {len(short)} that did not "
                         f"({_range(short.bits_per_param_float)}) needed "
                         f"{short.ranked_bits.mean():.1f}")
    return [f"Memorized all or not: {'; '.join(parts)}."] if parts else []


def cached_nets(profile: str | None = None, cache: ResultsCache | None = None,
                tolerance: float | None = None) -> pd.DataFrame:
    """The sweep's nets (``per_net``) from the results cache, of one profile or all, at each
    record's own tolerance unless ``tolerance`` is given: what the claims read."""
    parts = []
    for record in records.of_profile(EXPERIMENT, profile, cache):
        res, config = record["result"], record["config"]
        if config.get("sweep") != STUDY:
            continue
        tol = config["study"]["lossless_tolerance"] if tolerance is None else tolerance
        parts.append(per_net(pd.DataFrame(res["rows"]), tol).assign(profile=res.get("profile")))
    if not parts:
        return pd.DataFrame()
    # a pair recomputed under new settings replaces its older record
    nets = pd.concat(parts, ignore_index=True)
    return nets.drop_duplicates(["profile", "model", "recipe", "seed"], keep="last"
                                ).reset_index(drop=True)
