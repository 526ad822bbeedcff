"""Uniform symmetric fixed-point quantization of weights, the kind the paper builds on, and
the one fake-quantization path (prepare, view, bake) that populations, real-task nets and
the tests share.

A b-bit weight takes one of the levels {-M, ..., M} * step with M = 2^(b-1) - 1, so 2 bits
is ternary {-step, 0, step}; 1 bit is binary {-step, +step}. Every FC weight matrix, conv
kernel and LSTM weight matrix gets its own step (one per member when K nets are stacked);
biases and the output layer stay in float, as in the paper.

Two step rules: ``max`` spreads the levels over the largest |w|; ``l2`` picks the step that
minimizes the squared quantization error (searched over a grid of candidates, then refined
by alternating code and step updates, which never increase the error, so it is never worse
than ``max``).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from capq_lib.core import validate

STEP_RULES = ("l2", "max")
#: the progressive schedule: float first, then these bit widths, retraining after each
DEFAULT_SCHEDULE = (12, 10, 8, 6, 5, 4, 3, 2)
#: candidate steps for the l2 rule, as fractions of the max-abs step
_CANDIDATES = torch.logspace(-2.5, 0, 48, base=10.0, dtype=torch.float64)
_REFINE_ITERATIONS = 8


@dataclass(frozen=True)
class QuantConfig:
    """What to quantize to: ``bits`` per weight and the rule that picks each step."""

    bits: int
    step_rule: str = "l2"

    def __post_init__(self) -> None:
        object.__setattr__(self, "bits", check_bits(self.bits))
        validate.choice("step_rule", self.step_rule, STEP_RULES)


def check_bits(bits: int) -> int:
    return validate.integer("bits", bits, lo=1, hi=32)


def top_level(bits: int) -> int:
    """M: the largest code. 1 bit is binary (codes -1, +1), so M is 1 there as for ternary."""
    return max(1, 2 ** (check_bits(bits) - 1) - 1)


def codes(w: torch.Tensor, step: torch.Tensor, bits: int) -> torch.Tensor:
    """Integer codes (as floats) of ``w`` on the grid ``step``; ``step`` broadcasts from the
    leading dimensions of ``w``."""
    m = top_level(bits)
    scaled = w / _expand(step, w)
    if bits == 1:
        return torch.where(scaled >= 0, 1.0, -1.0).to(w.dtype)
    return scaled.round().clamp(-m, m)


def quantize_tensor(w: torch.Tensor, step: torch.Tensor, bits: int) -> torch.Tensor:
    """``w`` rounded to the nearest of the 2^b - 1 levels (2 for b = 1)."""
    return codes(w, step, bits) * _expand(step, w)


def step_size(w: torch.Tensor, bits: int, rule: str = "l2", lead: int = 0) -> torch.Tensor:
    """One step per slice over the first ``lead`` dimensions of ``w`` (shape ``w.shape[:lead]``)."""
    validate.choice("step_rule", rule, STEP_RULES)
    m = top_level(bits)
    flat = w.detach().reshape(*w.shape[:lead], -1).double()
    peak = flat.abs().amax(-1).clamp(min=torch.finfo(torch.float32).tiny)
    if rule == "max":
        return (peak / m).to(w.dtype)
    # grid search: error of every candidate for every slice, candidates on a new axis
    cand = (peak / m).unsqueeze(-1) * _CANDIDATES.to(w.device)          # (*lead, C)
    err = torch.stack([_error(flat, cand[..., c], bits) for c in range(cand.shape[-1])], -1)
    step = cand.gather(-1, err.argmin(-1, keepdim=True)).squeeze(-1)
    for _ in range(_REFINE_ITERATIONS):  # Lloyd: best codes for the step, best step for them
        c = codes(flat, step, bits)
        cc = (c * c).sum(-1)
        step = torch.where(cc > 0, (flat * c).sum(-1) / cc.clamp(min=1), step)
    return step.to(w.dtype)


def _error(flat: torch.Tensor, step: torch.Tensor, bits: int) -> torch.Tensor:
    return (quantize_tensor(flat, step, bits) - flat).pow(2).sum(-1)


def _expand(step: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return step.reshape(*step.shape, *([1] * (w.dim() - step.dim())))


#: parameters that are tables, not weight matrices: a transformer's token and position
#: embeddings (kept in float like the read-out, unless a deployed model is asked for)
EMBEDDINGS = ("embed.", "pos")


def quantized_names(net: nn.Module, deployed: bool = False) -> list[str]:
    """The weights that get quantized: every weight matrix or kernel but the read-out (and,
    for transformers, but the embeddings: the paper keeps its read-out in float). With
    ``deployed``, the read-out and the embeddings too, as a deployed LM would quantize them.
    Biases and LayerNorms (vectors) stay in float either way."""
    return [n for n, p in net.named_parameters() if p.dim() >= 2 and (
        deployed or not (n.startswith("output.") or n.startswith(EMBEDDINGS)))]


@dataclass(frozen=True)
class Prepared:
    """Weights prepared for fake quantization (the "prepare" of prepare/convert): the step of
    each weight tensor (one per member when K nets are stacked), fixed from the float weights
    when prepared, and the bit width. Training goes on updating the float weights through
    the straight-through estimator (``view``); ``bake`` turns them into the quantized ones."""

    bits: int
    steps: dict[str, torch.Tensor]

    def keep(self, rows: torch.Tensor) -> Prepared:
        """Only the stacked members at ``rows``."""
        return Prepared(self.bits, {n: s[rows] for n, s in self.steps.items()})


def prepare(weights: Mapping[str, torch.Tensor], names: Iterable[str], config: QuantConfig,
            lead: int = 0) -> Prepared:
    """Fix a step for each weight in ``names`` (per slice over its first ``lead`` dims)."""
    return Prepared(config.bits, {n: step_size(weights[n], config.bits, config.step_rule,
                                               lead=lead) for n in names})


def view(name: str, w: torch.Tensor, prepared: Prepared | None) -> torch.Tensor:
    """What the forward pass sees of weight ``name``: fake-quantized if it is prepared."""
    if prepared is None or name not in prepared.steps:
        return w
    return fake_quantize(w, prepared.steps[name], prepared.bits)


def bake(weights: Mapping[str, torch.Tensor], prepared: Prepared) -> None:
    """Write the quantized values into the prepared weights, in place (the "convert")."""
    with torch.no_grad():
        for name, step in prepared.steps.items():
            weights[name].copy_(quantize_tensor(weights[name], step, prepared.bits))


def quantize(net: nn.Module, config: QuantConfig) -> nn.Module:
    """A copy of ``net`` with its weights quantized directly (no retraining): prepare, bake."""
    out = copy.deepcopy(net)
    params = dict(out.named_parameters())
    bake(params, prepare(params, quantized_names(out), config))
    return out


def fake_quantize(w: torch.Tensor, step: torch.Tensor, bits: int) -> torch.Tensor:
    """Forward: the quantized weights. Backward: the straight-through estimator, the identity
    inside the representable range [-M step, M step] and zero outside it, so the float
    shadow weights keep learning while the net runs on fixed-point values."""
    q = quantize_tensor(w.detach(), step, bits)
    inside = (w.detach().abs() <= top_level(bits) * _expand(step, w)).to(w.dtype)
    return q + (w - w.detach()) * inside
