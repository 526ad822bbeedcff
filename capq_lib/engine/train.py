"""Training for memorization: SGD with momentum (or Adam), a learning-rate schedule, and a
stop as soon as every sample is memorized.

The data live on the device as two tensors and batches are index slices of a shuffled
permutation, so one step costs a few kernel launches and no host round trip; the host
reads the accuracy only every ``eval_every`` epochs to decide whether to stop.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
from torch import nn

from capq_lib.core import validate
from capq_lib.core.progress import bar as progress_bar
from capq_lib.nets.datasets import MemorizationSet

SCHEDULES = ("cosine", "step", "constant")
#: SGD with momentum (the paper's choice for FCDNNs) or Adam, whose beta1 is ``momentum``;
#: the paper lists the optimizer among the hyperparameters its grid search may pick
OPTIMIZERS = ("sgd", "adam")
#: more epochs than any budget here could run: a typo (1e15), not a plan
MAX_EPOCHS = 10**6
ADAM_BETA2, ADAM_EPS = 0.999, 1e-8
#: the parts of a recipe each member of a population may set for itself
PER_MEMBER = ("lr", "momentum", "decay_factor")


@dataclass(frozen=True)
class Recipe:
    """How a net is trained: the one recipe type of single nets, populations, the capacity
    search and the quantization study. ``step`` multiplies lr by decay_factor at 50 % and
    75 % of the epochs. Nets trained together as a population may differ only in
    ``PER_MEMBER`` (their own lr, momentum and decay)."""

    epochs: int = 2000
    lr: float = 0.1
    momentum: float = 0.9
    schedule: str = "cosine"
    decay_factor: float = 0.1
    batches_per_epoch: int = 8
    eval_every: int = 25
    optimizer: str = "sgd"
    #: initializations raced per net (populations only): at ``race_at`` of the epochs each
    #: net keeps the restart that has memorized most and the others stop; memorization of
    #: random labels varies a lot with the initialization, and the ranking settles early
    restarts: int = 1
    race_at: float = 0.25

    def __post_init__(self) -> None:
        validate.integer("epochs", self.epochs, lo=1, hi=MAX_EPOCHS)
        validate.number("lr", self.lr, lo=0.0, hi=10.0, lo_open=True)
        validate.number("momentum", self.momentum, lo=0.0, hi=0.999)
        validate.choice("schedule", self.schedule, SCHEDULES)
        validate.number("decay_factor", self.decay_factor, lo=0.0, hi=1.0, lo_open=True)
        validate.integer("batches_per_epoch", self.batches_per_epoch, lo=1)
        validate.integer("eval_every", self.eval_every, lo=1)
        validate.choice("optimizer", self.optimizer, OPTIMIZERS)
        validate.integer("restarts", self.restarts, lo=1, hi=64)
        validate.number("race_at", self.race_at, lo=0.0, hi=0.95, lo_open=True)

    def with_(self, **changes: Any) -> Recipe:
        """This recipe with some fields changed (validated again)."""
        return replace(self, **changes)

    def as_dict(self) -> dict:
        """The fields; without restarts and race_at when there is no race, so the keys of
        results cached before races existed still match."""
        out = asdict(self)
        if self.restarts == 1:
            del out["restarts"], out["race_at"]
        return out


def shared_recipe(recipes: Sequence[Recipe]) -> Recipe:
    """The recipe a population trains with: the first member's, once every member is seen
    to agree with it on everything but ``PER_MEMBER``."""
    first = recipes[0]
    common = {k: v for k, v in asdict(first).items() if k not in PER_MEMBER}
    for r in recipes[1:]:
        other = {k: v for k, v in asdict(r).items() if k not in PER_MEMBER}
        if other != common:
            diff = sorted(k for k in common if common[k] != other[k])
            raise validate.ConfigError(
                f"members trained together must share their recipe but for "
                f"{', '.join(PER_MEMBER)}; these differ: {', '.join(diff)}")
    return first


_MASK32 = 0xFFFFFFFF


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """(x * c) mod 2^32 for 0 <= x < 2^32 in int64, without overflowing int64."""
    lo = (x * (c & 0xFFFF)) & _MASK32
    hi = ((x * (c >> 16)) & 0xFFFF) << 16
    return (lo + hi) & _MASK32


def _hash32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer mixer (lowbias32); the same bits on every device."""
    x = x & _MASK32
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def epoch_order(seeds: torch.Tensor, epoch: int, n_samples: torch.Tensor,
                n_max: int) -> torch.Tensor:
    """Per member, a random permutation of its samples for ``epoch``: shape (K, n_max).

    A counter-based hash of (seed, epoch, index), sorted, so a population draws all its
    members' orders in one kernel, and a net trained alone draws exactly the order it would
    get as a member. Positions beyond a member's n_samples sort last.
    """
    idx = torch.arange(n_max, device=seeds.device, dtype=torch.int64)
    stream = _hash32(_hash32(seeds.to(torch.int64)[:, None] * 0x9E3779B1 + epoch))
    rank = _hash32(stream ^ _hash32(idx[None, :] + 0x632BE5AB)) >> 2
    rank = torch.where(idx[None, :] < n_samples[:, None], rank, 1 << 30)
    # (30-bit hash, index) packed in one int64: all keys differ, so any sort is deterministic
    return torch.sort((rank << 32) | idx[None, :], dim=1).indices


