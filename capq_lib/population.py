"""Population training: K independent nets of one architecture in one batched computation.

Small nets leave a CPU's vector units and a GPU's thousands of cores idle, and per-step
overhead (Python, kernel launches) dominates. Stacking K members' weights and running them
with batched matmuls pays that overhead once per step for all K. Each member keeps its own
initialization, data set (its own N and seed), learning rate, momentum and decay factor,
and its own stopping point: a member that has memorized its set is taken out of the stack
at the next evaluation and costs nothing afterwards.

Member k ends with the same weights as ``train.memorize`` on the same net, data, seed and
hyperparameters (up to float rounding): same initialization, same sample order
(``train.epoch_order``), same schedule, the same SGD update.

A model family joins by providing a :class:`StackedModel`: its parameters with a leading
member dimension, a forward pass over (K, B, ...) inputs, and the inverse (per-member
modules) for reading members out.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from . import validate
from .datasets import memorization_set
from .models import FCDNN, FCDNNSpec, build_fcdnn
from .progress import bar as progress_bar
from .train import TrainConfig, epoch_order, learning_rate


@dataclass(frozen=True)
class Member:
    """What differs between members: data (N, seed), init seed and optimizer settings."""

    n_samples: int
    lr: float = 0.1
    momentum: float = 0.9
    decay_factor: float = 0.1
    data_seed: int = 0
    init_seed: int = 0

    def __post_init__(self) -> None:
        validate.integer("n_samples", self.n_samples, lo=1)
        validate.integer("data_seed", self.data_seed, lo=0)
        validate.integer("init_seed", self.init_seed, lo=0)
        self.train_config(TrainConfig())  # lr, momentum, decay_factor: checked as for one net

    def train_config(self, shared: TrainConfig) -> TrainConfig:
        """This member's settings as a single-net TrainConfig."""
        return TrainConfig(epochs=shared.epochs, lr=self.lr, momentum=self.momentum,
                           schedule=shared.schedule, decay_factor=self.decay_factor,
                           batches_per_epoch=shared.batches_per_epoch,
                           eval_every=shared.eval_every)


class StackedModel:
    """The interface a family implements to be trained as a population."""

    params: list[torch.Tensor]  # each (K, ...), requires_grad

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (K, B, ...) -> (K, B, classes)
        raise NotImplementedError

    def keep(self, rows: torch.Tensor) -> None:
        """Keep only the members at ``rows`` (drop the finished ones)."""
        self.params = [p.detach()[rows].requires_grad_() for p in self.params]

    def member(self, k: int) -> nn.Module:
        raise NotImplementedError


class StackedFCDNN(StackedModel):
    """FCDNN members: per layer W (K, out, in) and b (K, out); baddbmm does all K at once."""

    def __init__(self, spec: FCDNNSpec, init_seeds: Sequence[int], device: torch.device):
        self.spec = spec
        nets = [build_fcdnn(spec, s) for s in init_seeds]
        layers = lambda net: [*net.hidden, net.output]  # noqa: E731
        self.params = []
        for i in range(spec.depth + 1):
            w = torch.stack([layers(n)[i].weight.detach() for n in nets])
            b = torch.stack([layers(n)[i].bias.detach() for n in nets])
            self.params += [w.to(device).requires_grad_(), b.to(device).requires_grad_()]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n_layers = len(self.params) // 2
        for i in range(n_layers):
            w, b = self.params[2 * i], self.params[2 * i + 1]
            x = torch.baddbmm(b.unsqueeze(1), x, w.transpose(1, 2))
            if i < n_layers - 1:
                x = torch.relu(x)
        return x

    def member(self, k: int) -> FCDNN:
        net = FCDNN(self.spec)
        layers = [*net.hidden, net.output]
        with torch.no_grad():
            for i, layer in enumerate(layers):
                layer.weight.copy_(self.params[2 * i][k])
                layer.bias.copy_(self.params[2 * i + 1][k])
        return net


@dataclass
class MemberOutcome:
    """Member k's p of Eq. (1), loss, epochs trained and final net."""

    accuracy: float
    loss: float
    epochs_run: int
    model: nn.Module


@dataclass
class PopulationOutcome:
    members: list[MemberOutcome]
    wall_time_s: float
    model_epochs: int  # sum over members of epochs trained: the work done


#: above this many bytes of float32 inputs, stacked inputs are kept as uint8 (4x smaller)
FLOAT_INPUT_BYTES = 2**30


