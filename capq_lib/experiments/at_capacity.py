"""Nets of a capacity chapter trained again at their capacity's N, then quantized: the
transformer chapter's classifier measure (the quantization chapter does the same for the
paper's families with its own fractions, recipes and divergence study).

Each of ``seeds`` nets is trained with the winning recipe at N_at_max (full) and at the
paper's half capacity N = C/2, then quantized at every width directly (post-training) and
progressively with straight-through retraining, both ways: tables (embeddings, read-out)
in float, or quantized as a deployed net would be. One row per net, width, way and route,
with accuracy and Eq. (1)'s information, and one cache record per model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd
import torch

from capq_lib.core import validate
from capq_lib.core.devices import describe, resolve_device
from capq_lib.core.info import mutual_information
from capq_lib.core.seeds import derived_seed
from capq_lib.engine.population import Member, stack_memorization_sets, train_members
from capq_lib.engine.quantize import QuantConfig, check_bits
from capq_lib.engine.train import Recipe
from capq_lib.experiments.precision import evaluate_quantized, progressive, retrain_recipe
from capq_lib.experiments.results import ResultsCache
from capq_lib.nets.models import ModelSpec

KIND = "at-capacity-quantization"
#: how a net's tables are treated (see ``quantize.quantized_names``)
WAYS = {"float tables": False, "deployed": True}


@dataclass(frozen=True)
class AtCapacity:
    """How the nets at capacity are quantized."""

    profile: str = "custom"
    seeds: int = 3
    bits: tuple[int, ...] = (8, 6, 5, 4, 3, 2)
    retrain_epochs: int = 20
    retrain_lr_factor: float = 0.1
    lossless_tolerance: float = 0.005
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.bits, list):
            object.__setattr__(self, "bits", tuple(self.bits))
        validate.integer("seeds", self.seeds, lo=1, hi=100)
        for b in validate.non_empty("bits", self.bits):
            check_bits(b)
        if list(self.bits) != sorted(self.bits, reverse=True):
            raise validate.ConfigError(f"bits must go from more to fewer, got {list(self.bits)}")
        validate.integer("retrain_epochs", self.retrain_epochs, lo=0, hi=10**5)
        validate.number("retrain_lr_factor", self.retrain_lr_factor, lo=0.0, hi=10.0,
                        lo_open=True)
        validate.number("lossless_tolerance", self.lossless_tolerance, lo=0.0, hi=0.5)


def quantize_at_capacity(study: AtCapacity, spec: ModelSpec, row: dict[str, Any],
                         recipe: Recipe, device: str = "auto",
                         cache: ResultsCache | None = None) -> pd.DataFrame:
    """``row`` is the model's capacity summary (N_at_max, C, the winning lr and momentum);
    ``recipe`` how its chapter trains it."""
    cache = cache or ResultsCache()
    dev = resolve_device(device)
    recipe = recipe.with_(lr=row["lr_at_max"], momentum=row["momentum_at_max"])
    points = {"N_at_max x 1": int(row["n_at_max"]),
              "C/2": max(1, round(row["capacity_bits"] / 2))}
    config = {"study": {k: v for k, v in asdict(study).items() if k != "profile"},
              "spec": asdict(spec), "recipe": recipe.as_dict(), "points": points}

    def compute() -> dict[str, Any]:
        rows = []
        for definition, n in points.items():
            rows += _quantize_point(study, spec, recipe, definition, n, dev)
        return {"profile": study.profile, "rows": rows}

    record, _ = cache.compute(KIND, config, compute, describe(dev), label=study.profile)
    return pd.DataFrame(record["result"]["rows"])


def _quantize_point(study: AtCapacity, spec: ModelSpec, recipe: Recipe, definition: str,
                    n: int, dev: torch.device) -> list[dict[str, Any]]:
    seeds = [derived_seed(study.seed, spec.name, definition, k) for k in range(study.seeds)]
    members = [Member(n, s, s, recipe) for s in seeds]
    x, y = stack_memorization_sets(members, spec.input_shape, dev)
    nets = [m.model for m in train_members(spec, members, dev, data=(x, y)).members]
    count = torch.full((len(seeds),), n, device=dev)
    base = {"model": spec.name, "params": spec.n_params, "n_samples": n,
            "definition": definition}
    rows: list[dict[str, Any]] = []

    def add(accs: Sequence[float], bits: int | None, way: str, route: str) -> None:
        for seed, acc in zip(seeds, accs, strict=True):
            rows.append({**base, "seed": seed, "bits": bits, "way": way, "route": route,
                         "accuracy": float(acc),
                         "mutual_info": float(mutual_information(n, acc))})

    add(evaluate_quantized(spec, nets, x, y, count, None), None, "float", "float")
    retrain = [Member(n, s, s, retrain_recipe(recipe, study.retrain_epochs,
                                              recipe.lr * study.retrain_lr_factor))
               for s in seeds]
    for way, deployed in WAYS.items():
        for b in study.bits:
            add(evaluate_quantized(spec, nets, x, y, count, QuantConfig(b, "l2"), deployed),
                b, way, "direct")
        if study.retrain_epochs:
            for b, accs in progressive(spec, nets, retrain, x, y, study.bits, "l2",
                                       deployed).items():
                add(accs, b, way, "progressive")
    return rows


def fewest_lossless(rows: pd.DataFrame, tolerance: float) -> pd.DataFrame:
    """Per model, definition, way, route and seed: the fewest bits at which the net's
    accuracy stays within ``tolerance`` of its float accuracy at that width and every wider
    one (NaN: lossy even at the widest), with the widest width measured."""
    floats = rows[rows.bits.isna()].set_index(["model", "definition", "seed"]).accuracy
    out = []
    q = rows[rows.bits.notna()]
    for key, g in q.groupby(["model", "definition", "way", "route", "seed"], sort=False):
        f = floats.loc[(key[0], key[1], key[4])]
        g = g.sort_values("bits", ascending=False)
        ok = (g.accuracy >= f - tolerance - 1e-12).cummin()
        out.append({"model": key[0], "definition": key[1], "way": key[2], "route": key[3],
                    "seed": key[4], "fewest_lossless_bits":
                    float(g.bits[ok].min()) if ok.any() else float("nan"),
                    "widest": int(g.bits.max())})
    return pd.DataFrame(out)


def model_to_quantize(summary: pd.DataFrame) -> pd.Series:
    """The model whose nets at capacity are quantized: the largest whose capacity is a
    maximum (bracketed, converged), since a net trained at a lower bound's N is not a net
    at capacity; without one, the smallest (the cheapest, and the closest to converged)."""
    ok = summary[summary.bracketed.astype(bool) & (summary.converged == True)]  # noqa: E712
    return (ok if len(ok) else summary.nsmallest(1, "params")).sort_values("params").iloc[-1]
