"""A small pre-LayerNorm transformer, as a classifier and as a language model.

Both forms share one block: x + attn(LN(x)), then x + MLP(LN(x)) with a GELU MLP of four
times the width, learned positions, and a final LayerNorm before the read-out.

- The *classifier* reads the LSTM chapter's data: ``steps`` random binary vectors of size
  ``n_in``, each a token through a linear embedding; full (two-way) attention; the label is
  read at the last position (no class token, so its parameters are those of the sequence
  model and a 2-way read-out).
- The *language model* reads tokens 0..V-1 after a start token (id V), causal attention,
  and predicts every next token with an untied read-out to V.

The forward pass is written once, for K stacked members (every weight with a leading K
axis); one net runs it with K = 1, so a population member computes exactly what the same
net computes alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from capq_lib.core import validate

#: the MLP's hidden width, in multiples of the model width
MLP_RATIO = 4


@dataclass(frozen=True)
class TransformerSpec:
    """``layers`` blocks of width ``width`` with ``heads`` attention heads. ``vocab`` 0:
    the classifier over ``steps`` vectors of ``n_in`` bits; ``vocab`` V > 0: a causal LM
    over sequences of ``steps`` tokens from V."""

    layers: int = 1
    width: int = 16
    heads: int = 2
    n_in: int = 32
    steps: int = 5
    vocab: int = 0
    n_classes: int = 2

    def __post_init__(self) -> None:
        validate.integer("layers", self.layers, lo=1, hi=64)
        validate.integer("width", self.width, lo=2, hi=4096)
        validate.integer("heads", self.heads, lo=1, hi=64)
        if self.width % self.heads:
            raise validate.ConfigError(f"width must be a multiple of heads ({self.heads}); "
                                       f"got {self.width}")
        validate.integer("n_in", self.n_in, lo=1, hi=4096)
        validate.integer("steps", self.steps, lo=1, hi=4096)
        validate.integer("vocab", self.vocab, lo=0, hi=1 << 20)

    @property
    def lm(self) -> bool:
        return self.vocab > 0

    @property
    def name(self) -> str:
        return f"{'LM ' if self.lm else 'T'}{self.layers}x{self.width}"

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (self.steps,) if self.lm else (self.steps, self.n_in)

    @property
    def n_params(self) -> int:
        """Every tensor, as count_parameters counts: embedding, positions, per block two
        LayerNorms, QKV and output projections and the MLP, the final LayerNorm and the
        read-out."""
        d, m = self.width, MLP_RATIO * self.width
        embed = (self.vocab + 1) * d if self.lm else self.n_in * d + d
        block = 4 * d + (3 * d * d + 3 * d) + (d * d + d) + (d * m + m) + (m * d + d)
        out = self.vocab if self.lm else self.n_classes
        return embed + self.steps * d + self.layers * block + 2 * d + d * out + out


class Transformer(nn.Module):
    """One net of a :class:`TransformerSpec` (parameters named as the stacked form's)."""

    def __init__(self, spec: TransformerSpec) -> None:
        super().__init__()
        self.spec = spec
        d, m = spec.width, MLP_RATIO * spec.width
        if spec.lm:
            self.embed = nn.Embedding(spec.vocab + 1, d)
        else:
            self.embed = nn.Linear(spec.n_in, d)
        self.pos = nn.Parameter(torch.zeros(spec.steps, d))
        self.blocks = nn.ModuleList()
        for _ in range(spec.layers):
            block = nn.Module()
            block.ln1, block.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
            block.qkv, block.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
            block.fc, block.fc2 = nn.Linear(d, m), nn.Linear(m, d)
            self.blocks.append(block)
        self.ln_f = nn.LayerNorm(d)
        self.output = nn.Linear(d, spec.vocab if spec.lm else spec.n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        params = {n: p.unsqueeze(0) for n, p in self.named_parameters()}
        return forward(self.spec, lambda name: params[name], x.unsqueeze(0))[0]


def _linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """x (K, ..., I) times each member's w (K, O, I) plus b (K, O)."""
    shape = x.shape
    flat = x.reshape(shape[0], -1, shape[-1])
    out = torch.baddbmm(b.unsqueeze(1), flat, w.transpose(1, 2))
    return out.reshape(*shape[:-1], w.shape[1])


def _layer_norm(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """LayerNorm over the last axis with each member's scale and shift (K, D)."""
    view = (w.shape[0],) + (1,) * (x.dim() - 2) + (w.shape[1],)
    return F.layer_norm(x, x.shape[-1:]) * w.view(view) + b.view(view)


def forward(spec: TransformerSpec, p, x: torch.Tensor, start: bool = True) -> torch.Tensor:
    """K members at once. ``p(name)`` gives a parameter stacked over members (K, ...);
    ``x`` is (K, B, steps, n_in) for the classifier, (K, B, steps) token ids for the LM.
    Returns (K, B, classes) logits at the last position, or (K, B, steps, vocab): with
    ``start`` the LM predicts token t from a start token and the tokens before t (every
    token of x is predicted); without, position t predicts the token after x[t] (a window
    of running text)."""
    k, b = x.shape[0], x.shape[1]
    d, h = spec.width, spec.heads
    if spec.lm:
        # every member its own table: index with the member's row offset
        table = p("embed.weight")  # (K, V + 1, D)
        ids = x
        if start:  # predict token t from a start token and the tokens before t
            first = torch.full((k, b, 1), spec.vocab, dtype=x.dtype, device=x.device)
            ids = torch.cat([first, x[:, :, :-1]], dim=2)
        offset = (torch.arange(k, device=x.device) * table.shape[1]).view(k, 1, 1)
        z = table.reshape(-1, d)[ids + offset]
    else:
        z = _linear(x, p("embed.weight"), p("embed.bias"))
    t = z.shape[2]
    z = z + p("pos")[:, None, :t, :]
    for i in range(spec.layers):
        q = f"blocks.{i}."
        y = _layer_norm(z, p(q + "ln1.weight"), p(q + "ln1.bias"))
        qkv = _linear(y, p(q + "qkv.weight"), p(q + "qkv.bias"))
        qkv = qkv.view(k * b, t, 3, h, d // h).permute(2, 0, 3, 1, 4)
        att = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], is_causal=spec.lm)
        att = att.transpose(1, 2).reshape(k, b, t, d)
        z = z + _linear(att, p(q + "proj.weight"), p(q + "proj.bias"))
        y = _layer_norm(z, p(q + "ln2.weight"), p(q + "ln2.bias"))
        y = F.gelu(_linear(y, p(q + "fc.weight"), p(q + "fc.bias")))
        z = z + _linear(y, p(q + "fc2.weight"), p(q + "fc2.bias"))
    z = _layer_norm(z, p("ln_f.weight"), p("ln_f.bias"))
    if not spec.lm:
        z = z[:, :, -1]
    return _linear(z, p("output.weight"), p("output.bias"))


def build_transformer(spec: TransformerSpec, seed: int = 0) -> Transformer:
    """GPT-2's initialization: normal(0, 0.02) weights and embeddings, the residual
    projections scaled by 1/sqrt(2 layers), zero biases, unit LayerNorms; a zero read-out
    for the classifier (every sample starts at chance, as the other families)."""
    validate.integer("seed", seed, lo=0)
    g = torch.Generator().manual_seed(seed)
    net = Transformer(spec)
    with torch.no_grad():
        for name, q in net.named_parameters():
            if name.endswith(".bias") or name.startswith("ln") or ".ln" in name:
                q.copy_(torch.ones_like(q) if name.endswith("weight") else torch.zeros_like(q))
            else:
                std = 0.02 / math.sqrt(2 * spec.layers) if name.endswith(
                    ("proj.weight", "fc2.weight")) else 0.02
                q.copy_(torch.randn(q.shape, generator=g) * std)
        if not spec.lm:
            net.output.weight.zero_()
    return net
