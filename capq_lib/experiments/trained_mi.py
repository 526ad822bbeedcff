"""Checking Eq. (1) on trained nets: a check that can fail.

Eq. (1), I = N (1 - H2(p)), treats a memorizing net as a binary symmetric channel from the
labels Y to its answers Y_hat. A real net need not be one: past capacity it may favour one
class, and its errors then fall more on the other. Here FCDNNs memorize N fair-coin labels
(the FCDNN chapter's stage-1 recipe) at N from well below to well past capacity, and per net
Eq. (1) is compared with the plug-in estimate N * I(Y; Y_hat) from the 2x2 table of its own
answers on its N training samples, which assumes no symmetry.

Per sample the difference splits exactly into two non-negative parts of opposite sign:

    gap / N = plug-in / N - (1 - H2(P_e)) = fano_slack - label_deficit,
    fano_slack = H2(P_e) - H(Y | Y_hat) >= 0      (Fano's inequality; zero iff an error is
                                                   as likely after either answer)
    label_deficit = 1 - H(Y) >= 0                  (a finite set of coins is rarely balanced)

all on the empirical table. Eq. (1) is therefore a lower bound of the plug-in information
up to the label deficit, which is O(1/N); the asymmetry of a net's errors is what can
raise the gap.

One cache record per (model, N) holds every seed's net; the missing (model, N) of a model
train together as one population (a member ends as it would alone, up to float rounding).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from capq_lib.core import validate
from capq_lib.core.devices import describe, resolve_device
from capq_lib.core.info import (
    binary_channel_information,
    binary_entropy,
    confusion_counts,
    empirical_mutual_information,
    mutual_information,
)
from capq_lib.core.seeds import derived_seed
from capq_lib.engine.population import Member, stack_memorization_sets, stack_nets, train_members
from capq_lib.engine.train import SCHEDULES, Recipe
from capq_lib.experiments import records
from capq_lib.experiments.results import ResultsCache
from capq_lib.nets.datasets import check_size
from capq_lib.nets.models import FCDNNSpec

KIND = "mi-trained"
#: what the rows of the tidy table hold, in order
COLUMNS = ["profile", "model", "params", "depth", "width", "n_samples", "n_per_param", "seed",
           "epochs_run", "memorized", "accuracy", "eq1_bits", "plugin_bits", "gap_bits",
           "eq1_per_sample", "plugin_per_sample", "gap_per_sample", "fano_slack_per_sample",
           "label_deficit_per_sample", "label_1_share", "pred_1_share", "error_0", "error_1",
           "error_asymmetry"]


@dataclass(frozen=True)
class TrainedMICheck:
    """Which FCDNNs memorize how many labels (N = n_per_param x parameters), over how many
    seeds, trained how (default: the FCDNN chapter's stage-1 recipe), and the tolerance in
    bits per sample within which Eq. (1) counts as agreeing with the plug-in estimate."""

    models: tuple[str, ...] = ("1x16", "2x16")
    n_per_param: tuple[float, ...] = (0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0)
    seeds: int = 3
    epochs: int = 2000
    lr: float = 0.1
    momentum: float = 0.9
    schedule: str = "cosine"
    batches_per_epoch: int = 8
    eval_every: int = 25
    tolerance: float = 0.02
    seed: int = 0
    profile: str = "custom"

    def __post_init__(self) -> None:
        validate.lists_to_tuples(self)
        object.__setattr__(self, "models", validate.non_empty("models", self.models))
        object.__setattr__(self, "n_per_param",
                           validate.non_empty("n_per_param", self.n_per_param))
        for m in self.models:
            fcdnn(m)
        for r in self.n_per_param:
            validate.number("n_per_param", r, lo=0.0, hi=1000.0, lo_open=True)
        validate.integer("seeds", self.seeds, lo=1, hi=1000)
        validate.choice("schedule", self.schedule, SCHEDULES)
        validate.number("tolerance", self.tolerance, lo=0.0, hi=1.0, lo_open=True)
        validate.integer("seed", self.seed, lo=0)
        self.recipe()  # epochs, lr, momentum, batches, eval_every: checked as for one net
        seen: set[tuple[str, int]] = set()
        for spec, n, _ in self.units():  # every N must fit the input: fail before training
            try:
                check_size(n, spec.n_in)
            except validate.ConfigError as err:
                raise validate.ConfigError(f"n_per_param: {err} (model {spec.name})") from None
            if (spec.name, n) in seen:
                raise validate.ConfigError(f"n_per_param (or models) give N = {n} twice for "
                                           f"model {spec.name}; list each ratio and model once")
            seen.add((spec.name, n))

    def specs(self) -> list[FCDNNSpec]:
        return [fcdnn(m) for m in self.models]

    def units(self) -> list[tuple[FCDNNSpec, int, float]]:
        """Every (model, N, N/P) to train, N = max(2, round(n_per_param x parameters))."""
        return [(spec, max(2, round(r * spec.n_params)), float(r)) for spec in self.specs()
                for r in self.n_per_param]

    def recipe(self) -> Recipe:
        return Recipe(epochs=self.epochs, lr=self.lr, momentum=self.momentum,
                           schedule=self.schedule, batches_per_epoch=self.batches_per_epoch,
                           eval_every=self.eval_every)

    def unit_config(self, spec: FCDNNSpec, n_samples: int) -> dict[str, Any]:
        """What decides one (model, N) record: the cache key."""
        skip = {"models", "n_per_param", "tolerance"}
        return {**{k: v for k, v in asdict(self).items() if k not in skip},
                "model": spec.name, "n_samples": n_samples}

    def describe(self) -> str:
        """What was trained, in a sentence for the page."""
        return (f"{len(self.models) * len(self.n_per_param) * self.seeds} FCDNNs "
                f"({', '.join(self.models)}; N/P = "
                f"{', '.join(f'{r:g}' for r in self.n_per_param)}; {self.seeds} seeds each, "
                f"a seed fixing the data and the initialization), trained with SGD (learning "
                f"rate {self.lr:g}, momentum {self.momentum:g}, {self.schedule} schedule) for "
                f"up to {self.epochs:,} epochs of {self.batches_per_epoch} batches, stopping "
                f"once every sample is memorized.")

    def member_seeds(self, spec: FCDNNSpec, n_samples: int) -> list[int]:
        """A data and init seed per net, the same in every process."""
        return [derived_seed(self.seed, spec.name, n_samples, k) for k in range(self.seeds)]


def fcdnn(name: str) -> FCDNNSpec:
    """An FCDNN from its name, depth x width ('2x16'), as the other chapters write it."""
    try:
        depth, width = (int(v) for v in str(name).lower().split("x"))
    except ValueError:
        raise validate.ConfigError(f"models must name FCDNNs as depth x width, e.g. '1x16'; "
                                   f"got {name!r}") from None
    return FCDNNSpec(width=width, depth=depth)




@torch.no_grad()
def predictions(spec: FCDNNSpec, nets: list[nn.Module], x: torch.Tensor,
                chunk: int = 65536) -> torch.Tensor:
    """Each net's answers Y_hat on its own inputs: (K, N_max, ...) -> (K, N_max) ints."""
    model = stack_nets(spec, nets, x.device)
    return torch.cat([model.forward(x[:, i:i + chunk].float()).argmax(-1)
                      for i in range(0, x.shape[1], chunk)], 1)


def net_row(labels: np.ndarray, answers: np.ndarray) -> dict[str, float]:
    """Eq. (1), the plug-in estimate and what tells them apart, from one net's answers."""
    c00, c01, c10, c11 = (int(c) for c in confusion_counts(labels, answers).ravel())
    n = c00 + c01 + c10 + c11
    p = (c00 + c11) / n
    eq1 = float(mutual_information(n, p))
    plugin = empirical_mutual_information(labels, answers)
    label_1 = (c10 + c11) / n
    deficit = 1.0 - float(binary_entropy(label_1))
    e0 = c01 / (c00 + c01) if c00 + c01 else float("nan")
    e1 = c10 / (c10 + c11) if c10 + c11 else float("nan")
    return {"accuracy": p, "eq1_bits": eq1, "plugin_bits": plugin,
            "gap_bits": plugin - eq1, "eq1_per_sample": eq1 / n,
            "plugin_per_sample": plugin / n, "gap_per_sample": (plugin - eq1) / n,
            "fano_slack_per_sample": (plugin - eq1) / n + deficit,
            "label_deficit_per_sample": deficit, "label_1_share": label_1,
            "pred_1_share": (c01 + c11) / n, "error_0": e0, "error_1": e1,
            "error_asymmetry": e1 - e0}


def train_units(check: TrainedMICheck, spec: FCDNNSpec, ns: list[int], device: torch.device,
                progress: bool = False) -> tuple[dict[int, list[dict[str, Any]]], float]:
    """Train every seed at every N in ``ns`` as one population; rows per N and wall time."""
    seeds = {n: check.member_seeds(spec, n) for n in ns}
    members = [Member(n, s, s, check.recipe()) for n in ns for s in seeds[n]]
    x, y = stack_memorization_sets(members, spec.input_shape, device)
    out = train_members(spec, members, device, progress, data=(x, y))
    answers = predictions(spec, [m.model for m in out.members], x).cpu().numpy()
    labels = y.cpu().numpy()
    rows: dict[int, list[dict[str, Any]]] = {n: [] for n in ns}
    for k, (m, res) in enumerate(zip(members, out.members, strict=True)):
        n = m.n_samples
        row = net_row(labels[k, :n], answers[k, :n])
        rows[n].append({"model": spec.name, "params": spec.n_params, "depth": spec.depth,
                        "width": spec.width, "n_samples": n,
                        "n_per_param": n / spec.n_params, "seed": m.data_seed,
                        "epochs_run": res.epochs_run, "memorized": bool(row["accuracy"] == 1.0),
                        **row})
    return rows, out.wall_time_s


def measure_trained_mi(check: TrainedMICheck, device: str = "auto",
                       cache: ResultsCache | None = None, progress: bool = False
                       ) -> pd.DataFrame:
    """One row per trained net (model, N, seed): Eq. (1), the plug-in estimate, their gap and
    the error asymmetry; only the (model, N) not in the cache are trained."""
    cache = cache or ResultsCache()
    dev = resolve_device(device)
    rows: list[dict[str, Any]] = []
    for spec in check.specs():
        ratio = {n: r for s, n, r in check.units() if s == spec}
        ns = list(ratio)
        have = {n: cache.get(KIND, check.unit_config(spec, n)) for n in ns}
        todo = [n for n in ns if have[n] is None]
        if todo:
            fresh, wall = train_units(check, spec, todo, dev, progress)
            for n in todo:
                have[n] = cache.put(KIND, check.unit_config(spec, n),
                                    {"profile": check.profile, "rows": fresh[n],
                                     "population_units": len(todo)},
                                    describe(dev), wall / len(todo))
        for n in ns:
            cache.label(have[n], check.profile)
            rows += [{**r, "profile": have[n]["result"]["profile"], "n_per_param": ratio[n]}
                     for r in have[n]["result"]["rows"]]
    return pd.DataFrame(rows, columns=COLUMNS)


def cached_rows(profile: str | None = None, cache: ResultsCache | None = None) -> pd.DataFrame:
    """Every trained net in the cache (of ``profile``, or all), for readers such as the
    scorecard that must not train; the latest record of a (model, N, seeds) config wins."""
    latest: dict[tuple, dict[str, Any]] = {}
    for rec in records.of_profile(KIND, profile, cache):  # oldest first
        c = rec["config"]
        latest[(rec["result"].get("profile"), c["model"], c["n_samples"], c["seeds"])] = rec
    rows = [{**r, "profile": rec["result"]["profile"]} for rec in latest.values()
            for r in rec["result"]["rows"]]
    return (pd.DataFrame(rows, columns=COLUMNS)
            .sort_values(["profile", "params", "model", "n_samples"], kind="stable")
            .reset_index(drop=True))


def gap_by_n(rows: pd.DataFrame) -> pd.DataFrame:
    """Per (model, N): mean and spread over seeds of the gap, with what explains it."""
    keys = ["model", "params", "n_samples", "n_per_param"]
    g = rows.groupby(keys, sort=False)
    out = g.agg(seeds=("seed", "size"), accuracy=("accuracy", "mean"),
                accuracy_std=("accuracy", "std"), eq1_per_sample=("eq1_per_sample", "mean"),
                plugin_per_sample=("plugin_per_sample", "mean"),
                gap_per_sample=("gap_per_sample", "mean"),
                gap_std=("gap_per_sample", "std"), gap_min=("gap_per_sample", "min"),
                gap_max=("gap_per_sample", "max"),
                fano_slack_per_sample=("fano_slack_per_sample", "mean"),
                label_deficit_per_sample=("label_deficit_per_sample", "mean"),
                pred_1_share=("pred_1_share", "mean"), error_0=("error_0", "mean"),
                error_1=("error_1", "mean"),
                abs_asymmetry=("error_asymmetry", lambda s: s.abs().mean()),
                memorized=("memorized", "mean")).reset_index()
    out["largest_abs_gap"] = g.gap_per_sample.apply(lambda s: s.abs().max()).to_numpy()
    out["one_sided_gap"] = one_sided_gap(out.accuracy.to_numpy())
    return out.sort_values(["params", "n_samples"], kind="stable").reset_index(drop=True)


def one_sided_gap(accuracy: np.ndarray) -> np.ndarray:
    """The gap per sample of a net as accurate, with fair labels, whose errors all fall on one
    class (a Z channel): the scale of what the check would show if Eq. (1) failed."""
    p = np.asarray(accuracy, dtype=float)
    e = np.clip(2 * (1 - p), 0.0, 1.0)  # error rate on the one class that takes every error
    return np.asarray(binary_channel_information(0.0, e)) - np.asarray(mutual_information(1, p))


def largest_gap(rows: pd.DataFrame, tolerance: float) -> dict[str, Any]:
    """What decides the verdict: the largest |gap| per sample of one net and of a mean over
    seeds, where each occurs, and whether every one is within ``tolerance``."""
    validate.number("tolerance", tolerance, lo=0.0, lo_open=True)
    if rows.empty:
        raise validate.ConfigError("rows must hold at least one trained net, got none")
    net = rows.loc[rows.gap_per_sample.abs().idxmax()]
    by_n = gap_by_n(rows)
    mean = by_n.loc[by_n.gap_per_sample.abs().idxmax()]
    return {"tolerance": tolerance, "nets": len(rows),
            "within_per_net": bool((rows.gap_per_sample.abs() <= tolerance).all()),
            "within_mean": bool((by_n.gap_per_sample.abs() <= tolerance).all()),
            "net_gap_per_sample": float(net.gap_per_sample), "net_model": net.model,
            "net_n_samples": int(net.n_samples), "net_n_per_param": float(net.n_per_param),
            "net_accuracy": float(net.accuracy), "net_pred_1_share": float(net.pred_1_share),
            "net_error_0": float(net.error_0), "net_error_1": float(net.error_1),
            "mean_gap_per_sample": float(mean.gap_per_sample),
            "mean_gap_std": float(mean.gap_std), "mean_model": mean.model,
            "mean_n_per_param": float(mean.n_per_param),
            "mean_accuracy": float(mean.accuracy),
            "mean_pred_1_share": float(mean.pred_1_share),
            "min_gap_per_sample": float(rows.gap_per_sample.min()),
            "max_fano_slack_per_sample": float(rows.fano_slack_per_sample.max()),
            "max_label_deficit_per_sample": float(rows.label_deficit_per_sample.max())}


def findings(rows: pd.DataFrame, tolerance: float) -> str:
    """The page's sentences about the trained check, written from the data."""
    g = largest_gap(rows, tolerance)
    by_n = gap_by_n(rows)
    seeds = sorted(int(k) for k in by_n.seeds.unique())
    n_seeds = (_plural(seeds[0], "seed") if len(seeds) == 1
               else f"{seeds[0]} to {seeds[-1]} seeds")
    slackest = by_n.loc[by_n.fano_slack_per_sample.idxmax()]
    short = by_n[by_n.accuracy < 1.0]
    far = by_n[by_n.n_per_param == by_n.n_per_param.max()]
    neg = rows[rows.gap_per_sample < 0]
    side = "within" if g["within_per_net"] else "outside"
    slack, deficit = g["max_fano_slack_per_sample"], g["max_label_deficit_per_sample"]
    text = [
        f"Over {_plural(g['nets'], 'trained net')} "
        f"({_plural(by_n.model.nunique(), 'architecture')}, "
        f"{_plural(len(by_n), 'setting')} of N, {n_seeds} each), the largest gap of one net is "
        f"**{g['net_gap_per_sample']:+.4f} bits per sample** ({side} \u00b1{tolerance:g}), "
        f"at N/P = {g['net_n_per_param']:.2g} ({g['net_model']}, N = {g['net_n_samples']:,}), "
        f"where that net is right on {100 * g['net_accuracy']:.1f} % of its samples and "
        f"predicts class 1 for {100 * g['net_pred_1_share']:.1f} % of them (it gets "
        f"{100 * g['net_error_0']:.1f} % of the 0s and {100 * g['net_error_1']:.1f} % of "
        f"the 1s wrong).",
        f"Averaged over seeds, the largest gap is {g['mean_gap_per_sample']:+.4f} "
        f"\u00b1 {g['mean_gap_std']:.4f} bits per sample (mean \u00b1 standard deviation), "
        f"at N/P = {g['mean_n_per_param']:.2g} ({g['mean_model']}, mean accuracy "
        f"{100 * g['mean_accuracy']:.1f} %, class 1 predicted for "
        f"{100 * g['mean_pred_1_share']:.1f} % of samples).",
        "At the largest N/P measured, " + "; ".join(
            f"{r.model} (N/P = {r.n_per_param:.2g}) is right on {100 * r.accuracy:.1f} % of "
            f"its samples and its mean gap is {r.gap_per_sample:+.4f} \u00b1 {r.gap_std:.4f}"
            for r in far.itertuples()) + ".",
        f"Asymmetric errors lift the plug-in estimate above Eq. (1) most at N/P = "
        f"{slackest.n_per_param:.2g} ({slackest.model}), by "
        f"{slackest.fano_slack_per_sample:.4f} bits per sample on average (the Fano slack), "
        f"where the nets get {100 * slackest.error_0:.1f} % of the 0s and "
        f"{100 * slackest.error_1:.1f} % of the 1s wrong and call "
        f"{100 * slackest.pred_1_share:.1f} % of the samples class 1.",
        (f"{len(neg)} of {len(rows)} nets have a negative gap, at most "
         f"{-g['min_gap_per_sample']:.4f} bits per sample: their labels are not exactly "
         f"balanced." if len(neg) else "No net has a negative gap."),
        (f"For scale, nets as accurate as these whose errors all fell on one class would show "
         f"gaps of up to {short.one_sided_gap.max():.3f} bits per sample (at N/P = "
         f"{short.loc[short.one_sided_gap.idxmax()].n_per_param:.2g}, "
         f"{short.loc[short.one_sided_gap.idxmax()].model})." if len(short) else ""),
        f"Over all nets the Fano slack reaches at most {slack:.4f} bits per sample and the "
        f"label deficit at most {deficit:.4f}, so the gap comes mostly from "
        + ("the asymmetry of the errors." if slack > deficit
           else "the imbalance of the finite label sets, not from asymmetric errors."),
    ]
    return " ".join(t for t in text if t)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' if n != 1 else ''}"


def gap_table(rows: pd.DataFrame, tolerance: float):  # -> pandas Styler
    """The page's table: per (model, N), Eq. (1) and the plug-in estimate per sample, their
    gap (mean and spread over seeds), and the error pattern behind it."""
    t = gap_by_n(rows)
    out = pd.DataFrame({
        "model": t.model, "N / P": t.n_per_param, "N": t.n_samples, "seeds": t.seeds,
        "p": t.accuracy, "Eq. (1) bits/sample": t.eq1_per_sample,
        "plug-in bits/sample": t.plugin_per_sample, "gap (mean)": t.gap_per_sample,
        "gap (std)": t.gap_std, "largest |gap|": t.largest_abs_gap,
        "predicts 1": t.pred_1_share, "errors on 0s": t.error_0, "errors on 1s": t.error_1,
        "Fano slack": t.fano_slack_per_sample, "label deficit": t.label_deficit_per_sample,
        "gap if one-sided": t.one_sided_gap})
    bits = ["Eq. (1) bits/sample", "plug-in bits/sample", "gap (mean)", "gap (std)",
            "largest |gap|", "Fano slack", "label deficit", "gap if one-sided"]
    return (out.style.hide(axis="index")
            .format({"N / P": "{:.2g}", "N": "{:,}", "p": "{:.4f}",
                     **{c: "{:+.4f}" if c == "gap (mean)" else "{:.4f}" for c in bits},
                     **{c: "{:.1%}" for c in ("predicts 1", "errors on 0s", "errors on 1s")}})
            .map(lambda v: "color: #d62728; font-weight: bold" if abs(v) > tolerance else "",
                 subset=["largest |gap|"])
            .set_caption(f"Trained nets: bits per sample by Eq. (1) and by the plug-in estimate, "
                         f"over seeds; largest |gap| in red where above {tolerance:g}; the "
                         f"last column is the gap nets as accurate would show if every error "
                         f"fell on one class"))
