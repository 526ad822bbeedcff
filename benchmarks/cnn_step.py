"""A training step of stacked Table-1 CNNs (forward, cross-entropy, gradients, Adam update):
the engine (``StackedCNN.forward``, ``adam_step``) against the previous implementation,
measured in the same run on the same members and batch, with gradients and updates checked
equal, as samples/s and ratios; with ``--epochs``, also a short ``train_members`` run.

    python benchmarks/cnn_step.py                   # A at batch 69, D at 174; K = 2 and 4
    python benchmarks/cnn_step.py --epochs 2        # and 2 epochs of train_members each
    python benchmarks/cnn_step.py --malloc default  # glibc's default (no retain_freed_memory)

Previous: all K members in one grouped convolution per layer, channels-last, and an Adam
update of about 18 small ops per parameter tensor. What the engine does instead is in the
docstrings of ``StackedCNN`` and ``adam_step``. The allocator setting is process-wide, so it
is the same for both columns: run once with ``--malloc default`` for glibc's own behaviour.

Times are the CPU time of this thread (``time.thread_time``), best of interleaved rounds: on
a shared machine other processes stretch the wall time, not this (they still share caches).
"""

from __future__ import annotations

import argparse
import resource
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from capq_lib.engine import population
from capq_lib.engine.population import (
    Member,
    StackedCNN,
    _readout,
    _Schedule,
    stack_memorization_sets,
    stacked,
    train_members,
)
from capq_lib.engine.train import ADAM_BETA2, ADAM_EPS, Recipe
from capq_lib.nets.models import CNNSpec, same_max_pool


def previous_forward(model: StackedCNN, x: torch.Tensor) -> torch.Tensor:
    """The replaced forward pass: one grouped convolution over all K members per layer."""
    k, b = x.shape[:2]
    spec = model.template.spec
    x = x.transpose(0, 1).reshape(b, k * x.shape[2], *x.shape[3:])
    x = x.contiguous(memory_format=torch.channels_last)
    i = 0
    for n in spec.blocks():
        for j in range(n):
            w, bias = model[f"convs.{i}.weight"], model[f"convs.{i}.bias"]
            x = nn.functional.conv2d(x, w.flatten(0, 1), bias.flatten(),
                                     padding=spec.kernel // 2, groups=k)
            if i == 0:
                x = x.contiguous(memory_format=torch.channels_last)
            i += 1
            if j < n - 1:
                x = torch.relu(x)
        x = torch.relu(same_max_pool(x))
    return _readout(model, x.reshape(b, k, -1).transpose(0, 1))


def previous_adam_step(params: list[torch.Tensor], grads: Sequence[torch.Tensor],
                       m1: list[torch.Tensor], m2: list[torch.Tensor], t: torch.Tensor,
                       sched: _Schedule, e: int, s: int) -> None:
    """The replaced Adam update: one parameter tensor at a time."""
    active = sched.active[s]
    t.add_(active)
    b1 = sched.beta1
    bc1 = 1 - b1 ** t.clamp(min=1)
    bc2 = 1 - ADAM_BETA2 ** t.clamp(min=1)
    step = sched.lr[e, s] / bc1
    for p, g, mm, vv in zip(params, grads, m1, m2, strict=True):
        shape = (-1,) + (1,) * (p.dim() - 1)
        keep = (1 - active).view(shape)
        mm.mul_(keep + active.view(shape) * b1.view(shape)).add_(
            g * (active * (1 - b1)).view(shape))
        vv.mul_(keep + active.view(shape) * ADAM_BETA2).add_(
            g * g * (active * (1 - ADAM_BETA2)).view(shape))
        denom = (vv.sqrt() / bc2.sqrt().view(shape)).add_(ADAM_EPS)
        p.addcdiv_(mm * step.view(shape), denom, value=-1.0)


VARIANTS = {"previous": (previous_forward, previous_adam_step),
            "engine": (StackedCNN.forward, population.adam_step)}


class Stepper:
    """One variant's training steps on a shared batch, with its own weights and Adam state."""

    def __init__(self, spec: CNNSpec, k: int, x: torch.Tensor, y: torch.Tensor,
                 variant: str) -> None:
        self.model = stacked(spec, list(range(k)), torch.device("cpu"))
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():  # a nonzero read-out, so that the convolutions get gradients
            for p in self.model.params:
                p.add_(0.05 * torch.randn(p.shape, generator=g))
        self.forward, self.adam = VARIANTS[variant]
        self.x, self.y = x, y
        shared = Recipe(epochs=1, batches_per_epoch=1, optimizer="adam")
        members = [Member(x.shape[1], recipe=shared.with_(lr=1e-3 * (m + 1))) for m in range(k)]
        self.sched = _Schedule(members, shared, torch.device("cpu"))
        self.m1 = [torch.zeros_like(p) for p in self.model.params]
        self.m2 = [torch.zeros_like(p) for p in self.model.params]
        self.t = torch.zeros(k)

    def step(self) -> tuple[torch.Tensor, ...]:
        logits = self.forward(self.model, self.x)
        loss = nn.functional.cross_entropy(logits.flatten(0, 1), self.y.flatten(),
                                           reduction="none").view(self.y.shape).mean(1).sum()
        grads = torch.autograd.grad(loss, self.model.params)
        with torch.no_grad():
            self.adam(self.model.params, grads, self.m1, self.m2, self.t, self.sched, 0, 0)
        return grads


def best_step_s(steppers: dict[str, Stepper], rounds: int, reps: int) -> dict[str, float]:
    """Per variant, the best over ``rounds`` interleaved rounds of ``reps`` steps each."""
    best = dict.fromkeys(steppers, float("inf"))
    for _ in range(rounds):
        for name, st in steppers.items():
            st.step()  # warm: the other variant ran last
            t = time.thread_time()
            for _ in range(reps):
                st.step()
            best[name] = min(best[name], (time.thread_time() - t) / reps)
    return best


def step_table(models: list[str], ks: list[int], batches: dict[str, int], rounds: int,
               reps: int) -> None:
    print("| model | K | batch | previous (samples/s) | engine (samples/s) | engine / previous "
          "| page faults / step |")
    print("|---|---|---|---|---|---|---|")
    for name in models:
        spec = CNNSpec(name)
        for k in ks:
            g = torch.Generator().manual_seed(k)
            x = (torch.rand(k, batches[name], 1, 32, 32, generator=g) < 0.5).float()
            y = torch.randint(0, 2, (k, batches[name]), generator=g)
            steppers = {v: Stepper(spec, k, x, y, v) for v in VARIANTS}
            # the same start gives the same gradients and update, up to float rounding
            g_prev, g_eng = steppers["previous"].step(), steppers["engine"].step()
            for u, v in zip(g_prev, g_eng, strict=True):
                torch.testing.assert_close(u, v, atol=1e-5, rtol=1e-4)
            for p, q in zip(steppers["previous"].model.params, steppers["engine"].model.params,
                            strict=True):
                torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-5)
            faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            best = best_step_s(steppers, rounds, reps)
            faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / (
                rounds * (reps + 1) * len(steppers))
            n = k * batches[name]
            print(f"| {name} | {k} | {batches[name]} | {n / best['previous']:,.0f} | "
                  f"{n / best['engine']:,.0f} | {best['previous'] / best['engine']:.2f}x | "
                  f"{faults:,.0f} |", flush=True)


