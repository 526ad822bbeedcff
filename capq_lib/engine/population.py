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

A model family joins with a :class:`StackedModel` subclass that runs K members' forward
pass over (K, B, ...) inputs: FCDNNs with batched matmuls, CNNs with grouped convolutions,
LSTMs with a batched cell (nn.LSTM under vmap falls back to slow loops).
"""

from __future__ import annotations

import copy
import ctypes
import ctypes.util
import functools
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from capq_lib.core import validate
from capq_lib.core.progress import bar as progress_bar
from capq_lib.engine.quantize import Prepared, QuantConfig, prepare, quantized_names, view
from capq_lib.engine.train import (
    ADAM_BETA2,
    ADAM_EPS,
    Recipe,
    epoch_order,
    learning_rate,
    shared_recipe,
)
from capq_lib.nets.datasets import memorization_set
from capq_lib.nets.models import (
    CNNSpec,
    FCDNNSpec,
    LSTMSpec,
    ModelSpec,
    build_cnn,
    build_fcdnn,
    build_lstm,
    cnn_blocks,
    lstm_step,
)
from capq_lib.nets.transformer import TransformerSpec, build_transformer
from capq_lib.nets.transformer import forward as transformer_forward


@dataclass(frozen=True)
class Member:
    """One net of a population: its data (N samples drawn with ``data_seed``), its
    initialization (``init_seed``) and its recipe. Members trained together share every
    part of the recipe but lr, momentum and decay factor (``train.PER_MEMBER``)."""

    n_samples: int
    data_seed: int = 0
    init_seed: int = 0
    recipe: Recipe = field(default_factory=Recipe)

    def __post_init__(self) -> None:
        validate.integer("n_samples", self.n_samples, lo=1)
        validate.integer("data_seed", self.data_seed, lo=0)
        validate.integer("init_seed", self.init_seed, lo=0)
        if not isinstance(self.recipe, Recipe):
            raise validate.ConfigError(f"recipe must be a Recipe, got {self.recipe!r}")

    def with_recipe(self, **changes: Any) -> Member:
        """This member with some recipe fields changed (e.g. a lower lr to retrain)."""
        return replace(self, recipe=self.recipe.with_(**changes))


class StackedModel:
    """K nets of one architecture, each parameter stacked along a leading member axis.

    Built from K ordinary nets (so initialization is exactly theirs) and read back into one
    (``member``); a family only supplies ``forward`` over (K, B, ...) inputs.
    """

    def __init__(self, nets: Sequence[nn.Module], device: torch.device) -> None:
        self.template = nets[0]
        self.names = [n for n, _ in nets[0].named_parameters()]
        self.params = [torch.stack([dict(net.named_parameters())[n].detach() for net in nets])
                       .to(device).requires_grad_() for n in self.names]
        #: the weights the forward pass sees quantized (a step per member), if any
        self.prepared: Prepared | None = None

    def __getitem__(self, name: str) -> torch.Tensor:
        return view(name, self.params[self.names.index(name)], self.prepared)

    def quantize_weights(self, config: QuantConfig | None, deployed: bool = False) -> None:
        """From now on run on ``config``-bit weights (None: float again), a step per member
        and weight tensor fixed from the current float weights; training goes on updating
        the float shadow weights through the straight-through estimator. ``deployed``: the
        read-out and embeddings quantized too (``quantize.quantized_names``)."""
        self.prepared = None if config is None else prepare(
            dict(zip(self.names, self.params, strict=True)),
            quantized_names(self.template, deployed), config, lead=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (K, B, ...) -> (K, B, classes)
        raise NotImplementedError

    def keep(self, rows: torch.Tensor) -> None:
        """Keep only the members at ``rows`` (drop the finished ones)."""
        self.params = [p.detach()[rows].requires_grad_() for p in self.params]
        self.prepared = self.prepared and self.prepared.keep(rows)

    def member(self, k: int) -> nn.Module:
        """Member k as an ordinary net, with its float (shadow) weights."""
        net = copy.deepcopy(self.template).cpu()
        with torch.no_grad():
            for name, p in net.named_parameters():
                p.copy_(self.params[self.names.index(name)][k])
        return net


def _readout(model: StackedModel, h: torch.Tensor) -> torch.Tensor:
    """The 2-way read-out of every member: (K, B, F) -> (K, B, classes)."""
    return torch.baddbmm(model["output.bias"].unsqueeze(1), h,
                         model["output.weight"].transpose(1, 2))


class StackedFCDNN(StackedModel):
    """FCDNN members: baddbmm runs every member's layer at once."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(len(self.template.hidden)):
            w, b = self[f"hidden.{i}.weight"], self[f"hidden.{i}.bias"]
            x = torch.relu(torch.baddbmm(b.unsqueeze(1), x, w.transpose(1, 2)))
        return _readout(self, x)