def stack_memorization_sets(members: Sequence[Member], n_in: int, device: torch.device
                            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs (K, N_max, n_in), float32 or, when large, uint8; labels (K, N_max)."""
    n_max = max(m.n_samples for m in members)
    small = len(members) * n_max * n_in * 4 <= FLOAT_INPUT_BYTES
    x = torch.zeros(len(members), n_max, n_in, dtype=torch.float32 if small else torch.uint8)
    y = torch.zeros(len(members), n_max, dtype=torch.int64)
    for k, m in enumerate(members):
        data = memorization_set(m.n_samples, n_in, m.data_seed)
        x[k, :m.n_samples] = data.x.to(x.dtype)
        y[k, :m.n_samples] = data.y
    return x.to(device), y.to(device)


class _Schedule:
    """Per member: batch size, steps per epoch, and the lr of every (epoch, step)."""

    def __init__(self, members: Sequence[Member], shared: TrainConfig, device: torch.device):
        n = [m.n_samples for m in members]
        self.batch = [math.ceil(k / shared.batches_per_epoch) for k in n]
        self.steps = [math.ceil(k / b) for k, b in zip(n, self.batch, strict=True)]
        self.steps_max = max(self.steps)
        self.epochs = shared.epochs
        lr = torch.zeros(shared.epochs, self.steps_max, len(members))
        for k, m in enumerate(members):
            cfg, total = m.train_config(shared), shared.epochs * self.steps[k]
            for s in range(self.steps[k]):
                lr[:, s, k] = torch.tensor([learning_rate(cfg, e * self.steps[k] + s, total)
                                            for e in range(shared.epochs)])
        self.lr = lr.to(device)
        active = torch.arange(self.steps_max)[:, None] < torch.tensor(self.steps)[None, :]
        mom = torch.tensor([m.momentum for m in members])
        # a member with fewer steps per epoch idles: momentum 1 and lr 0 leave it unchanged
        self.momentum = torch.where(active, mom[None, :], torch.ones(())).to(device)
        self.batch_t = torch.tensor(self.batch, device=device)
        self.n_t = torch.tensor(n, device=device)
        self._update_uniform(n)

    def _update_uniform(self, n: list[int]) -> None:
        """True when every member fills every batch: then no sample needs masking."""
        self.uniform = len(set(self.batch)) == 1 and all(k % self.batch[0] == 0 for k in n)

    def keep(self, rows: torch.Tensor) -> None:
        rows_cpu = rows.cpu().tolist()
        self.lr, self.momentum = self.lr[:, :, rows], self.momentum[:, rows]
        self.batch_t, self.n_t = self.batch_t[rows], self.n_t[rows]
        self.batch = [self.batch[r] for r in rows_cpu]
        self._update_uniform(self.n_t.tolist())


@torch.no_grad()
def evaluate_population(model: StackedModel, x: torch.Tensor, y: torch.Tensor,
                        n: torch.Tensor, chunk: int = 65536) -> tuple[torch.Tensor, torch.Tensor]:
    """Per member accuracy and mean cross-entropy over its own samples (two (K,) tensors)."""
    correct = torch.zeros(x.shape[0], device=x.device, dtype=torch.float64)
    loss = torch.zeros(x.shape[0], device=x.device, dtype=torch.float64)
    for i in range(0, x.shape[1], chunk):
        logits = model.forward(x[:, i:i + chunk].float())
        yy = y[:, i:i + chunk]
        valid = (torch.arange(i, i + yy.shape[1], device=x.device)[None, :] < n[:, None])
        ce = nn.functional.cross_entropy(logits.flatten(0, 1), yy.flatten(), reduction="none")
        loss += (ce.view_as(yy) * valid).sum(1)
        correct += ((logits.argmax(-1) == yy) & valid).sum(1)
    return correct / n.double(), loss / n.double()


def train_population(model: StackedModel, members: Sequence[Member], x: torch.Tensor,
                     y: torch.Tensor, shared: TrainConfig, progress: bool = False
                     ) -> PopulationOutcome:
    """Train every member until it memorizes its set or the epochs run out.

    ``shared`` gives what all members share (epochs, schedule kind, batches per epoch,
    evaluation interval); each member brings its own lr, momentum and decay factor.
    The inner loop issues no host synchronization; the host reads accuracies only every
    ``shared.eval_every`` epochs, to retire finished members.
    """
    validate.integer("population size", len(members), lo=1)
    device = x.device
    sched = _Schedule(members, shared, device)
    seeds = torch.tensor([m.init_seed for m in members], device=device)
    alive = torch.arange(len(members), device=device)  # original member ids still training
    bufs = [torch.zeros_like(p) for p in model.params]
    results: dict[int, MemberOutcome] = {}
    start, model_epochs, b_max = time.perf_counter(), 0, max(sched.batch)
    cols = torch.arange(b_max, device=device)
    bar = progress_bar(total=shared.epochs, desc="population", leave=False,
                       disable=not progress)

    def retire(done: torch.Tensor, epoch: int) -> None:
        acc, loss = evaluate_population(model, x, y, sched.n_t)
        for r in done.nonzero().flatten().tolist():
            results[int(alive[r])] = MemberOutcome(float(acc[r]), float(loss[r]), epoch,
                                                   model.member(r))

    for epoch in range(1, shared.epochs + 1):
        order = epoch_order(seeds, epoch, sched.n_t, x.shape[1])
        # flat row offsets: index_select on (K * N_max, ...) is much cheaper than x[r, idx]
        base = torch.arange(alive.numel(), device=device)[:, None] * x.shape[1]
        x_flat, y_flat = x.flatten(0, 1), y.flatten()
        for s in range(sched.steps_max):
            pos = s * sched.batch_t[:, None] + cols[None, :b_max]
            idx = order.gather(1, pos.clamp(max=x.shape[1] - 1)) + base
            xb = x_flat.index_select(0, idx.flatten()).view(*idx.shape, *x.shape[2:])
            logits = model.forward(xb if xb.is_floating_point() else xb.float())
            ce = nn.functional.cross_entropy(logits.flatten(0, 1),
                                             y_flat.index_select(0, idx.flatten()),
                                             reduction="none").view_as(idx)
            if sched.uniform:
                loss = ce.mean(1).sum()
            else:
                valid = (cols[None, :b_max] < sched.batch_t[:, None]) & (pos < sched.n_t[:, None])
                loss = ((ce * valid).sum(1) / valid.sum(1).clamp(min=1)).sum()
            grads = torch.autograd.grad(loss, model.params)
            lr, mom = sched.lr[epoch - 1, s], sched.momentum[s]
            with torch.no_grad():
                for p, g, buf in zip(model.params, grads, bufs, strict=True):
                    shape = (-1,) + (1,) * (p.dim() - 1)
                    buf.mul_(mom.view(shape)).add_(g)
                    p.addcmul_(lr.view(shape), buf, value=-1.0)
        model_epochs += alive.numel()
        bar.update(1)
        if epoch % shared.eval_every == 0 and epoch < shared.epochs:
            acc, _ = evaluate_population(model, x, y, sched.n_t)
            done = acc == 1.0
            if bool(done.any()):
                retire(done, epoch)
                keep = (~done).nonzero().flatten()
                if keep.numel() == 0:
                    break
                model.keep(keep)
                bufs = [b[keep] for b in bufs]
                sched.keep(keep)
                x, y, seeds, alive = x[keep], y[keep], seeds[keep], alive[keep]
                b_max = max(sched.batch)
    if alive.numel() and len(results) < len(members):
        retire(torch.ones(alive.numel(), dtype=torch.bool, device=device), epoch)
    bar.close()
    return PopulationOutcome([results[k] for k in range(len(members))],
                             time.perf_counter() - start, model_epochs)


#: on a CPU, members per pass are capped so one layer's activations stay in cache
CPU_ACTIVATION_BYTES = 2 * 2**20


def members_per_pass(spec: FCDNNSpec, members: Sequence[Member], shared: TrainConfig,
                     device: torch.device) -> int:
    """How many members to stack at once: all of them on a GPU; on a CPU as many as keep a
    layer's activations (K x batch x width floats) within CPU_ACTIVATION_BYTES, measured
    faster than one large stack whose activations spill to memory."""
    if device.type != "cpu":
        return len(members)
    batch = max(math.ceil(m.n_samples / shared.batches_per_epoch) for m in members)
    return max(1, min(len(members), CPU_ACTIVATION_BYTES // (batch * spec.width * 4)))


def train_fcdnn_population(spec: FCDNNSpec, members: Sequence[Member], shared: TrainConfig,
                           device: torch.device, progress: bool = False,
                           data: tuple[torch.Tensor, torch.Tensor] | None = None
                           ) -> PopulationOutcome:
    """Train ``members`` as populations of stacked FCDNNs (one pass, or a few on a CPU).

    ``data`` may hold the stacked sets already (from ``stack_memorization_sets``).
    """
    x, y = data if data is not None else stack_memorization_sets(members, spec.n_in, device)
    per = members_per_pass(spec, members, shared, device)
    # passes of similar N waste less on padding to the largest member's batch
    order = sorted(range(len(members)), key=lambda k: members[k].n_samples)
    outcomes: dict[int, MemberOutcome] = {}
    wall, work = 0.0, 0
    for i in range(0, len(members), per):
        ids = order[i:i + per]
        group = [members[k] for k in ids]
        n_max = max(m.n_samples for m in group)
        rows = torch.tensor(ids, device=x.device)
        model = StackedFCDNN(spec, [m.init_seed for m in group], device)
        out = train_population(model, group, x[rows, :n_max], y[rows, :n_max], shared, progress)
        outcomes.update(zip(ids, out.members, strict=True))
        wall += out.wall_time_s
        work += out.model_epochs
    return PopulationOutcome([outcomes[k] for k in range(len(members))], wall, work)
