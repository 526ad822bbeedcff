"""The paper's networks. FCDNN: input size = width, ``depth`` hidden ReLU layers, 2-way softmax."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from capq_lib.core import validate
from capq_lib.nets.transformer import TransformerSpec, build_transformer


@dataclass(frozen=True)
class FCDNNSpec:
    """A fully connected net of the memorization task (Sec. 4.1): n_in = width."""

    width: int
    depth: int
    n_classes: int = 2

    def __post_init__(self) -> None:
        validate.integer("width", self.width, lo=1, hi=65536)
        validate.integer("depth", self.depth, lo=1, hi=64)
        validate.integer("n_classes", self.n_classes, lo=2)

    @property
    def n_in(self) -> int:
        return self.width

    @property
    def n_params(self) -> int:
        """Weights and biases: depth * (w*w + w) hidden, w*c + c output."""
        w, c = self.width, self.n_classes
        return self.depth * (w * w + w) + w * c + c

    @property
    def name(self) -> str:
        return f"{self.depth}x{self.width}"

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (self.width,)


class FCDNN(nn.Module):
    """h_l = ReLU(W_l h_{l-1} + b_l) (Eq. 5), then a linear read-out to the softmax."""

    def __init__(self, spec: FCDNNSpec) -> None:
        super().__init__()
        self.spec = spec
        w = spec.width
        self.hidden = nn.ModuleList(nn.Linear(w, w) for _ in range(spec.depth))
        self.output = nn.Linear(w, spec.n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.hidden:
            x = torch.relu(layer(x))
        return self.output(x)


def he_init_(model: FCDNN, generator: torch.Generator) -> FCDNN:
    """He (Kaiming-normal, fan-in) hidden weights, zero biases and a zero read-out.

    The read-out feeds no ReLU, so He's gain does not apply to it; starting it at zero puts
    every sample at chance and, measured on 1x32 nets, memorizes in fewer epochs and more
    reliably than a He-scaled read-out.
    """
    for layer in model.hidden:
        _he_normal_(layer.weight, layer.bias, layer.in_features, generator)
    _zero_(model.output)
    return model


@torch.no_grad()
def _he_normal_(weight: torch.Tensor, bias: torch.Tensor, fan_in: int,
                generator: torch.Generator) -> None:
    weight.copy_(torch.randn(weight.shape, generator=generator) * (2.0 / fan_in) ** 0.5)
    bias.zero_()


@torch.no_grad()
def _zero_(layer: nn.Linear) -> None:
    layer.weight.zero_()
    layer.bias.zero_()


def build_fcdnn(spec: FCDNNSpec, seed: int = 0) -> FCDNN:
    """An FCDNN with He initialization, deterministic in ``seed``."""
    validate.integer("seed", seed, lo=0)
    return he_init_(FCDNN(spec), torch.Generator().manual_seed(seed))


def count_parameters(model: nn.Module) -> int:
    """P, the number of parameters (every weight and bias; the paper's count)."""
    return sum(p.numel() for p in model.parameters())


# --- CNNs of Table 1 ----------------------------------------------------------------------

#: Table 1: kernel size, channels per block, convolutions per block
TABLE1 = {
    "A": (3, (4, 8, 16), 1), "B": (5, (4, 8, 16), 1), "C": (5, (4, 8, 16), 2),
    "D": (3, (4, 8, 16), 2), "E": (3, (8, 16, 32), 2), "F": (3, (8, 16, 32), 3),
}
IMAGE_SHAPE = (1, 32, 32)


@dataclass(frozen=True)
class CNNSpec:
    """A memorization CNN of Table 1: 32x32x1 input, 'same' convolutions with ReLU, a 3x3
    stride-2 'same' max pool after each of three blocks, then straight to a 2-way softmax."""

    model: str
    n_classes: int = 2

    def __post_init__(self) -> None:
        validate.choice("model", self.model, TABLE1)

    @property
    def kernel(self) -> int:
        return TABLE1[self.model][0]

    def convs(self) -> list[tuple[int, int]]:
        """(in, out) channels of every convolution, in order."""
        _, chans, reps = TABLE1[self.model]
        out, cin = [], IMAGE_SHAPE[0]
        for c in chans:
            for _ in range(reps):
                out.append((cin, c))
                cin = c
        return out

    @property
    def features(self) -> int:
        """Flattened size after three pools: 32 -> 16 -> 8 -> 4."""
        return self.convs()[-1][1] * 4 * 4

    @property
    def conv_outputs(self) -> int:
        """Floats of all convolution outputs for one sample (what a step keeps for backward)."""
        sides = [IMAGE_SHAPE[1] >> b for b, n in enumerate(self.blocks()) for _ in range(n)]
        return sum(o * side * side for (_, o), side in zip(self.convs(), sides, strict=True))

    @property
    def n_params_conv(self) -> int:
        return sum(i * o * self.kernel**2 + o for i, o in self.convs())

    @property
    def n_params_fc(self) -> int:
        return self.features * self.n_classes + self.n_classes

    @property
    def n_params(self) -> int:
        return self.n_params_conv + self.n_params_fc

    @property
    def name(self) -> str:
        return self.model

    @property
    def input_shape(self) -> tuple[int, ...]:
        return IMAGE_SHAPE

    def blocks(self) -> list[int]:
        """How many convolutions precede each pool."""
        return [TABLE1[self.model][2]] * 3


def same_max_pool(x: torch.Tensor) -> torch.Tensor:
    """3x3 max pool, stride 2, 'same' padding as TensorFlow pads it (the extra row and column
    at the bottom and right): 32 -> 16 -> 8 -> 4. ``ceil_mode`` lets the last window hang
    over the bottom and right edge and ignores what lies outside, which is exactly that
    padding with -inf, without copying the tensor into a padded one (a third of a CPU
    training step went to padding, filling and copying)."""
    return nn.functional.max_pool2d(x, 3, 2, ceil_mode=True)


def cnn_blocks(x: torch.Tensor, spec: CNNSpec,
               conv: Callable[[int, torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Table 1's three blocks over ``x``, ``conv(i, x)`` being the i-th convolution: a ReLU
    after each convolution, the block's last one after its pool. One net and stacked members
    share this order and differ only in how they convolve (``conv``)."""
    i = 0
    for n in spec.blocks():
        for j in range(n):
            x = conv(i, x)
            i += 1
            if j < n - 1:
                x = torch.relu(x)
        x = torch.relu(same_max_pool(x))  # = pool(relu(x)), on a quarter of the values
    return x


class CNN(nn.Module):
    def __init__(self, spec: CNNSpec) -> None:
        super().__init__()
        self.spec = spec
        k = spec.kernel
        self.convs = nn.ModuleList(nn.Conv2d(i, o, k, padding=k // 2) for i, o in spec.convs())
        self.output = nn.Linear(spec.features, spec.n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(cnn_blocks(x, self.spec, lambda i, h: self.convs[i](h)).flatten(1))


# --- LSTM classifier (Sec. 4.3) -----------------------------------------------------------

@dataclass(frozen=True)
class LSTMSpec:
    """One LSTM layer over ``steps`` inputs of size n_in, the label read at the last step.

    One bias per gate, so 4 (H n_in + H H + H) + (2 H + 2) parameters: 8386 at H = 32."""

    units: int = 32
    n_in: int = 32
    steps: int = 5
    n_classes: int = 2

    def __post_init__(self) -> None:
        validate.integer("units", self.units, lo=1, hi=4096)
        validate.integer("n_in", self.n_in, lo=1, hi=4096)
        validate.integer("steps", self.steps, lo=1, hi=1000)

    @property
    def n_params(self) -> int:
        h = self.units
        return 4 * (h * self.n_in + h * h + h) + h * self.n_classes + self.n_classes

    @property
    def name(self) -> str:
        return f"LSTM-{self.units}"

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (self.steps, self.n_in)


def lstm_step(x: torch.Tensor, h: torch.Tensor, c: torch.Tensor, w_ih: torch.Tensor,
              w_hh: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One LSTM step; gates in PyTorch's order (input, forget, cell, output).

    Works for one net (x: (B, I), w: (4H, I)) and for K stacked ones (x: (K, B, I),
    w: (K, 4H, I), b: (K, 1, 4H))."""
    gates = torch.baddbmm(b, x, w_ih.transpose(-1, -2)) if x.dim() == 3 else \
        torch.addmm(b, x, w_ih.t())
    gates = gates + h @ w_hh.transpose(-1, -2)
    i, f, g, o = gates.chunk(4, dim=-1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


class LSTMClassifier(nn.Module):
    def __init__(self, spec: LSTMSpec) -> None:
        super().__init__()
        self.spec = spec
        h = spec.units
        self.w_ih = nn.Parameter(torch.empty(4 * h, spec.n_in))
        self.w_hh = nn.Parameter(torch.empty(4 * h, h))
        self.bias = nn.Parameter(torch.zeros(4 * h))
        self.output = nn.Linear(h, spec.n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, steps, n_in)
        h = x.new_zeros(x.shape[0], self.spec.units)
        c = torch.zeros_like(h)
        for t in range(x.shape[1]):
            h, c = lstm_step(x[:, t], h, c, self.w_ih, self.w_hh, self.bias)
        return self.output(h)


def build_cnn(spec: CNNSpec, seed: int = 0) -> CNN:
    """He-initialized convolutions, zero biases and a zero read-out (as the FCDNN)."""
    validate.integer("seed", seed, lo=0)
    g = torch.Generator().manual_seed(seed)
    net = CNN(spec)
    for conv in net.convs:
        _he_normal_(conv.weight, conv.bias, conv.in_channels * spec.kernel**2, g)
    _zero_(net.output)
    return net


def build_lstm(spec: LSTMSpec, seed: int = 0) -> LSTMClassifier:
    """Uniform(+-1/sqrt(H)) weights as PyTorch's LSTM, forget-gate bias 1, zero read-out."""
    validate.integer("seed", seed, lo=0)
    g = torch.Generator().manual_seed(seed)
    net = LSTMClassifier(spec)
    bound = spec.units ** -0.5
    with torch.no_grad():
        for w in (net.w_ih, net.w_hh):
            w.copy_((torch.rand(w.shape, generator=g) * 2 - 1) * bound)
        net.bias.zero_()
        net.bias[spec.units:2 * spec.units] = 1.0
    _zero_(net.output)
    return net


ModelSpec = FCDNNSpec | CNNSpec | LSTMSpec | TransformerSpec


def build(spec: ModelSpec, seed: int = 0) -> nn.Module:
    """A freshly initialized net of any family, deterministic in ``seed``."""
    if isinstance(spec, FCDNNSpec):
        return build_fcdnn(spec, seed)
    if isinstance(spec, CNNSpec):
        return build_cnn(spec, seed)
    if isinstance(spec, TransformerSpec):
        return build_transformer(spec, seed)
    return build_lstm(spec, seed)


def conv_reuse(spec: CNNSpec) -> float:
    """How many multiply-adds each conv weight takes part in per image, on average: the
    parameter sharing that sets a CNN apart from an FCDNN (where it is exactly 1)."""
    size, macs, weights = 32, 0, 0
    convs = iter(spec.convs())
    for n in spec.blocks():
        for _ in range(n):
            i, o = next(convs)
            w = i * o * spec.kernel**2
            macs, weights = macs + w * size * size, weights + w
        size //= 2
    return macs / weights
