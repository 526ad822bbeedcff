"""One training step (forward, cross-entropy, gradients) of stacked Table-1 CNNs, with the
pooling and memory-layout choices the engine makes against the ones it replaced, as
ratios measured in the same run (same members, same batch; gradients checked equal).

    python benchmarks/cnn_step.py            # A and D, K = 1, 2 and 4, one thread

Variants: ``pad`` pads with -inf and pools (a copy of every activation map); ``ceil``
pools with ceil_mode (the same windows, no copy) and runs the block's last ReLU after the
pool; ``ceil, NCHW 1st`` is ``ceil`` with the first activation left in the layout one
member's 1-channel input gives (NCHW), as before the engine forced channels-last.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from capq_lib.models import CNNSpec
from capq_lib.population import StackedCNN, _readout, stacked


def _forward(model: StackedCNN, x: torch.Tensor, variant: str) -> torch.Tensor:
    """``ceil`` is the engine's own forward pass; the others rebuild the replaced ones."""
    if variant == "ceil":
        return model.forward(x)
    k, b = x.shape[:2]
    spec = model.template.spec
    x = x.transpose(0, 1).reshape(b, k, *x.shape[3:]).contiguous(
        memory_format=torch.channels_last)
    i = 0
    for n in spec.blocks():
        for j in range(n):
            w, bias = model[f"convs.{i}.weight"], model[f"convs.{i}.bias"]
            x = nn.functional.conv2d(x, w.flatten(0, 1), bias.flatten(),
                                     padding=spec.kernel // 2, groups=k)
            i += 1
            if variant == "pad" or j < n - 1:
                x = torch.relu(x)
        if variant == "pad":
            x = nn.functional.max_pool2d(nn.functional.pad(x, (0, 1, 0, 1),
                                                           value=-torch.inf), 3, 2)
        else:
            x = torch.relu(nn.functional.max_pool2d(x, 3, 2, ceil_mode=True))
    return _readout(model, x.reshape(b, k, -1).transpose(0, 1))


def step_ms(model: StackedCNN, x: torch.Tensor, y: torch.Tensor, variant: str,
            reps: int = 20) -> tuple[float, list[torch.Tensor]]:
    """Best of three timings of ``reps`` steps, and the gradients of one step."""
    def step() -> list[torch.Tensor]:
        logits = _forward(model, x, variant)
        loss = nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten(),
                                           reduction="none").view(y.shape).mean(1).sum()
        return list(torch.autograd.grad(loss, model.params))

    grads = step()
    for _ in range(3):
        step()
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(reps):
            step()
        best = min(best, (time.perf_counter() - t) / reps * 1000)
    return best, grads


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="A,D")
    ap.add_argument("--members", default="1,2,4")
    ap.add_argument("--batch", type=int, default=0, help="per member (0: N/64 at 2.2 N/P)")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    print("| model | K | batch | pad (ms) | ceil, NCHW 1st | ceil (ms) | pad / ceil |")
    print("|---|---|---|---|---|---|---|")
    for name in a.models.split(","):
        spec = CNNSpec(name)
        batch = a.batch or round(2.2 * spec.n_params / 64)
        for k in map(int, a.members.split(",")):
            model = stacked(spec, list(range(k)), torch.device("cpu"))
            g = torch.Generator().manual_seed(k)
            x = (torch.rand(k, batch, 1, 32, 32, generator=g) < 0.5).float()
            y = torch.randint(0, 2, (k, batch), generator=g)
            t_pad, g_pad = step_ms(model, x, y, "pad")
            t_nchw, _ = step_ms(model, x, y, "ceil-nchw")
            t_ceil, g_ceil = step_ms(model, x, y, "ceil")
            for u, v in zip(g_pad, g_ceil, strict=True):
                torch.testing.assert_close(u, v, atol=1e-5, rtol=1e-4)
            print(f"| {name} | {k} | {batch} | {t_pad:.2f} | {t_nchw:.2f} | {t_ceil:.2f} | "
                  f"{t_pad / t_ceil:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
