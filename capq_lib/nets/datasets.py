"""Random memorization sets: N distinct random binary inputs, each with a uniform random label.

Inputs and labels are independent, so anything a net gets right beyond chance it must have
stored in its parameters (Sec. 3.1). Everything here is deterministic in ``seed``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from capq_lib.core import validate

#: below this many possible inputs, distinct rows are drawn by sampling integers directly
_ENUMERABLE_BITS = 24


@dataclass(frozen=True)
class MemorizationSet:
    """Inputs ``x`` (N x n_in, float 0/1) and labels ``y`` (N, int64 in {0, 1})."""

    x: torch.Tensor
    y: torch.Tensor

    @property
    def n_samples(self) -> int:
        return int(self.y.shape[0])

    def to(self, device: torch.device | str) -> MemorizationSet:
        return MemorizationSet(self.x.to(device), self.y.to(device))


def check_size(n_samples: int, n_in: int) -> None:
    """Refuse sets the paper's setting cannot hold: it needs n_in > log2 N (Sec. 4.1)."""
    validate.integer("n_in", n_in, lo=1)
    validate.integer("n_samples", n_samples, lo=1)
    if n_samples >= 2 ** n_in:
        raise validate.ConfigError(
            f"n_samples={n_samples} is too large for n_in={n_in}: distinct binary inputs need "
            f"n_in > log2(n_samples) = {math.log2(n_samples):.2f}, so n_samples must be "
            f"< 2**n_in = {2 ** n_in}"
        )


def random_binary_inputs(n_samples: int, n_in: int, seed: int) -> np.ndarray:
    """N distinct rows of n_in random bits (uint8), uniform over all such sets of rows."""
    check_size(n_samples, n_in)
    rng = np.random.default_rng(seed)
    if n_in <= _ENUMERABLE_BITS:
        codes = rng.choice(2 ** n_in, size=n_samples, replace=False)
        shifts = np.arange(n_in - 1, -1, -1, dtype=np.int64)
        return ((codes[:, None] >> shifts) & 1).astype(np.uint8)
    rows = rng.integers(0, 2, size=(n_samples, n_in), dtype=np.uint8)
    while True:  # redraw duplicates; with n_in > 24 there are almost never any
        _, first = np.unique(np.packbits(rows, axis=1), axis=0, return_index=True)
        dup = np.setdiff1d(np.arange(n_samples), first)
        if dup.size == 0:
            return rows
        rows[dup] = rng.integers(0, 2, size=(dup.size, n_in), dtype=np.uint8)


def random_labels(n_samples: int, seed: int) -> np.ndarray:
    """N independent fair-coin labels (int64)."""
    rng = np.random.default_rng([seed, 1])
    return rng.integers(0, 2, size=n_samples, dtype=np.int64)


def memorization_set(n_samples: int, n_in: int, seed: int = 0,
                     shape: tuple[int, ...] | None = None) -> MemorizationSet:
    """X in {0,1}^(N x n_in) with fair-coin labels Y in {0,1}^N (Sec. 4.1).

    With ``shape`` (whose product is n_in) each random binary vector is reshaped, which is
    how the paper makes CNN images (1 x 32 x 32) and RNN sequences (5 steps x 32)."""
    validate.integer("seed", seed, lo=0)
    x = torch.from_numpy(random_binary_inputs(n_samples, n_in, seed)).float()
    if shape is not None:
        if math.prod(shape) != n_in:
            raise validate.ConfigError(f"shape {shape} does not hold n_in={n_in} values")
        x = x.view(n_samples, *shape)
    y = torch.from_numpy(random_labels(n_samples, seed))
    return MemorizationSet(x, y)