#: oneDNN's AVX2 convolutions compute output channels in vectors of 8 floats
CPU_CHANNEL_VECTOR = 8
#: on a CPU, members are convolved in sub-stacks whose convolution outputs take at most this
#: many bytes (at least two members): A at batch 69 ran fastest in fours, D at 64 or more in pairs
CPU_CNN_SUBSTACK_BYTES = 10 * 2**20
#: on a CPU, evaluation (no gradients) runs this many samples per member at a time
CPU_CNN_EVAL_SAMPLES = 256


def cnn_substack_size(spec: CNNSpec, batch: int) -> int:
    """Members per sub-stack on a CPU: an even number, 2 or more, within CPU_CNN_SUBSTACK_BYTES."""
    fit = CPU_CNN_SUBSTACK_BYTES // (4 * batch * spec.conv_outputs)
    return max(2, fit // 2 * 2)


def cnn_substacks(k: int, size: int) -> list[int]:
    """Sizes of the consecutive sub-stacks of ``k`` members: ``size`` each, the rest as one
    stack of 2 or 3; never a lone member beside others (one member alone runs 1.4x slower
    per sample than two)."""
    sizes = []
    while k >= size + 2:
        sizes.append(size)
        k -= size
    return sizes + ([k] if k <= 3 or k % 2 == 0 else [2, k - 2])


def pair_block_diagonal(w: torch.Tensor) -> torch.Tensor:
    """Member weights (2m, out, in, kh, kw) as those of m convolutions, one per pair of
    members: (2m out, 2 in, kh, kw), block-diagonal (each member reads only its own inputs)."""
    pairs = w.unflatten(0, (-1, 2))  # (pair p, member g, out o, in i, kh, kw)
    eye = torch.eye(2, dtype=w.dtype, device=w.device)
    return torch.einsum("pgoihw,gj->pgojihw", pairs, eye).flatten(0, 2).flatten(1, 2)


class StackedCNN(StackedModel):
    """CNN members as grouped convolutions (one group per member), channels-last, which
    on a CPU ran twice as fast per member as separate small convolutions.

    On a CPU three more choices, none changing what is computed, made a training step
    1.2x faster for A and D at K = 2-4 (benchmarks/cnn_step.py):

    - members run in sub-stacks of a few (``cnn_substack_size``): per member, grouped
      convolutions over many members ran slower (likely as each group reads the whole
      channels-last activation); D at K = 10 ran 1.4x faster in pairs;
    - in a sub-stack of even size, a layer with fewer than CPU_CHANNEL_VECTOR output
      channels per member convolves each pair of members as one dense convolution with
      block-diagonal weights: oneDNN pads a 4-channel group to 8 anyway, so the pair costs
      no more arithmetic and gets the dense kernels (the first layer ran 1.5-2x faster);
    - evaluation runs the batch in slices of CPU_CNN_EVAL_SAMPLES, whose activations stay
      in cache (3x faster than whole memorization sets at once).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, b = x.shape[:2]
        cpu = x.device.type == "cpu"
        if cpu and not torch.is_grad_enabled() and b > CPU_CNN_EVAL_SAMPLES:
            return torch.cat([self.forward(x[:, i:i + CPU_CNN_EVAL_SAMPLES])
                              for i in range(0, b, CPU_CNN_EVAL_SAMPLES)], dim=1)
        spec: CNNSpec = self.template.spec
        weights = [self[f"convs.{i}.weight"] for i in range(len(spec.convs()))]
        biases = [self[f"convs.{i}.bias"] for i in range(len(spec.convs()))]
        features, lo = [], 0
        for size in cnn_substacks(k, cnn_substack_size(spec, b)) if cpu else [k]:
            rows = slice(lo, lo + size)
            features.append(self._features(x[rows], [w[rows] for w in weights],
                                           [c[rows] for c in biases], pack=cpu))
            lo += size
        return _readout(self, torch.cat(features))

    def _features(self, x: torch.Tensor, weights: list[torch.Tensor],
                  biases: list[torch.Tensor], pack: bool) -> torch.Tensor:
        """One stack's flattened last feature maps: (k, B, 1, H, W) -> (k, B, features)."""
        k, b = x.shape[:2]
        spec: CNNSpec = self.template.spec

        def conv(i: int, h: torch.Tensor) -> torch.Tensor:
            w = weights[i]
            if pack and k % 2 == 0 and w.shape[1] < CPU_CHANNEL_VECTOR:
                w, groups = pair_block_diagonal(w), k // 2
            else:
                w, groups = w.flatten(0, 1), k
            h = nn.functional.conv2d(h, w, biases[i].flatten(), padding=spec.kernel // 2,
                                     groups=groups)
            # one member's 1-channel input reads as NCHW, and so would its output: 2.4x slower
            return h.contiguous(memory_format=torch.channels_last)

        h = x.transpose(0, 1).reshape(b, k * x.shape[2], *x.shape[3:])
        h = cnn_blocks(h.contiguous(memory_format=torch.channels_last), spec, conv)
        return h.reshape(b, k, -1).transpose(0, 1)


class StackedLSTM(StackedModel):
    """LSTM members: the cell's two matmuls per step are batched over members."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (K, B, steps, n_in)
        h = x.new_zeros(*x.shape[:2], self.template.spec.units)
        c = torch.zeros_like(h)
        w_ih, w_hh, bias = self["w_ih"], self["w_hh"], self["bias"].unsqueeze(1)
        for t in range(x.shape[2]):
            h, c = lstm_step(x[:, :, t], h, c, w_ih, w_hh, bias)
        return _readout(self, h)


#: how each family is built alone and stacked
class StackedTransformer(StackedModel):
    """Transformer members: every projection a batched matmul, attention over the members'
    batches at once (``transformer.forward`` is written for stacked members)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return transformer_forward(self.template.spec, self.__getitem__, x)


STACKED_FORMS = {FCDNNSpec: (build_fcdnn, StackedFCDNN), CNNSpec: (build_cnn, StackedCNN),
                 LSTMSpec: (build_lstm, StackedLSTM),
                 TransformerSpec: (build_transformer, StackedTransformer)}


def stacked(spec: ModelSpec, seeds: Sequence[int], device: torch.device) -> StackedModel:
    build, stack = STACKED_FORMS[type(spec)]
    return stack([build(spec, s) for s in seeds], device)


def stack_nets(spec: ModelSpec, nets: Sequence[nn.Module], device: torch.device) -> StackedModel:
    """Trained nets of one architecture as one population (to evaluate or retrain)."""
    return STACKED_FORMS[type(spec)][1](nets, device)


@dataclass
class MemberOutcome:
    """Member k's p of Eq. (1), loss, epochs trained and final net."""

    accuracy: float
    loss: float
    epochs_run: int
    model: nn.Module
    #: the initialization this net came from (with restarts, the one that won the race)
    init_seed: int = 0


@dataclass
class PopulationOutcome:
    members: list[MemberOutcome]
    wall_time_s: float
    model_epochs: int  # sum over members of epochs trained: the work done


#: above this many bytes of float32 inputs, stacked inputs are kept as uint8 (4x smaller)
FLOAT_INPUT_BYTES = 2**30


def stack_memorization_sets(members: Sequence[Member], shape: tuple[int, ...],
                            device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs (K, N_max, *shape), float32 or, when large, uint8; labels (K, N_max)."""
    n_max, n_in = max(m.n_samples for m in members), math.prod(shape)
    small = len(members) * n_max * n_in * 4 <= FLOAT_INPUT_BYTES
    x = torch.zeros(len(members), n_max, *shape, dtype=torch.float32 if small else torch.uint8)
    y = torch.zeros(len(members), n_max, dtype=torch.int64)
    for k, m in enumerate(members):
        data = memorization_set(m.n_samples, n_in, m.data_seed, shape)
        x[k, :m.n_samples] = data.x.to(x.dtype)
        y[k, :m.n_samples] = data.y
    return x.to(device), y.to(device)


class _Schedule:
    """Per member: batch size, steps per epoch, and the lr of every (epoch, step)."""

    def __init__(self, members: Sequence[Member], shared: Recipe, device: torch.device):
        n = [m.n_samples for m in members]
        self.batch = [math.ceil(k / shared.batches_per_epoch) for k in n]
        self.steps = [math.ceil(k / b) for k, b in zip(n, self.batch, strict=True)]
        self.steps_max = max(self.steps)
        self.epochs = shared.epochs
        lr = torch.zeros(shared.epochs, self.steps_max, len(members))
        for k, m in enumerate(members):
            cfg, total = m.recipe, shared.epochs * self.steps[k]
            for s in range(self.steps[k]):
                lr[:, s, k] = torch.tensor([learning_rate(cfg, e * self.steps[k] + s, total)
                                            for e in range(shared.epochs)])
        self.lr = lr.to(device)
        active = torch.arange(self.steps_max)[:, None] < torch.tensor(self.steps)[None, :]
        mom = torch.tensor([m.recipe.momentum for m in members])
        # a member with fewer steps per epoch idles: momentum 1 and lr 0 leave it unchanged
        self.momentum = torch.where(active, mom[None, :], torch.ones(())).to(device)
        self.active = active.to(device=device, dtype=torch.float32)  # (steps_max, K)
        self.beta1 = mom.to(device)
        self.batch_t = torch.tensor(self.batch, device=device)
        self.n_t = torch.tensor(n, device=device)
        self._update_uniform(n)

    def _update_uniform(self, n: list[int]) -> None:
        """True when every member fills every batch: then no sample needs masking."""
        self.uniform = len(set(self.batch)) == 1 and all(k % self.batch[0] == 0 for k in n)

    def keep(self, rows: torch.Tensor) -> None:
        rows_cpu = rows.cpu().tolist()
        self.lr, self.momentum = self.lr[:, :, rows], self.momentum[:, rows]
        self.active, self.beta1 = self.active[:, rows], self.beta1[rows]
        self.batch_t, self.n_t = self.batch_t[rows], self.n_t[rows]
        self.batch = [self.batch[r] for r in rows_cpu]
        self._update_uniform(self.n_t.tolist())


def adam_step(params: list[torch.Tensor], grads: Sequence[torch.Tensor],
              m1: list[torch.Tensor], m2: list[torch.Tensor], t: torch.Tensor,
              sched: _Schedule, e: int, s: int) -> None:
    """torch.optim.Adam's update for every member at once, beta1 = the member's momentum;
    a member without a batch at this step keeps its moments and step count.

    The per-member factors are computed once, and each line of the update runs over all
    parameter tensors in one ``torch._foreach_*`` call: with a few small tensors per net,
    per-op overhead is most of the update's cost (0.75 -> 0.35-0.45 ms per step for CNN A,
    K = 2; the same arithmetic in the same order, so the same bits)."""
    active = sched.active[s]
    t.add_(active)
    b1 = sched.beta1
    idle = 1 - active
    bc1 = 1 - b1 ** t.clamp(min=1)
    bc2 = 1 - ADAM_BETA2 ** t.clamp(min=1)
    factors = torch.stack([idle + active * b1, active * (1 - b1),  # first moment
                           idle + active * ADAM_BETA2, active * (1 - ADAM_BETA2),  # second
                           bc2.sqrt(), sched.lr[e, s] / bc1])  # lr is 0 for an idle member
    # each factor as a (K, 1, ...) view that broadcasts over one parameter tensor
    per_param = [factors.view(len(factors), -1, *(1,) * (p.dim() - 1)).unbind(0)
                 for p in params]
    keep1, new1, keep2, new2, sqrt_bc2, step = ([f[j] for f in per_param] for j in range(6))
    torch._foreach_mul_(m1, keep1)
    torch._foreach_add_(m1, torch._foreach_mul(grads, new1))
    g2 = torch._foreach_mul(grads, grads)
    torch._foreach_mul_(g2, new2)
    torch._foreach_mul_(m2, keep2)
    torch._foreach_add_(m2, g2)
    denom = torch._foreach_sqrt(m2)
    torch._foreach_div_(denom, sqrt_bc2)
    torch._foreach_add_(denom, ADAM_EPS)
    torch._foreach_addcdiv_(params, torch._foreach_mul(m1, step), denom, value=-1.0)


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


def stopping(accuracy: Sequence[float], group: Sequence[int], racing: bool) -> list[bool]:
    """Which members stop now: those of a group (one net's restarts) in which one member has
    memorized every sample, and, when ``racing``, all but the group's most accurate member
    (the first of equals)."""
    best: dict[int, int] = {}
    for r, (a, g) in enumerate(zip(accuracy, group, strict=True)):
        if g not in best or a > accuracy[best[g]]:
            best[g] = r
    return [accuracy[best[g]] == 1.0 or (racing and r != best[g]) for r, g in enumerate(group)]


#: glibc's mallopt parameter numbers (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


@functools.cache
def retain_freed_memory() -> bool:
    """Ask the C library to keep the memory a training step frees, for the next step.

    Every step allocates and frees the same activations. glibc serves large blocks with
    fresh pages from the OS and returns freed ones, and each fresh page costs a page fault
    (2.3 us per 4 KiB measured on the 2-core VM, ~0.6 ms per MB; a CNN step on a CPU took
    1,000-6,000 of them and ran 1.2x faster without). Serving blocks up to 32 MiB (glibc's largest
    setting) from the heap and never trimming it removes them; the process keeps its peak
    memory. Process-wide, once; True when it took effect (not off glibc: macOS, musl)."""
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c")).mallopt
        return (mallopt(_M_MMAP_THRESHOLD, 32 * 2**20) == 1
                and mallopt(_M_TRIM_THRESHOLD, 2**30) == 1)
    except (OSError, AttributeError, TypeError):
        return False


def train_population(model: StackedModel, members: Sequence[Member], x: torch.Tensor,
                     y: torch.Tensor, progress: bool = False,
                     groups: Sequence[int] | None = None) -> PopulationOutcome:
    """Train every member until it memorizes its set or the epochs run out.

    The members' recipes agree on epochs, schedule kind, batches per epoch and evaluation
    interval; each brings its own lr, momentum and decay factor. The inner loop issues no
    host synchronization; the host reads accuracies only every ``eval_every`` epochs, to
    retire finished members. Members with the same entry in ``groups`` are restarts of one
    net: at ``race_at`` of the epochs only the most accurate of them trains on, and once one
    memorizes its set the others stop too.
    """
    validate.integer("population size", len(members), lo=1)
    shared = shared_recipe([m.recipe for m in members])
    device = x.device
    if device.type == "cpu":
        retain_freed_memory()
    group = list(groups) if groups is not None else list(range(len(members)))
    racing_groups = len(set(group)) < len(group)
    race_epoch = max(1, round(shared.race_at * shared.epochs)) if racing_groups else 0
    sched = _Schedule(members, shared, device)
    seeds = torch.tensor([m.init_seed for m in members], device=device)
    alive = torch.arange(len(members), device=device)  # original member ids still training
    bufs = [torch.zeros_like(p) for p in model.params]
    adam = shared.optimizer == "adam"
    sq = [torch.zeros_like(p) for p in model.params] if adam else []
    t = torch.zeros(len(members), device=device)  # Adam's step count per member
    results: dict[int, MemberOutcome] = {}
    start, model_epochs, b_max = time.perf_counter(), 0, max(sched.batch)
    cols = torch.arange(b_max, device=device)
    bar = progress_bar(total=shared.epochs, desc="population", leave=False,
                       disable=not progress)

    def retire(done: torch.Tensor, epoch: int) -> None:
        acc, loss = evaluate_population(model, x, y, sched.n_t)
        for r in done.nonzero().flatten().tolist():
            k = int(alive[r])
            results[k] = MemberOutcome(float(acc[r]), float(loss[r]), epoch, model.member(r),
                                       members[k].init_seed)

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
            with torch.no_grad():
                if adam:
                    adam_step(model.params, grads, bufs, sq, t, sched, epoch - 1, s)
                else:
                    lr, mom = sched.lr[epoch - 1, s], sched.momentum[s]
                    for p, g, buf in zip(model.params, grads, bufs, strict=True):
                        shape = (-1,) + (1,) * (p.dim() - 1)
                        buf.mul_(mom.view(shape)).add_(g)
                        p.addcmul_(lr.view(shape), buf, value=-1.0)
        model_epochs += alive.numel()
        bar.update(1)
        racing = epoch == race_epoch
        if (epoch % shared.eval_every == 0 or racing) and epoch < shared.epochs:
            acc, _ = evaluate_population(model, x, y, sched.n_t)
            done = torch.tensor(stopping(acc.tolist(), [group[k] for k in alive.tolist()],
                                         racing), device=device)
            if bool(done.any()):
                retire(done, epoch)
                keep = (~done).nonzero().flatten()
                if keep.numel() == 0:
                    break
                model.keep(keep)
                bufs, sq, t = [b[keep] for b in bufs], [q[keep] for q in sq], t[keep]
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
#: grouped convolutions on a CPU: measured fastest per member at about four groups
CPU_CNN_MEMBERS = 4


def members_per_pass(spec: ModelSpec, members: Sequence[Member],
                     device: torch.device) -> int:
    """How many members to stack at once: all of them on a GPU; on a CPU as many as keep a
    layer's activations (K x batch x width floats) within CPU_ACTIVATION_BYTES, measured
    faster than one large stack whose activations spill to memory."""
    if device.type != "cpu":
        return len(members)
    if isinstance(spec, CNNSpec):
        return min(len(members), CPU_CNN_MEMBERS)
    if isinstance(spec, TransformerSpec):  # the MLP's activations, at every position
        width = 4 * spec.width * spec.steps
    else:
        width = spec.width if isinstance(spec, FCDNNSpec) else 4 * spec.units
    batch = max(math.ceil(m.n_samples / m.recipe.batches_per_epoch) for m in members)
    return max(1, min(len(members), CPU_ACTIVATION_BYTES // (batch * width * 4)))


def train_members(spec: ModelSpec, members: Sequence[Member], device: torch.device,
                  progress: bool = False,
                  data: tuple[torch.Tensor, torch.Tensor] | None = None) -> PopulationOutcome:
    """Train ``members`` of one architecture as populations (one pass, or a few on a CPU),
    each by its own recipe (they share all of it but ``PER_MEMBER``).

    ``data`` may hold the stacked sets already (from ``stack_memorization_sets``).
    """
    shared = shared_recipe([m.recipe for m in members])
    x, y = data if data is not None else stack_memorization_sets(members, spec.input_shape,
                                                                 device)
    r = shared.restarts
    # restart j of member i: same data, its own initialization (j = 0: the member's own)
    runs = [replace(m, init_seed=restart_seed(m.init_seed, j)) for m in members
            for j in range(r)]
    owner = [i for i in range(len(members)) for _ in range(r)]
    # a pass holds whole races, two at least, so that their winners still train as a
    # population (one CNN alone runs about 1.4x slower per sample than two on a CPU);
    # passes of similar N waste less on padding to the largest member's batch
    per = members_per_pass(spec, runs, device)
    per = per if r == 1 else max(2, per // r) * r
    order = sorted(range(len(runs)), key=lambda k: (runs[k].n_samples, owner[k]))
    outcomes: dict[int, MemberOutcome] = {}
    wall, work = 0.0, 0
    for i in range(0, len(runs), per):
        ids = order[i:i + per]
        batch = [runs[k] for k in ids]
        n_max = max(m.n_samples for m in batch)
        rows = torch.tensor([owner[k] for k in ids], device=x.device)
        model = stacked(spec, [m.init_seed for m in batch], device)
        out = train_population(model, batch, x[rows, :n_max], y[rows, :n_max], progress,
                               groups=[owner[k] for k in ids])
        outcomes.update(zip(ids, out.members, strict=True))
        wall += out.wall_time_s
        work += out.model_epochs
    # each member's net: the most accurate of its restarts (the race's winner, which
    # trained longest, among equals)
    best = [max((outcomes[i * r + j] for j in range(r)),
                key=lambda o: (o.accuracy, o.epochs_run)) for i in range(len(members))]
    return PopulationOutcome(best, wall, work)


def restart_seed(init_seed: int, restart: int) -> int:
    """The initialization seed of a net's ``restart``-th restart (0: its own seed)."""
    return init_seed if restart == 0 else (init_seed + restart * 0x9E3779B1) % 2**31
