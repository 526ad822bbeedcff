"""Loss surfaces along random directions (Sec. 5.2, after Li et al.'s filter normalization).

f(alpha) = L(theta + alpha d), d Gaussian and filter-normalized: every filter of a conv
weight and every row of a matrix is rescaled to the norm of the same filter or row of theta,
so one alpha means the same relative step for every layer whatever its scale. Biases and
normalization layers (all 1-D parameters) get a zero direction. The curves are averaged over
several directions; theta may be a quantized net, whose surface shows how far a rounding
error of that size moves the loss.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.func import functional_call

from capq_lib.core import validate


def filter_normalized_direction(model: nn.Module, generator: torch.Generator
                                ) -> dict[str, torch.Tensor]:
    """A Gaussian direction with each filter/row scaled to the norm of theta's."""
    out = {}
    for name, p in model.named_parameters():
        if p.dim() <= 1:
            out[name] = torch.zeros_like(p)
            continue
        d = torch.randn(p.shape, generator=generator, dtype=p.dtype).to(p.device)
        theta_norm = p.detach().flatten(1).norm(dim=1)
        d_norm = d.flatten(1).norm(dim=1).clamp(min=1e-12)
        out[name] = d * (theta_norm / d_norm).view(-1, *([1] * (p.dim() - 1)))
    return out


@dataclass(frozen=True)
class SurfaceConfig:
    """Where to look: alphas on a grid, averaged over ``directions`` random directions."""

    alpha_min: float = -1.0
    alpha_max: float = 1.0
    points: int = 21
    directions: int = 10
    seed: int = 0
    #: alphas evaluated together (torch.func.vmap) by evaluators that can batch them; on a
    #: 2-core CPU batching ran 2-5x slower than one alpha at a time (benchmarks/surfaces.py),
    #: so it is for GPUs, where one alpha leaves most of the device idle
    alpha_batch: int = 1

    def __post_init__(self) -> None:
        validate.number("alpha_min", self.alpha_min, lo=-100.0, hi=100.0)
        validate.number("alpha_max", self.alpha_max, lo=-100.0, hi=100.0)
        if not self.alpha_min < self.alpha_max:
            raise validate.ConfigError("alpha_min must be below alpha_max")
        validate.integer("points", self.points, lo=2, hi=10001)
        validate.integer("directions", self.directions, lo=1, hi=10000)
        validate.integer("seed", self.seed, lo=0)
        validate.integer("alpha_batch", self.alpha_batch, lo=1, hi=10001)

    def alphas(self) -> np.ndarray:
        grid = np.linspace(self.alpha_min, self.alpha_max, self.points)
        return np.unique(np.append(grid, 0.0))  # alpha = 0 is always on the curve


@torch.no_grad()
def loss_surface(model: nn.Module, evaluate: Callable[[Callable], tuple[float, float, int]],
                 config: SurfaceConfig) -> pd.DataFrame:
    """Mean loss and accuracy at theta + alpha d over the directions, one row per alpha.

    ``evaluate(forward)`` runs ``forward(x)`` over the evaluation data and returns (summed
    loss, correct, count); ``forward`` calls the model with shifted parameters without
    touching its own, so the model is unchanged afterwards."""
    model.eval()
    theta = {n: p.detach() for n, p in model.named_parameters()}
    buffers = dict(model.named_buffers())
    g = torch.Generator().manual_seed(config.seed)
    alphas = config.alphas()
    step = config.alpha_batch if getattr(evaluate, "batched", False) else 1
    loss = np.zeros((config.directions, len(alphas)))
    acc = np.zeros_like(loss)
    for k in range(config.directions):
        d = filter_normalized_direction(model, g)
        for j in range(0, len(alphas), step):
            a = torch.tensor(alphas[j:j + step], dtype=torch.float32)
            if step == 1:
                params = {n: theta[n] + float(a[0]) * d[n] for n in theta}

                def forward(*args, params=params, **kw):
                    return functional_call(model, {**params, **buffers}, args, kw)
            else:  # several alphas at once: parameters gain a leading alpha axis
                params = {n: theta[n] + a.view(-1, *[1] * theta[n].dim()) * d[n]
                          for n in theta}

                def forward(x, params=params):
                    return torch.func.vmap(
                        lambda p: functional_call(model, {**p, **buffers}, (x,)))(params)

            total, correct, count = evaluate(forward)
            loss[k, j:j + step] = np.asarray(total, dtype=float) / count
            acc[k, j:j + step] = np.asarray(correct, dtype=float) / count
    return pd.DataFrame({"alpha": alphas, "loss": loss.mean(0), "loss_std": loss.std(0),
                         "accuracy": acc.mean(0), "accuracy_std": acc.std(0)})


def classification_evaluator(x: torch.Tensor, y: torch.Tensor, batch: int = 512
                             ) -> Callable[[Callable], tuple]:
    """Cross-entropy and accuracy of a classifier over (x, y), in batches. It takes logits
    with leading axes too (several alphas at once) and then returns one value per entry."""

    def evaluate(forward: Callable) -> tuple:
        total = correct = 0.0
        for i in range(0, len(x), batch):
            logits, yy = forward(x[i:i + batch]), y[i:i + batch]
            lead = logits.shape[:-2]
            ce = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                             yy.expand(*lead, -1).reshape(-1),
                                             reduction="none").view(*lead, -1)
            total = total + ce.sum(-1).double().cpu().numpy()
            correct = correct + (logits.argmax(-1) == yy).sum(-1).double().cpu().numpy()
        return total, correct, len(x)

    evaluate.batched = True  # type: ignore[attr-defined]
    return evaluate