@contextmanager
def variant_in_engine(variant: str) -> Iterator[None]:
    """Within the block, the engine trains with the variant's forward pass and Adam update."""
    forward, adam = StackedCNN.forward, population.adam_step
    StackedCNN.forward, population.adam_step = VARIANTS[variant]
    try:
        yield
    finally:
        StackedCNN.forward, population.adam_step = forward, adam


def population_table(models: list[str], ks: list[int], batches: dict[str, int],
                     epochs: int) -> None:
    """``train_members`` for a few epochs (64 batches each, Adam, no early stop), timed whole:
    data gathering, steps, updates and the final evaluation."""
    print("\n| model | K | N | epochs | previous (samples/s) | engine (samples/s) | "
          "engine / previous |\n|---|---|---|---|---|---|---|")
    shared = Recipe(epochs=epochs, eval_every=10**6, optimizer="adam",
                         batches_per_epoch=64, lr=2e-3)
    for name in models:
        spec = CNNSpec(name)
        for k in ks:
            n = batches[name] * 64
            members = [Member(n, m, m, shared) for m in range(k)]
            data = stack_memorization_sets(members, spec.input_shape, torch.device("cpu"))
            out, cpu_s = {}, {}
            for variant in VARIANTS:
                t = time.thread_time()
                with variant_in_engine(variant):
                    out[variant] = train_members(spec, members, torch.device("cpu"),
                                                 data=data)
                cpu_s[variant] = time.thread_time() - t
            for a, b in zip(out["previous"].members, out["engine"].members, strict=True):
                for p, q in zip(a.model.parameters(), b.model.parameters(), strict=True):
                    torch.testing.assert_close(p, q, atol=1e-3, rtol=1e-3)
            rate = {v: k * n * epochs / s for v, s in cpu_s.items()}
            print(f"| {name} | {k} | {n} | {epochs} | {rate['previous']:,.0f} | "
                  f"{rate['engine']:,.0f} | {rate['engine'] / rate['previous']:.2f}x |",
                  flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="A,D")
    ap.add_argument("--members", default="2,4", help="K, comma-separated")
    ap.add_argument("--batch", default="A=69,D=174",
                    help="per member and model (quick book: N = 2.1-2.25 P in 64 batches)")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=0, help="train_members epochs (0: skip)")
    ap.add_argument("--malloc", choices=["keep", "default"], default="keep",
                    help="keep: population.retain_freed_memory, as training on a CPU does")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.malloc == "keep":
        print(f"retain_freed_memory: {population.retain_freed_memory()}")
    else:  # train_members would ask for it
        population.retain_freed_memory = lambda: False
    models, ks = a.models.split(","), [int(k) for k in a.members.split(",")]
    batches = {m: round(2.2 * CNNSpec(m).n_params / 64) for m in models}
    batches.update({m: int(b) for m, b in (kv.split("=") for kv in a.batch.split(","))})
    step_table(models, ks, batches, a.rounds, a.reps)
    if a.epochs:
        population_table(models, ks, batches, a.epochs)


if __name__ == "__main__":
    main()
