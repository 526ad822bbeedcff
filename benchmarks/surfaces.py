"""Loss-surface evaluation: alphas one at a time against several at once (torch.func.vmap).

Both compute the same f(alpha) curves (checked here) for real-task nets on random images;
the ratio says whether batching alphas pays on this device.

    python benchmarks/surfaces.py [--device cpu|cuda] [--images 1000]
"""

from __future__ import annotations

import argparse
import time

import torch

from capq_lib.core.devices import describe, resolve_device
from capq_lib.engine.surface import SurfaceConfig, classification_evaluator, loss_surface
from capq_lib.nets.taskmodels import CIFARCNN, CIFARResNet


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--images", type=int, default=1000)
    args = ap.parse_args()
    dev = resolve_device(args.device)
    torch.manual_seed(0)
    x = torch.rand(args.images, 3, 32, 32, device=dev)
    y = torch.randint(0, 10, (args.images,), device=dev)
    print(f"device: {describe(dev)}; {args.images} images, 11 alphas, 2 directions")
    print(f"{'net':14s} {'alphas/call':>11s} {'seconds':>8s} {'speed-up':>9s}")
    for name, net in (("CIFAR tiny", CIFARCNN("tiny")), ("CIFAR small", CIFARCNN("small")),
                      ("ResNet-8", CIFARResNet(8))):
        net = net.to(dev)
        ev = classification_evaluator(x, y)
        base, ref = None, None
        for batch in (1, 4, 12):
            start = time.perf_counter()
            curve = loss_surface(net, ev, SurfaceConfig(-1, 1, 11, 2, alpha_batch=batch))
            if dev.type == "cuda":
                torch.cuda.synchronize()
            took = time.perf_counter() - start
            base = base or took
            if ref is None:
                ref = curve
            assert (curve.loss - ref.loss).abs().max() < 1e-3
            print(f"{name:14s} {batch:11d} {took:8.2f} {base / took:8.2f}x")


if __name__ == "__main__":
    main()
