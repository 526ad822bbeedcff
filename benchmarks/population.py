"""Population trainer against a per-model loop: model-epochs per second, and their ratio.

(a) loop: what most code does, one nn.Module and one torch.optim per model, trained one
    after another (its rate does not depend on K, so it is measured on a few models);
(b) population: ``capq_lib.engine.population.train_members`` on K stacked members.
Both train the same nets (depth-2 FCDNNs; with --family, also Table-1 CNN A and LSTMs)
with the same optimizer and schedule on N = 8 batches of random data, for the same number
of epochs. The achieved GFLOP/s of (b) is compared with the peak float32 matmul rate
measured in the same run.

    python benchmarks/population.py [--device cpu|cuda] [--json] [--quick]
                                    [--family fcdnn|cnn|lstm|transformer|all]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

import torch

from capq_lib.core.devices import describe, resolve_device
from capq_lib.engine.population import Member, stack_memorization_sets, train_members
from capq_lib.engine.train import Recipe, memorize
from capq_lib.nets.datasets import memorization_set
from capq_lib.nets.models import CNNSpec, FCDNNSpec, LSTMSpec, ModelSpec, build
from capq_lib.nets.transformer import TransformerSpec

BATCHES_PER_EPOCH = 8


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_matmul_gflops(device: torch.device) -> float:
    """Best float32 GEMM rate over a few square sizes (TF32 off: a float32 peak)."""
    torch.backends.cuda.matmul.allow_tf32 = False
    best = 0.0
    sizes = (1024, 2048) if device.type == "cpu" else (4096, 8192)
    for n in sizes:
        a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
        torch.mm(a, b)
        sync(device)
        reps = 3 if device.type == "cpu" else 20
        start = time.perf_counter()
        for _ in range(reps):
            torch.mm(a, b)
        sync(device)
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - start) / 1e9)
    return best


def macs_per_sample(spec: ModelSpec) -> float:
    """Multiply-adds of one forward pass through the weights."""
    if isinstance(spec, FCDNNSpec):
        return spec.depth * spec.width**2 + spec.width * spec.n_classes
    if isinstance(spec, CNNSpec):
        size, macs, convs = 32, 0, iter(spec.convs())
        for n in spec.blocks():
            for _ in range(n):
                i, o = next(convs)
                macs += i * o * spec.kernel**2 * size * size
            size //= 2
        return macs + spec.features * spec.n_classes
    if isinstance(spec, TransformerSpec):  # projections and MLP per position, attention
        d, t = spec.width, spec.steps
        return t * (spec.n_in * d + 12 * d * d) * spec.layers + 2 * t * t * d * spec.layers \
            + d * spec.n_classes
    return spec.steps * 4 * spec.units * (spec.n_in + spec.units) + spec.units * spec.n_classes


def flops_per_model_epoch(spec: ModelSpec, n: int) -> float:
    """Forward 2, backward 4 flops per multiply-add of the weights, per sample."""
    return 6.0 * macs_per_sample(spec) * n


def loop_rate(spec: ModelSpec, batch: int, epochs: int, device: torch.device,
              models: int = 4, optimizer: str = "sgd") -> float:
    """Model-epochs per second of one nn.Module + torch.optim trained after another."""
    n = batch * BATCHES_PER_EPOCH
    shape = spec.input_shape
    data = memorization_set(n, math.prod(shape), 0, shape).to(device)
    config = Recipe(epochs=epochs, lr=0.01, eval_every=10**9, optimizer=optimizer)
    memorize(build(spec, 99).to(device), data,
             Recipe(epochs=1, eval_every=10**9, optimizer=optimizer))
    sync(device)
    start = time.perf_counter()
    for seed in range(models):
        memorize(build(spec, seed).to(device), data, config, seed=seed)
    sync(device)
    return models * epochs / (time.perf_counter() - start)


def population_rate(spec: ModelSpec, k: int, batch: int, epochs: int,
                    device: torch.device, optimizer: str = "sgd") -> float:
    """Model-epochs per second of K members trained as one population."""
    n = batch * BATCHES_PER_EPOCH
    shared = Recipe(epochs=epochs, lr=0.01, eval_every=10**9, optimizer=optimizer)
    members = [Member(n, s, s, shared) for s in range(k)]
    data = stack_memorization_sets(members, spec.input_shape, device)
    warm = [Member(n, s, s, shared.with_(epochs=1)) for s in range(k)]
    train_members(spec, warm, device, data=data)
    sync(device)
    start = time.perf_counter()
    out = train_members(spec, members, device, data=data)
    sync(device)
    return out.model_epochs / (time.perf_counter() - start)


def run(device: torch.device, ks: list[int], specs: list[ModelSpec], batches: list[int],
        budget_s: float, optimizer: str = "sgd", peak: float | None = None) -> list[dict]:
    peak = peak or peak_matmul_gflops(device)
    rows = []
    for spec in specs:
        width = getattr(spec, "width", None)
        for batch in batches:
            n = batch * BATCHES_PER_EPOCH
            probe = loop_rate(spec, batch, 1, device, models=1, optimizer=optimizer)
            loop_epochs = max(1, math.ceil(budget_s * probe / 4))
            loop = loop_rate(spec, batch, loop_epochs, device, optimizer=optimizer)
            for k in ks:
                probe = population_rate(spec, k, batch, 1, device, optimizer)
                pop_epochs = min(400, max(2, math.ceil(budget_s * probe / k)))
                pop = population_rate(spec, k, batch, pop_epochs, device, optimizer)
                gflops = pop * flops_per_model_epoch(spec, n) / 1e9
                rows.append({"device": describe(device), "model": spec.name,
                             "optimizer": optimizer, "k": k, "width": width,
                             "batch": batch, "n_samples": n,
                             "loop_model_epochs_per_s": round(loop, 2),
                             "population_model_epochs_per_s": round(pop, 2),
                             "ratio": round(pop / loop, 2),
                             "population_gflops": round(gflops, 2),
                             "peak_matmul_gflops": round(peak, 1),
                             "peak_fraction": round(gflops / peak, 3)})
                print(f"# {spec.name:6s} k={k:4d} batch={batch:5d} loop={loop:9.1f} "
                      f"pop={pop:10.1f} ratio={pop / loop:7.1f} {gflops:8.1f} GFLOP/s "
                      f"({gflops / peak:.0%} of {peak:.0f})", file=sys.stderr, flush=True)
    return rows


def table(rows: list[dict]) -> str:
    head = ("model", "optimizer", "k", "batch", "loop_model_epochs_per_s",
            "population_model_epochs_per_s", "ratio", "population_gflops", "peak_fraction")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(r[h]) for h in head) + " |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", action="store_true", help="print JSON records, not a table")
    ap.add_argument("--quick", action="store_true", help="the three cells the targets name")
    ap.add_argument("--budget-s", type=float, default=1.5, help="seconds per measurement")
    ap.add_argument("--family", choices=("fcdnn", "cnn", "lstm", "transformer", "all"),
                    default="fcdnn")
    args = ap.parse_args()
    device = resolve_device(args.device)
    peak = peak_matmul_gflops(device)
    fams = ("fcdnn", "cnn", "lstm", "transformer") if args.family == "all" else (args.family,)
    rows = []
    if "fcdnn" in fams and args.quick:
        rows += run(device, [32], [FCDNNSpec(32, 2)], [256], args.budget_s, peak=peak)
        rows += run(device, [8, 32, 128], [FCDNNSpec(64, 2)], [1024], args.budget_s, peak=peak)
    elif "fcdnn" in fams:
        rows += run(device, [8, 32, 128], [FCDNNSpec(32, 2), FCDNNSpec(64, 2)],
                    [64, 256, 1024], args.budget_s, peak=peak)
    if "cnn" in fams:  # CNNs memorize with Adam (see the CNN chapter); conv is costlier
        ks = [4, 8] if device.type == "cpu" else [8, 32, 128]
        rows += run(device, ks, [CNNSpec("A")], [64, 256], args.budget_s, "adam", peak)
    if "lstm" in fams:
        rows += run(device, [8, 32, 128], [LSTMSpec(16), LSTMSpec(32)], [64, 256],
                    args.budget_s, "adam", peak)
    if "transformer" in fams:  # the transformer classifier of the LSTM chapter's data
        rows += run(device, [16, 32], [TransformerSpec(1, 16), TransformerSpec(1, 32)], [64],
                    args.budget_s, "adam", peak)
    print(json.dumps(rows, indent=1) if args.json else
          f"device: {rows[0]['device']}, peak float32 matmul "
          f"{rows[0]['peak_matmul_gflops']} GFLOP/s\n" + table(rows))


if __name__ == "__main__":
    main()
