"""Capacity as a language model stores it (Morris et al. 2025): causal transformers on
uniformly random token sequences, memorized bits against the data's entropy.

A sequence of S tokens drawn uniformly from V carries S log2 V bits. A net that predicts it
with negative log-likelihood NLL (in bits) has memorized max(0, S log2 V - NLL) of them: the
reference is the true, uniform distribution, so nothing but memorization beats it. The cap
per sequence is S log2 V. Summed over the N training sequences, memorized bits rise with N
while the net can hold them, then level off: the capacity is where they peak, bracketed (a
smaller and a larger N hold less) and replicated over seeds.

No net can memorize what the data do not determine: once N exceeds V^t, the first t tokens
of some sequences share their context, and at such a position the best any model can do is
the data's own conditional frequency. ``ceiling_bits`` computes exactly what that best
predictor memorizes, the line no net can pass.

Weights are trained in float32, or in bfloat16: rounded to bfloat16 after every update with
no float32 copy kept, so every weight the net ever holds is a bf16 number and an update too
small to change one is lost, as in pure bf16 training (the optimizer's moments stay float32,
activations are computed in float32).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.nn import functional as F

from capq_lib.core import validate
from capq_lib.core.devices import describe, resolve_device
from capq_lib.core.progress import bar as progress_bar
from capq_lib.core.seeds import seed_from_text
from capq_lib.core.verdicts import AGREES, Estimate, greater
from capq_lib.engine.population import StackedTransformer, retain_freed_memory
from capq_lib.engine.quantize import QuantConfig, check_bits
from capq_lib.experiments.results import ResultsCache
from capq_lib.experiments.search import parse_transformer
from capq_lib.nets.transformer import TransformerSpec, build_transformer

EXPERIMENT = "transformer-lm"
QUANT_EXPERIMENT = "transformer-lm-quantization"
PRECISIONS = ("float32", "bfloat16")
#: how a quantized LM's tables are treated: kept in float (the paper keeps its read-out in
#: float) or quantized as a deployed LM would be
ROUTES = {"float tables": False, "deployed": True}
#: bits per parameter Morris et al. fitted (bf16): sets the N grid's scale
MORRIS_BPP = 3.6


@dataclass(frozen=True)
class LMCapacityStudy:
    """Which LMs, on what random data, trained how, and quantized how."""

    profile: str = "custom"
    models: tuple[str, ...] = ("1x8", "1x16", "2x16", "1x32")
    heads: int = 2
    vocab: int = 64
    seq_len: int = 16
    #: N from the data's entropy: N S log2 V = fraction x 3.6 bits x P
    entropy_fractions: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0)
    seeds: int = 3
    steps: int = 2000
    batch: int = 32
    lr: float = 0.003
    warmup: float = 0.05
    precisions: tuple[str, ...] = ("float32",)
    #: the models trained in bfloat16 too (beside float32)
    bf16_models: tuple[str, ...] = ("1x16",)
    bits: tuple[int, ...] = (8, 6, 5, 4, 3, 2)
    retrain_steps: int = 100
    #: further data, (V, S) pairs on which every model is trained too (Morris et al. vary
    #: both); their nets are labelled "1x16 V2048 S32", the first data's plain "1x16"
    shapes: tuple[tuple[int, int], ...] = ()
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("models", "entropy_fractions", "precisions", "bits", "bf16_models"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        shapes = []
        for shape in self.shapes:
            if not (isinstance(shape, (list, tuple)) and len(shape) == 2):
                raise validate.ConfigError(f"shapes must be [vocab, seq_len] pairs; got "
                                           f"{shape!r}")
            validate.integer("shapes vocab", shape[0], lo=2, hi=1 << 16)
            validate.integer("shapes seq_len", shape[1], lo=2, hi=4096)
            shapes.append((int(shape[0]), int(shape[1])))
        if len(set(shapes) | {(self.vocab, self.seq_len)}) != len(shapes) + 1:
            raise validate.ConfigError(f"shapes must differ from each other and from "
                                       f"(vocab, seq_len) = ({self.vocab}, {self.seq_len}); "
                                       f"got {[list(x) for x in shapes]}")
        object.__setattr__(self, "shapes", tuple(shapes))
        for m in validate.non_empty("models", self.models):
            parse_transformer(m)
        for m in self.bf16_models:
            if m not in self.models:
                raise validate.ConfigError(f"bf16_models must be among models "
                                           f"{list(self.models)}; got {m!r}")
        validate.integer("heads", self.heads, lo=1, hi=64)
        validate.integer("vocab", self.vocab, lo=2, hi=1 << 16)
        validate.integer("seq_len", self.seq_len, lo=2, hi=4096)
        for f in validate.non_empty("entropy_fractions", self.entropy_fractions):
            validate.number("entropy_fractions", f, lo=0.0, hi=100.0, lo_open=True)
        if list(self.entropy_fractions) != sorted(set(self.entropy_fractions)):
            raise validate.ConfigError(f"entropy_fractions must rise without repeats; got "
                                       f"{list(self.entropy_fractions)}")
        validate.integer("seeds", self.seeds, lo=1, hi=100)
        validate.integer("steps", self.steps, lo=2, hi=10**7)
        validate.integer("batch", self.batch, lo=1, hi=1 << 16)
        validate.number("lr", self.lr, lo=0.0, hi=1.0, lo_open=True)
        validate.number("warmup", self.warmup, lo=0.0, hi=0.5)
        for p in validate.non_empty("precisions", self.precisions):
            validate.choice("precisions", p, PRECISIONS)
        for b in validate.non_empty("bits", self.bits):
            check_bits(b)
        validate.integer("retrain_steps", self.retrain_steps, lo=0, hi=10**6)
        for m in self.models:
            self.spec(m)  # width a multiple of heads

    def labels(self) -> list[str]:
        """Every model on the first data ("1x16"), then on each of ``shapes``
        ("1x16 V2048 S32")."""
        return list(self.models) + [f"{m} V{v} S{s}" for v, s in self.shapes
                                    for m in self.models]

    def shape(self, label: str) -> tuple[int, int]:
        """(V, S) of a label's data."""
        parts = label.split()
        if len(parts) == 1:
            return self.vocab, self.seq_len
        if len(parts) != 3 or parts[1][:1] != "V" or parts[2][:1] != "S":
            raise validate.ConfigError(f"an LM label is 'LxW' or 'LxW V<vocab> S<length>'; "
                                       f"got {label!r}")
        return int(parts[1][1:]), int(parts[2][1:])

    def spec(self, label: str) -> TransformerSpec:
        layers, width = parse_transformer(label.split()[0])
        vocab, seq_len = self.shape(label)
        return TransformerSpec(layers, width, self.heads, steps=seq_len, vocab=vocab)

    def sequence_bits(self, label: str | None = None) -> float:
        """S log2 V: the bits of one sequence, the cap of what a net can memorize of it."""
        vocab, seq_len = self.shape(label) if label else (self.vocab, self.seq_len)
        return seq_len * math.log2(vocab)

    def n_grid(self, label: str) -> list[int]:
        """N for each entropy fraction: N S log2 V = fraction x 3.6 x P, at least 2."""
        p = self.spec(label).n_params
        return sorted({max(2, round(f * MORRIS_BPP * p / self.sequence_bits(label)))
                       for f in self.entropy_fractions})

    def trainings(self) -> list[tuple[str, str]]:
        """(label, precision) pairs to train: every model on every data in float32,
        ``bf16_models`` on the first data in bfloat16 too."""
        out = [(m, "float32") for m in self.labels() if "float32" in self.precisions]
        return out + [(m, "bfloat16") for m in self.bf16_models]