def learning_rate(config: Recipe, step: int, total_steps: int) -> float:
    """The schedule's learning rate at ``step`` of ``total_steps``."""
    if config.schedule == "cosine":
        return 0.5 * config.lr * (1.0 + math.cos(math.pi * step / total_steps))
    if config.schedule == "step":
        frac = step / total_steps
        return config.lr * config.decay_factor ** ((frac >= 0.5) + (frac >= 0.75))
    return config.lr


@dataclass(frozen=True)
class TrainOutcome:
    """What a memorization run ends with: p of Eq. (1) is ``accuracy``."""

    accuracy: float
    loss: float
    epochs_run: int
    wall_time_s: float


@torch.no_grad()
def evaluate(model: nn.Module, data: MemorizationSet, chunk: int = 65536) -> tuple[float, float]:
    """Mean accuracy and cross-entropy on the whole set, in chunks to bound memory."""
    model.eval()
    correct, loss = 0.0, 0.0
    for i in range(0, data.n_samples, chunk):
        logits = model(data.x[i:i + chunk])
        y = data.y[i:i + chunk]
        correct += (logits.argmax(1) == y).sum().item()
        loss += nn.functional.cross_entropy(logits, y, reduction="sum").item()
    model.train()
    return correct / data.n_samples, loss / data.n_samples


def memorize(model: nn.Module, data: MemorizationSet, config: Recipe, seed: int = 0,
             progress: bool = False) -> TrainOutcome:
    """Train ``model`` on ``data`` until every sample is memorized or the epochs run out."""
    if config.restarts != 1:
        raise validate.ConfigError(
            f"restarts must be 1 to train one net, got {config.restarts}; races of "
            "initializations run in populations (population.train_members)")
    device = next(model.parameters()).device
    data = data.to(device)
    n = data.n_samples
    batch = math.ceil(n / config.batches_per_epoch)
    steps_per_epoch = math.ceil(n / batch)
    total = config.epochs * steps_per_epoch
    if config.optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=config.lr,
                               betas=(config.momentum, ADAM_BETA2), eps=ADAM_EPS)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum)
    seeds = torch.tensor([seed], device=device)
    sizes = torch.tensor([n], device=device)
    start, step, epoch = time.perf_counter(), 0, 0
    bar = progress_bar(total=config.epochs, desc="epochs", leave=False, disable=not progress)
    model.train()
    for epoch in range(1, config.epochs + 1):
        perm = epoch_order(seeds, epoch, sizes, n)[0]
        for i in range(0, n, batch):
            for group in opt.param_groups:
                group["lr"] = learning_rate(config, step, total)
            idx = perm[i:i + batch]
            loss = nn.functional.cross_entropy(model(data.x[idx]), data.y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
        bar.update(1)
        if (epoch % config.eval_every == 0 and epoch < config.epochs
                and evaluate(model, data)[0] == 1.0):
            break
    bar.close()
    accuracy, final_loss = evaluate(model, data)
    return TrainOutcome(accuracy, final_loss, epoch, time.perf_counter() - start)
