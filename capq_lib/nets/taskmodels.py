"""Models of the real-task experiments (Sec. 5.2): CIFAR-10 CNNs (tiny, small, large), the
MNIST FCDNN with two equal FC layers, word-level LSTM language models with two equal LSTM
layers, and a CIFAR-style ResNet (the offline stand-in for the paper's ImageNet ResNets).
"""

from __future__ import annotations

import torch
from torch import nn

from capq_lib.core import validate
from capq_lib.nets.transformer import Transformer, TransformerSpec
from capq_lib.nets.transformer import forward as transformer_forward

#: CIFAR CNNs of Eq. (4): channels of the three conv blocks (two 3x3 convs each, then a 2x2
#: max pool) and the width of the two FC layers before the 10-way output
CIFAR_SIZES = {"tiny": ((8, 16, 32), 32), "small": ((16, 32, 64), 128),
               "large": ((64, 128, 256), 512)}


class CIFARCNN(nn.Module):
    """2xC1-MP2-2xC2-MP2-2xC3-MP2-2xF-10; small has 221,082 parameters, large 3,510,858."""

    def __init__(self, size: str = "small", in_channels: int = 3, n_classes: int = 10) -> None:
        super().__init__()
        validate.choice("size", size, CIFAR_SIZES)
        chans, fc = CIFAR_SIZES[size]
        layers: list[nn.Module] = []
        cin = in_channels
        for c in chans:
            layers += [nn.Conv2d(cin, c, 3, padding=1), nn.ReLU(),
                       nn.Conv2d(c, c, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            cin = c
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(cin * 4 * 4, fc), nn.ReLU(),
                                        nn.Linear(fc, fc), nn.ReLU())
        self.output = nn.Linear(fc, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(self.classifier(self.features(x)))


class MNISTFCDNN(nn.Module):
    """784 -> width -> width -> 10 with ReLU (Fig. 7a: two FC layers of equal width)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        validate.integer("width", width, lo=1, hi=65536)
        self.hidden = nn.Sequential(nn.Flatten(), nn.Linear(784, width), nn.ReLU(),
                                    nn.Linear(width, width), nn.ReLU())
        self.output = nn.Linear(width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(self.hidden(x))


class WordLM(nn.Module):
    """Embedding -> two LSTM layers of ``units`` -> softmax over the vocabulary."""

    def __init__(self, vocab: int, units: int, layers: int = 2) -> None:
        super().__init__()
        validate.integer("vocab", vocab, lo=2)
        validate.integer("units", units, lo=1, hi=8192)
        self.embedding = nn.Embedding(vocab, units)
        self.lstm = nn.LSTM(units, units, num_layers=layers)
        self.output = nn.Linear(units, vocab)

    def forward(self, x: torch.Tensor, state=None):  # x: (T, B) token ids
        h, state = self.lstm(self.embedding(x), state)
        return self.output(h), state


class WordTransformerLM(Transformer):
    """Two causal pre-LayerNorm transformer blocks of width ``units`` over windows of
    running text (the LSTM LMs' BPTT windows), predicting every next word; no state is
    carried between windows (the ``state`` of the LSTM LMs' interface is empty)."""

    def __init__(self, vocab: int, units: int, window: int = 35, layers: int = 2) -> None:
        validate.integer("vocab", vocab, lo=2)
        validate.integer("units", units, lo=2, hi=8192)
        super().__init__(TransformerSpec(layers, units, heads=max(1, units // 16),
                                         steps=window, vocab=vocab))
        with torch.no_grad():  # GPT-2's scale, as the memorization transformers
            for p in self.parameters():
                if p.dim() >= 2:
                    nn.init.normal_(p, std=0.02)

    def forward(self, x: torch.Tensor, state=None):  # x: (T, B) token ids
        params = {n: p.unsqueeze(0) for n, p in self.named_parameters()}
        logits = transformer_forward(self.spec, lambda name: params[name],
                                     x.t().unsqueeze(0), start=False)[0]
        return logits.transpose(0, 1), ()


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                          nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class CIFARResNet(nn.Module):
    """He et al.'s CIFAR ResNet of depth 6n+2 (20, 32, 44, ...): 16/32/64 channels."""

    def __init__(self, depth: int = 20, in_channels: int = 3, n_classes: int = 10) -> None:
        super().__init__()
        validate.integer("depth", depth, lo=8, hi=1202)
        if (depth - 2) % 6:
            raise validate.ConfigError(f"depth must be 6n+2 (20, 32, 44, 56, ...), got {depth}")
        n = (depth - 2) // 6
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(16), nn.ReLU())
        blocks, cin = [], 16
        for i, c in enumerate((16, 32, 64)):
            for j in range(n):
                blocks.append(BasicBlock(cin, c, 2 if i > 0 and j == 0 else 1))
                cin = c
        self.blocks = nn.Sequential(*blocks)
        self.output = nn.Linear(64, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.blocks(self.stem(x))
        return self.output(h.mean((2, 3)))