# --- the data and what can be memorized of it ----------------------------------------------

def random_sequences(n: int, seq_len: int, vocab: int, seed: int) -> torch.Tensor:
    """N sequences of ``seq_len`` tokens drawn uniformly from ``vocab`` (int64, (N, S))."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(vocab, (n, seq_len), generator=g)


def ceiling_bits(seqs: torch.Tensor, vocab: int) -> np.ndarray:
    """Per sequence, what the best possible predictor of these N sequences memorizes: at
    each position the data's own frequency of the token given the tokens before it (the
    maximum-likelihood predictor of this data set), capped at zero per sequence. Where a
    context is unique the token is certain and costs nothing; where N exceeds V^t the
    first t tokens share contexts and cost what their frequencies say."""
    x = seqs.cpu().numpy()
    n, s = x.shape
    cost = np.zeros(n)
    prev = np.zeros(n, dtype=np.int64)  # group id of each sequence's context so far
    prev_count = np.full(n, n)
    for t in range(s):
        key = prev * (vocab + 1) + x[:, t]
        _, group, counts = np.unique(key, return_inverse=True, return_counts=True)
        count = counts[group]
        cost -= np.log2(count / prev_count)
        prev, prev_count = group.astype(np.int64), count
    return np.maximum(0.0, s * math.log2(vocab) - cost)


def memorized_bits(model: StackedTransformer, data: torch.Tensor, n: Sequence[int],
                   chunk: int = 256) -> np.ndarray:
    """Per member, the bits memorized of its N sequences: the sum over sequences of
    max(0, S log2 V - NLL in bits). ``data`` is (K, Nmax, S), member k using its first
    n[k] sequences."""
    spec = model.template.spec
    cap = spec.steps * math.log2(spec.vocab)
    out = np.zeros(data.shape[0])
    with torch.no_grad():
        for start in range(0, data.shape[1], chunk):
            x = data[:, start:start + chunk]
            logits = model.forward(x)
            nll = F.cross_entropy(logits.flatten(0, 2), x.flatten(), reduction="none")
            bits = nll.view(x.shape).sum(-1) / math.log(2)  # (K, chunk)
            gain = (cap - bits).clamp(min=0).cpu().numpy()
            for k, nk in enumerate(n):
                out[k] += gain[k, :max(0, min(chunk, nk - start))].sum()
    return out


# --- training -----------------------------------------------------------------------------

@dataclass
class Member:
    """One LM of a population: its N sequences (``data_seed``) and its initialization."""

    n_sequences: int
    data_seed: int
    init_seed: int


@dataclass
class TrainedLMs:
    model: StackedTransformer
    data: torch.Tensor  # (K, Nmax, S)
    members: list[Member]
    half: np.ndarray  # memorized bits after half the steps
    final: np.ndarray
    wall_s: float = 0.0


def _round_bf16(params: Sequence[torch.Tensor]) -> None:
    with torch.no_grad():
        for p in params:
            p.copy_(p.to(torch.bfloat16).float())


def stack_data(members: Sequence[Member], spec: TransformerSpec, device: torch.device
               ) -> torch.Tensor:
    nmax = max(m.n_sequences for m in members)
    data = torch.zeros(len(members), nmax, spec.steps, dtype=torch.int64)
    for k, m in enumerate(members):
        data[k, :m.n_sequences] = random_sequences(m.n_sequences, spec.steps, spec.vocab,
                                                   m.data_seed)
    return data.to(device)


def train_lms(spec: TransformerSpec, members: Sequence[Member], steps: int, lr: float,
              batch: int, device: torch.device, precision: str = "float32",
              warmup: float = 0.05, model: StackedTransformer | None = None,
              data: torch.Tensor | None = None, quant: QuantConfig | None = None,
              deployed: bool = False, progress: bool = False) -> TrainedLMs:
    """Train K LMs as one population: each step every member sees ``batch`` of its own
    sequences (drawn with its own generator), Adam (element-wise, so member k trains as it
    would alone) at ``lr`` after a linear warm-up, then constant, so that the bits held
    at half the steps are those of a shorter training (the convergence check). With
    ``quant``, the forward pass runs on quantized weights (straight-through retraining)."""
    validate.choice("precision", precision, PRECISIONS)
    if model is None:
        model = StackedTransformer([build_transformer(spec, m.init_seed) for m in members],
                                   device)
    if data is None:
        data = stack_data(members, spec, device)
    if precision == "bfloat16":
        _round_bf16(model.params)
    model.quantize_weights(quant, deployed)
    opt = torch.optim.Adam(model.params, lr=lr)
    gens = [torch.Generator().manual_seed(seed_from_text(f"lm-batches:{m.data_seed}:"
                                                         f"{m.init_seed}")) for m in members]
    n = torch.tensor([m.n_sequences for m in members])
    warm = max(1, round(warmup * steps))
    half = np.zeros(len(members))
    start = time.perf_counter()
    bar = progress_bar(total=steps, desc=f"{spec.name} x{len(members)}", leave=False,
                       disable=not progress)
    rows = torch.arange(len(members)).unsqueeze(1)
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / warm)
        idx = torch.stack([torch.randint(int(nk), (batch,), generator=g)
                           for nk, g in zip(n, gens, strict=True)])
        x = data[rows, idx.to(data.device)]
        logits = model.forward(x)
        loss = F.cross_entropy(logits.flatten(0, 2), x.flatten(), reduction="none")
        loss.view(len(members), -1).mean(1).sum().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if precision == "bfloat16":
            _round_bf16(model.params)
        if step + 1 == steps // 2:
            half = memorized_bits(model, data, n.tolist())
        bar.update(1)
    bar.close()
    final = memorized_bits(model, data, n.tolist())
    return TrainedLMs(model, data, list(members), half, final, time.perf_counter() - start)


# --- the study: capacity per model and precision, then quantization -----------------------

def _members(study: LMCapacityStudy, model: str) -> list[Member]:
    return [Member(n, seed_from_text(f"lm-data:{study.seed}:{model}:{n}:{s}"),
                   seed_from_text(f"lm-init:{study.seed}:{model}:{n}:{s}"))
            for n in study.n_grid(model) for s in range(study.seeds)]


def _config(study: LMCapacityStudy, model: str, precision: str) -> dict[str, Any]:
    keep = {k: v for k, v in asdict(study).items()
            if k not in ("profile", "models", "bf16_models", "precisions", "bits",
                         "retrain_steps", "shapes")}
    if model != model.split()[0]:  # a further data's nets: its V and S, not the first's
        keep["vocab"], keep["seq_len"] = study.shape(model)
    return {"study": keep, "model": model, "precision": precision}


def measure_lm_capacity(study: LMCapacityStudy, device: str = "auto",
                        cache: ResultsCache | None = None, progress: bool = True
                        ) -> pd.DataFrame:
    """One row per trained LM (model, precision, N, seed): memorized bits after half the
    steps and at the end, the ceiling and the data's entropy; one cache record (with the
    nets) per model and precision."""
    retain_freed_memory()
    cache = cache or ResultsCache()
    dev = resolve_device(device)
    rows: list[dict[str, Any]] = []
    todo = study.trainings()
    bar = progress_bar(total=len(todo), desc="LM populations", disable=not progress)
    for model, precision in todo:
        spec = study.spec(model)
        members = _members(study, model)

        def compute(spec=spec, members=members, precision=precision, model=model):
            t = train_lms(spec, members, study.steps, study.lr, study.batch, dev, precision,
                          study.warmup, progress=progress)
            out = []
            for k, m in enumerate(members):
                seqs = t.data[k, :m.n_sequences].cpu()
                out.append({
                    "model": model, "params": spec.n_params, "layers": spec.layers,
                    "width": spec.width, "precision": precision, "vocab": spec.vocab,
                    "seq_len": spec.steps, "n_sequences": m.n_sequences,
                    "seed": m.data_seed, "init_seed": m.init_seed,
                    "entropy_bits": m.n_sequences * study.sequence_bits(model),
                    "ceiling_bits": float(ceiling_bits(seqs, spec.vocab).sum()),
                    "memorized_bits": float(t.final[k]),
                    "memorized_bits_half": float(t.half[k]), "steps": study.steps,
                    "train_wall_s": round(t.wall_s / len(members), 2)})
            nets = {"params": [p.detach().cpu() for p in t.model.params],
                    "names": t.model.names}
            return {"profile": study.profile, "rows": out}, nets

        record, _ = cache.compute(EXPERIMENT, _config(study, model, precision), compute,
                                  describe(dev), artifact=True, label=study.profile)
        rows += [{**r, "profile": study.profile, "key": record["key"]}
                 for r in record["result"]["rows"]]
        bar.update(1)
    bar.close()
    return pd.DataFrame(rows)


def lm_summary(rows: pd.DataFrame) -> pd.DataFrame:
    """Per model and precision: the N where the seeds' mean memorized bits peak, whether
    that peak is bracketed (a smaller and a larger N hold less) and short of the ceiling's
    sequences' cap, the capacity (mean and sd over seeds at the peak), bits per parameter,
    and convergence (did the second half of the steps add more than 2 s.e.?)."""
    out = []
    for (model, precision), g in rows.groupby(["model", "precision"], sort=False):
        per = g.groupby("n_sequences").agg(
            mean=("memorized_bits", "mean"), sd=("memorized_bits", "std"),
            half=("memorized_bits_half", "mean"), half_sd=("memorized_bits_half", "std"),
            seeds=("memorized_bits", "size"), ceiling=("ceiling_bits", "mean"),
            entropy=("entropy_bits", "mean")).reset_index()
        i = int(per["mean"].idxmax())
        top = per.iloc[i]
        lower_below = bool((per["mean"].iloc[:i] < top["mean"]).any())
        lower_above = bool((per["mean"].iloc[i + 1:] < top["mean"]).any())
        n = int(top.seeds)
        grows = greater(Estimate.from_sd(top["mean"], top.sd, n),
                        Estimate.from_sd(top.half, top.half_sd, n))
        # a peak that memorized all it could (the ceiling) is no maximum: more lies above
        full = bool(top["mean"] >= 0.99 * top.ceiling)
        params = int(g.params.iloc[0])
        out.append({
            "model": model, "precision": precision, "params": params,
            "layers": int(g.layers.iloc[0]), "width": int(g.width.iloc[0]),
            "vocab": int(g.vocab.iloc[0]), "seq_len": int(g.seq_len.iloc[0]),
            "n_at_max": int(top.n_sequences), "capacity_bits": float(top["mean"]),
            "capacity_bits_mean": float(top["mean"]), "capacity_bits_sd": float(top.sd),
            "replicates": n, "bits_per_param": float(top["mean"]) / params,
            "bits_per_param_sd": float(top.sd) / params,
            "memorized_bits": float(top["mean"]), "ceiling_bits": float(top.ceiling),
            "entropy_bits": float(top.entropy),
            "bracketed": lower_below and lower_above and not full,
            "at_ceiling": full,
            "converged": (grows.outcome != AGREES) if n > 1 else None,
            "length_growth": float(top["mean"] / top.half - 1) if top.half > 0 else None,
            "n_swept": [int(v) for v in per.n_sequences]})
    return pd.DataFrame(out)


def load_population(key: str, cache: ResultsCache | None = None) -> dict[str, Any]:
    return (cache or ResultsCache()).load_artifact(
        EXPERIMENT, key, "build the transformer chapter again (it retrains the lost LMs)")


def quantize_lms(study: LMCapacityStudy, rows: pd.DataFrame, summary: pd.DataFrame,
                 device: str = "auto", cache: ResultsCache | None = None,
                 progress: bool = True) -> pd.DataFrame:
    """The float32 LMs at their capacity's N (full) and at the largest N below half of it
    (half), quantized at every width both ways (tables in float, or deployed) and both
    routes: directly (post-training) and progressively with ``retrain_steps`` of
    straight-through retraining after each step down. One row per net, width, way and
    route: memorized bits."""
    cache = cache or ResultsCache()
    dev = resolve_device(device)
    out: list[dict[str, Any]] = []
    fl = summary[summary.precision == "float32"]
    for s in fl.itertuples():
        g = rows[(rows.model == s.model) & (rows.precision == "float32")]
        below = sorted(int(n) for n in g.n_sequences.unique() if n <= s.n_at_max / 2)
        points = {"full": int(s.n_at_max), **({"half": below[-1]} if below else {})}
        config = {**_config(study, s.model, "float32"), "bits": list(study.bits),
                  "retrain_steps": study.retrain_steps, "points": points}

        def compute(s=s, g=g, points=points):
            return {"profile": study.profile,
                    "rows": _quantize_model(study, s.model, g, points, dev, cache, progress)}

        record, _ = cache.compute(QUANT_EXPERIMENT, config, compute, describe(dev),
                                  label=study.profile)
        out += record["result"]["rows"]
    return pd.DataFrame(out)


def _quantize_model(study: LMCapacityStudy, model: str, g: pd.DataFrame,
                    points: dict[str, int], dev: torch.device, cache: ResultsCache,
                    progress: bool) -> list[dict[str, Any]]:
    spec = study.spec(model)
    saved = load_population(g.key.iloc[0], cache)
    members_all = _members(study, model)
    rows: list[dict[str, Any]] = []
    for point, n_seq in points.items():
        idx = [k for k, m in enumerate(members_all) if m.n_sequences == n_seq]
        members = [members_all[k] for k in idx]
        data = stack_data(members, spec, dev)

        def fresh(idx=idx) -> StackedTransformer:
            m = StackedTransformer([build_transformer(spec, 0)] * len(idx), dev)
            with torch.no_grad():
                for p, q in zip(m.params, saved["params"], strict=True):
                    p.copy_(q[idx].to(dev))
            return m

        base = {"model": model, "params": spec.n_params, "point": point,
                "n_sequences": n_seq, "vocab": spec.vocab, "seq_len": spec.steps}
        net = fresh()
        floats = memorized_bits(net, data, [n_seq] * len(idx))
        for k, m in enumerate(members):
            rows.append({**base, "seed": m.data_seed, "bits": None, "way": "float",
                         "route": "float", "memorized_bits": float(floats[k])})
        for way, deployed in ROUTES.items():
            shadow = fresh()
            for b in study.bits:
                cfg = QuantConfig(b, "l2")
                direct = fresh()
                direct.quantize_weights(cfg, deployed)
                got = memorized_bits(direct, data, [n_seq] * len(idx))
                if study.retrain_steps:
                    shadow = train_lms(spec, members, study.retrain_steps, study.lr / 10,
                                       study.batch, dev, warmup=0.0, model=shadow, data=data,
                                       quant=cfg, deployed=deployed).model
                    prog = memorized_bits(shadow, data, [n_seq] * len(idx))
                else:
                    prog = got
                for k, m in enumerate(members):
                    rows.append({**base, "seed": m.data_seed, "bits": b, "way": way,
                                 "route": "direct", "memorized_bits": float(got[k])})
                    rows.append({**base, "seed": m.data_seed, "bits": b, "way": way,
                                 "route": "progressive", "memorized_bits": float(prog[k])})
    return rows


def grid_ceiling(bits: int) -> float:
    """The most a b-bit weight can hold: log2(2^b - 1) bits (levels -M..M)."""
    return math.log2(2 ** bits - 1)


@dataclass
class LMResult:
    rows: pd.DataFrame
    summary: pd.DataFrame
    quant: pd.DataFrame = field(default_factory=pd.DataFrame)