def lm_evaluator(data: torch.Tensor, bptt: int = 35
                 ) -> Callable[[Callable], tuple[float, float, int]]:
    """Next-word cross-entropy (exp of its mean is perplexity) and accuracy over batchified
    token columns ``data`` (T, B), carrying the LSTM state across segments."""

    def evaluate(forward: Callable) -> tuple[float, float, int]:
        total = correct = 0.0
        count, state = 0, None
        for i in range(0, data.shape[0] - 1, bptt):
            x, y = data[i:i + bptt], data[i + 1:i + 1 + bptt]
            x = x[:len(y)]
            logits, state = forward(x, state)
            total += float(nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten(),
                                                       reduction="sum"))
            correct += float((logits.argmax(-1) == y).sum())
            count += y.numel()
        return total, correct, count

    return evaluate


def basin_rise(surf: pd.DataFrame, within: float, metric: str = "loss") -> pd.DataFrame:
    """How far each curve gets worse than at alpha = 0 within |alpha| <= ``within``: the
    largest rise of the loss (or fall of the accuracy) there, per net, precision and split.
    A flat basin rises little; a quantized net whose basin rises little loses little to a
    rounding error of that relative size."""
    validate.number("within", within, lo=0.0, lo_open=True)
    validate.choice("metric", metric, ("loss", "accuracy"))
    keys = [k for k in ("task", "model", "width", "split") if k in surf.columns]
    sign = -1.0 if metric == "accuracy" else 1.0
    near = surf[surf.alpha.abs() <= within + 1e-9]
    out = []
    for key, g in near.groupby(keys, sort=False):
        at_zero = g.loc[g.alpha == 0, metric]
        if at_zero.empty or len(g) < 2:
            raise validate.ConfigError(f"within={within} holds no alpha but 0 on the grid "
                                       f"of {dict(zip(keys, key, strict=True))}: widen it")
        f0 = float(at_zero.iloc[0])
        out.append({**dict(zip(keys, key, strict=True)), "at_zero": f0,
                    "rise": float((sign * (g[metric] - f0)).max())})
    return pd.DataFrame(out)


def _compare(a: pd.Series, b: pd.Series, tolerance: float) -> tuple[int, int]:
    """How many entries of ``a`` exceed ``b``, and how many fall below it, by more than
    ``tolerance`` (relative to the larger); the rest count as equal."""
    scale = np.maximum(a.abs(), b.abs())
    return int((a - b > tolerance * scale).sum()), int((b - a > tolerance * scale).sum())


def findings(surf: pd.DataFrame, within: float, coarse: str = "2 bits", fine: str = "float",
             family: str = "nets", tolerance: float = 0.05) -> list[str]:
    """What the loss curves show, as sentences computed from them: (1) whether the training
    curves rise more than the test curves within |alpha| <= ``within`` (the training data
    in the sharper basin, the paper's reading of why test performance survives quantization)
    and (2) whether the ``coarse`` nets' curves rise less than the ``fine`` nets' (a flatter
    basin) and sit higher at alpha = 0. Rises within ``tolerance`` (relative) of each other
    count as equal (they are means over a few random directions). Each sentence says what
    the numbers show, whichever way they go."""
    validate.number("tolerance", tolerance, lo=0.0, hi=1.0)
    rise = basin_rise(surf, within)
    out = []
    equal = f"the rest within {tolerance:.0%} of each other"
    pairs = rise.pivot_table(index=["model", "width"], columns="split", values="rise",
                             sort=False).dropna()
    if {"train", "test"} <= set(pairs.columns) and len(pairs):
        more, less = _compare(pairs.train, pairs.test, tolerance)
        verdict = ("so the training data sit in the sharper basin, as the paper reads it"
                   if more > less else
                   "the opposite of the paper's reading: the test data sit in the sharper basin"
                   if less > more else "no consistent difference between the two")
        out.append(f"{family}, training against test data: within |alpha| <= {within:g} the "
                   f"training loss rises more than the test loss in {more} of {len(pairs)} "
                   f"(net, precision) pairs and less in {less} ({equal}; median rise "
                   f"{pairs.train.median():.3g} on training data, {pairs.test.median():.3g} on "
                   f"test data): {verdict}.")
    if {coarse, fine} <= set(rise.width):
        by = rise.pivot_table(index=["model", "split"], columns="width",
                              values=["rise", "at_zero"], sort=False).dropna()
        r_c, r_f = by[("rise", coarse)], by[("rise", fine)]
        z_c, z_f = by[("at_zero", coarse)], by[("at_zero", fine)]
        steeper, flatter = _compare(r_c, r_f, tolerance)
        # at alpha = 0 no direction is drawn: any difference between the bottoms is measured
        higher, lower = _compare(z_c, z_f, 0.0)
        shape = ("flatter at " + coarse if flatter > steeper else
                 f"steeper at {coarse}, not flatter" if steeper > flatter else
                 f"neither flatter nor steeper at {coarse} overall")
        out.append(f"{family}, {fine} against {coarse}: within |alpha| <= {within:g} the "
                   f"curve at {coarse} rises less than the {fine} one in {flatter} of "
                   f"{len(by)} (net, data split) pairs and more in {steeper} ({equal}; median "
                   f"rise {r_f.median():.3g} in {fine}, {r_c.median():.3g} at {coarse}), so "
                   f"the basin is {shape}; its bottom (the loss at alpha = 0) sits higher at "
                   f"{coarse} in {higher} and lower in {lower} (median {z_f.median():.3g} in "
                   f"{fine}, {z_c.median():.3g} at {coarse}).")
    return out
