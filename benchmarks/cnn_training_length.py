"""How much a Table-1 CNN memorizes when training is as long as a time budget allows.

The quick profile trains the memorization CNNs a few hundred epochs on a CPU; this script
asks what the same recipe (Adam, cosine schedule) reaches with the training a GPU affords:
one population over an N grid x learning rates x seeds, its epochs sized from a short
timed run so the whole thing ends inside ``--budget-s``. It prints I of Eq. (1) per N
(best member), the capacity and the paper's conv bits per parameter.

    python benchmarks/cnn_training_length.py --model A --device cuda --budget-s 300
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from capq_lib.core.devices import resolve_device
from capq_lib.core.info import conv_bits_per_parameter, mutual_information
from capq_lib.engine.population import Member, train_members
from capq_lib.engine.train import Recipe
from capq_lib.nets.models import CNNSpec


def _members(spec: CNNSpec, ratios: list[float], lrs: list[float], seeds: int,
             recipe: Recipe) -> list[Member]:
    return [Member(int(round(r * spec.n_params)), 1000 + s, 1000 + s, recipe.with_(lr=lr))
            for r in ratios for lr in lrs for s in range(seeds)]


def run(model: str, ratios: list[float], lrs: list[float], seeds: int, bpe: int,
        device: torch.device, epochs: int | None = None, budget_s: float = 120.0,
        max_epochs: int = 5000) -> dict:
    """One population over the N grid x lrs x seeds; ``epochs`` or as many as ``budget_s``."""
    spec = CNNSpec(model)
    members = _members(spec, ratios, lrs, seeds, Recipe())

    def train(n_epochs: int):
        config = Recipe(epochs=n_epochs, optimizer="adam", batches_per_epoch=bpe,
                        eval_every=25)
        return train_members(spec, _members(spec, ratios, lrs, seeds, config), device)

    if epochs is None:
        probe_epochs = 4
        t0 = time.perf_counter()
        train(probe_epochs)
        per_epoch = (time.perf_counter() - t0) / probe_epochs
        epochs = max(probe_epochs, min(max_epochs, int(
            (budget_s - (time.perf_counter() - t0)) / per_epoch)))
        print(f"# {model}: {len(members)} members, {per_epoch * 1000:.0f} ms an epoch, "
              f"training {epochs} epochs", file=sys.stderr, flush=True)
    out = train(epochs)
    rows = [{"n_samples": m.n_samples, "lr": m.recipe.lr, "seed": m.data_seed,
             "accuracy": o.accuracy, "epochs_run": o.epochs_run}
            for m, o in zip(members, out.members, strict=True)]
    best: dict[int, float] = {}
    for r in rows:
        best[r["n_samples"]] = max(best.get(r["n_samples"], 0.0), r["accuracy"])
    curve = {n: float(mutual_information(n, p)) for n, p in sorted(best.items())}
    n_max = max(curve, key=curve.get)
    capacity = curve[n_max]
    return {"model": model, "device": str(device), "epochs": epochs,
            "batches_per_epoch": bpe, "steps": epochs * bpe, "wall_s": out.wall_time_s,
            "members": rows, "best_accuracy": best, "mutual_info": curve,
            "capacity_bits": capacity, "n_at_max": n_max,
            "bits_per_param": capacity / spec.n_params,
            "conv_bits_per_param": conv_bits_per_parameter(capacity, spec.n_params_fc,
                                                           spec.n_params_conv)}


def _line(res: dict) -> str:
    by_lr: dict[float, list[float]] = {}
    for r in res["members"]:
        by_lr.setdefault(r["lr"], []).append(r["accuracy"])
    return (f"# {res['model']} {res['device']} bpe {res['batches_per_epoch']} x "
            f"{res['epochs']} epochs, {res['wall_s']:.0f} s | C {res['capacity_bits']:.0f} at "
            f"N {res['n_at_max']} | {res['bits_per_param']:.2f} b/p, conv "
            f"{res['conv_bits_per_param']:.2f} | best p by N: "
            + ", ".join(f"{n}: {p:.4f}" for n, p in res["best_accuracy"].items())
            + " | mean p by lr: "
            + ", ".join(f"{lr}: {sum(v) / len(v):.3f}" for lr, v in by_lr.items()))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="A", help="Table-1 letter")
    ap.add_argument("--n-per-param", default="2.0,2.25,2.5,2.75,3.0",
                    help="N as multiples of the parameter count, comma separated")
    ap.add_argument("--lrs", default="0.001,0.002", help="Adam learning rates")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--runs", default="128:",
                    help="batches-per-epoch:epochs pairs, comma separated, one population "
                         "each; an empty epochs means as many as --budget-s allows")
    ap.add_argument("--budget-s", type=float, default=120.0)
    ap.add_argument("--max-epochs", type=int, default=5000)
    ap.add_argument("--device", default="auto")
    a = ap.parse_args(argv)
    device = resolve_device(a.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    for item in a.runs.split(","):
        bpe, _, epochs = item.partition(":")
        res = run(a.model, [float(v) for v in a.n_per_param.split(",")],
                  [float(v) for v in a.lrs.split(",")], a.seeds, int(bpe), device,
                  int(epochs) if epochs else None, a.budget_s, a.max_epochs)
        print(json.dumps(res), flush=True)  # one JSON line per population
        print(_line(res), file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
