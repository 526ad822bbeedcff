"""'Paper says / we measured': comparison tables built from cached results.

Each check returns rows of (claim, paper, ours, verdict); the intro page stacks the rows of
every chapter whose results exist, so the scorecard grows with the book.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import reference
from .capacity import CNN_KIND, FCDNN_KIND, RNN_KIND
from .channel import KIND as MI_KIND
from .info import conv_bits_per_parameter
from .models import CNNSpec
from .results import ResultsCache

COLUMNS = ["chapter", "claim", "paper says", "source", "we measured", "verdict"]


def _row(chapter: str, claim: str, paper: str, source: str, ours: str, ok: bool | None) -> dict:
    verdict = "n/a" if ok is None else ("agrees" if ok else "differs")
    return dict(zip(COLUMNS, [chapter, claim, paper, source, ours, verdict], strict=True))


def _latest(records: list[dict], profile: str | None) -> pd.DataFrame:
    rows = [r["result"] for r in records if profile is None or r["result"].get("profile") ==
            profile]
    return pd.DataFrame(rows)


def mi_rows(check: pd.DataFrame) -> list[dict]:
    """Eq. (1) against the simulation at the largest N simulated."""
    if check.empty:
        return []
    n = check.n_samples.max()
    err = float(check.loc[check.n_samples == n, "relative_error"].abs().max())
    return [_row("Mutual information", "Eq. (1) gives the bits a classifier of accuracy p "
                 "holds about N random labels", "I = N (1 - H2(p))",
                 reference.source("mutual_information.formula"),
                 f"plug-in estimate within {err:.4f} bits/sample of Eq. (1) at N = {n}",
                 err < 0.01)]


def capacity_ratios(summary: pd.DataFrame, by: str, other: str) -> list[tuple]:
    """(other value, a, b, C(b)/C(a)) for consecutive values a < b of ``by``."""
    out = []
    for val, g in summary.groupby(other):
        g = g.sort_values(by)
        for (_, a), (_, b) in zip(g.iterrows(), g.iloc[1:].iterrows(), strict=False):
            out.append((val, a[by], b[by], b.capacity_bits / a.capacity_bits))
    return out


def fcdnn_rows(summary: pd.DataFrame) -> list[dict]:
    """The FCDNN claims of Sec. 4.1 against our capacity summary."""
    if summary.empty:
        return []
    ch = "FCDNN capacity"
    lo, hi = reference.value("fcdnn.bits_per_param_range")
    mean_ref = reference.value("fcdnn.bits_per_param_mean")
    bpp = summary.bits_per_param
    rows = [
        _row(ch, "bits per parameter, mean over architectures", f"{mean_ref}",
             reference.source("fcdnn.bits_per_param_mean"),
             f"{bpp.mean():.2f} over {len(bpp)} architectures", abs(bpp.mean() - mean_ref) <= 0.3),
        _row(ch, "bits per parameter, range", f"{lo} to {hi}",
             reference.source("fcdnn.bits_per_param_range"),
             f"{bpp.min():.2f} to {bpp.max():.2f}",
             bool(bpp.min() >= lo - 0.2 and bpp.max() <= hi + 0.2)),
    ]
    widths = [r for r in capacity_ratios(summary, "width", "depth") if r[2] == 2 * r[1]]
    if widths:
        f = np.exp(np.mean(np.log([r[3] for r in widths])))
        rows.append(_row(ch, "doubling the width multiplies what is memorized by",
                         "4", reference.source("fcdnn.width_doubling_n_factor"),
                         f"{f:.2f} (capacity ratio, geometric mean of {len(widths)} pairs)",
                         3.0 <= f <= 5.0))
    if "lr_at_max" in summary:
        lr_lo, lr_hi = reference.value("fcdnn.lr_range")
        inside = int(summary.lr_at_max.between(lr_lo, lr_hi).sum())
        rows.append(_row(ch, "learning rate of the best trial lies in the paper's search range",
                         f"searched {lr_lo} to {lr_hi}", reference.source("fcdnn.lr_range"),
                         f"{inside} of {len(summary)} architectures (lr "
                         f"{summary.lr_at_max.min():.3g} to {summary.lr_at_max.max():.3g})",
                         None))
    depth1 = summary[summary.depth == 1].set_index("width").capacity_bits
    deeper = summary[(summary.depth > 1) & summary.width.isin(depth1.index)]
    if not deeper.empty:
        ratio = deeper.capacity_bits.values / depth1.loc[deeper.width].values / deeper.depth.values
        rows.append(_row(ch, "depth d memorizes d times what depth 1 does", "C(d) / C(1) = d",
                         reference.source("fcdnn.depth_n_factor"),
                         f"C(d) / (d C(1)) = {ratio.min():.2f} to {ratio.max():.2f}",
                         bool(np.all(np.abs(ratio - 1) <= 0.25))))
    return rows


def fcdnn_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Bits per parameter per architecture, and whether it lies in the paper's range."""
    lo, hi = reference.value("fcdnn.bits_per_param_range")
    t = summary[["model", "params", "n_at_max", "p_at_max", "capacity_bits",
                 "bits_per_param"]].copy()
    t["in paper's range"] = np.where((t.bits_per_param >= lo) & (t.bits_per_param <= hi),
                                     "yes", "no")
    return t


def fcdnn_styled(summary: pd.DataFrame):
    """``fcdnn_table`` formatted for the page, the paper's values in the caption."""
    lo, hi = reference.value("fcdnn.bits_per_param_range")
    mean = reference.value("fcdnn.bits_per_param_mean")
    where = reference.source("fcdnn.bits_per_param_range")
    return (fcdnn_table(summary).style.hide(axis="index")
            .format({"p_at_max": "{:.4f}", "capacity_bits": "{:,.0f}",
                     "bits_per_param": "{:.2f}", "params": "{:,}", "n_at_max": "{:,}"})
            .set_caption(f"Capacity per architecture. Paper ({where}): {lo}-{hi} bits per "
                         f"parameter, mean {mean}."))


def search_winners(trials: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    """Per model: the recipe of the trial at the capacity, and whether the paper's search
    ranges (lr 0.001-0.05, momentum 0.6-0.99) contain it."""
    lr_lo, lr_hi = reference.value("fcdnn.lr_range")
    m_lo, m_hi = reference.value("fcdnn.momentum_range")
    best = trials.loc[trials.groupby("model")["mutual_info"].idxmax()].set_index("model")
    out = summary[["model"]].copy()
    out["stage"] = [int(best.loc[m, "stage"]) for m in out.model]
    out["lr"] = [best.loc[m, "lr"] for m in out.model]
    out["momentum"] = [best.loc[m, "momentum"] for m in out.model]
    out["N"] = [int(best.loc[m, "n_samples"]) for m in out.model]
    out["lr in paper's range"] = np.where((out.lr >= lr_lo) & (out.lr <= lr_hi), "yes", "no")
    out["momentum in paper's range"] = np.where(
        (out.momentum >= m_lo) & (out.momentum <= m_hi), "yes", "no")
    return out


def summaries(kind: str, profile: str | None = None,
              cache: ResultsCache | None = None) -> pd.DataFrame:
    """The newest capacity summary per model of experiment ``kind`` under ``profile``."""
    df = _latest((cache or ResultsCache()).records(kind), profile)
    return df.drop_duplicates("model", keep="last").reset_index(drop=True) if len(df) else df


def table1(cnn: pd.DataFrame, fc_bits: float | None) -> pd.DataFrame:
    """Table 1 regenerated: our capacity and conv share beside the paper's, per model.

    The conv share subtracts the FC layer's capacity at 2.3 bits per parameter (the
    paper's assumption) and, when ``fc_bits`` is given, at our own FCDNN measurement."""
    ref = reference.paper()["cnn"]["table1"]["models"]
    t = pd.DataFrame({"model": cnn.model, "params": cnn.params, "conv params": cnn.params_conv,
                      "capacity (bits)": cnn.capacity_bits.round().astype(int),
                      "conv bits/param (FC at 2.3)": cnn.conv_bits_per_param})
    if fc_bits is not None:
        t[f"conv bits/param (FC at our {fc_bits:.2f})"] = [
            conv_bits_per_parameter(c, f, v, fc_bits)
            for c, f, v in zip(cnn.capacity_bits, cnn.params_fc, cnn.params_conv, strict=True)]
    t["paper capacity"] = [ref[m]["capacity_bits"] for m in cnn.model]
    t["paper conv bits/param"] = [ref[m]["conv_bits_per_param"] for m in cnn.model]
    t["uses per conv weight"] = [round(conv_reuse(CNNSpec(m))) for m in cnn.model]
    return t.round(2)


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


def cnn_rows(cnn: pd.DataFrame, fc: pd.DataFrame) -> list[dict]:
    """Sec. 4.2's claims against our CNN summaries."""
    if cnn.empty:
        return []
    ch, bpp = "CNN capacity", cnn.conv_bits_per_param
    mean_ref = reference.value("cnn.conv_bits_per_param_mean")
    rows = [_row(ch, "conv bits per parameter (FC share at 2.3), mean over models",
                 f"{mean_ref}", reference.source("cnn.conv_bits_per_param_mean"),
                 f"{bpp.mean():.2f} over {', '.join(cnn.model)}",
                 abs(bpp.mean() - mean_ref) <= 0.5)]
    if not fc.empty:
        rows.append(_row(ch, "a conv parameter stores more than an FC parameter",
                         "3.0 > 2.3", "Sec. 4.2, Fig. 2(b)",
                         f"{bpp.mean():.2f} vs {fc.bits_per_param.mean():.2f}",
                         bool(bpp.mean() > fc.bits_per_param.mean())))
    return rows


def rnn_table(rnn: pd.DataFrame) -> pd.DataFrame:
    """Our LSTMs beside the paper's 32-unit one (Sec. 4.3)."""
    t = rnn[["model", "units", "params", "n_at_max", "p_at_max", "capacity_bits",
             "bits_per_param"]].copy()
    t["paper bits/param"] = reference.value("rnn.bits_per_param")
    t["capacity_bits"] = t.capacity_bits.round().astype(int)
    return t.round({"p_at_max": 4, "bits_per_param": 2})


def rnn_rows(rnn: pd.DataFrame) -> list[dict]:
    """Sec. 4.3's claims against our LSTM summaries."""
    if rnn.empty:
        return []
    ch, ref = "RNN capacity", reference.value("rnn.bits_per_param")
    big = rnn.loc[rnn.params.idxmax()]
    rows = [_row(ch, "bits per parameter of the LSTM", f"{ref} (32 units)",
                 reference.source("rnn.bits_per_param"),
                 f"{big.bits_per_param:.2f} ({big.model})",
                 abs(big.bits_per_param - ref) <= 0.6)]
    if len(rnn) > 1:
        lo, hi = rnn.bits_per_param.min(), rnn.bits_per_param.max()
        rows.append(_row(ch, "bits per parameter does not depend on the LSTM's size",
                         "fairly independent of model size", "Sec. 1; Sec. 6",
                         f"{lo:.2f} to {hi:.2f} over {', '.join(rnn.model)}", hi / lo <= 1.25))
    return rows


def families(fc: pd.DataFrame, cnn: pd.DataFrame, rnn: pd.DataFrame) -> pd.DataFrame:
    """Bits per parameter per measured model and family (conv share for CNNs)."""
    parts = []
    for name, df, col, ref in (
            ("FCDNN", fc, "bits_per_param", reference.value("fcdnn.bits_per_param_mean")),
            ("CNN", cnn, "conv_bits_per_param", reference.value("cnn.conv_bits_per_param_mean")),
            ("LSTM", rnn, "bits_per_param", reference.value("rnn.bits_per_param"))):
        if not df.empty:
            parts.append(pd.DataFrame({"family": name, "model": df.model, "bits": df[col],
                                       "paper": ref}))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(
        columns=["family", "model", "bits", "paper"])


def ordering_rows(fam: pd.DataFrame) -> list[dict]:
    """The paper's ordering of families by bits per parameter, FC < CNN < LSTM."""
    means = fam.groupby("family", sort=False)["bits"].mean()
    if len(means) < 2:
        return []
    order = [f for f in ("FCDNN", "CNN", "LSTM") if f in means]
    ok = all(means[a] < means[b] for a, b in zip(order, order[1:], strict=False))
    return [_row("All families", "bits per parameter grows FC < CNN < LSTM", "2.3 < 3.0 < 3.7",
                 "Sec. 6", " < ".join(f"{f} {means[f]:.2f}" for f in order)
                 if ok else ", ".join(f"{f} {means[f]:.2f}" for f in order), ok)]


FAMILY_NAMES = {"fc": "FCDNN", "cnn": "CNN", "rnn": "LSTM"}


def lossless_table(table: pd.DataFrame) -> pd.DataFrame:
    """Per family, the fewest lossless bits at full and at half capacity (the most any of
    its models needed, main setting), beside the paper's full-capacity value."""
    ref = reference.value("quantization.lossless_bits_full_capacity")
    main = table[table.main & (table.recipe == "ours")]
    out = []
    for fam, g in main.groupby("family", sort=False):
        row = {"family": FAMILY_NAMES[fam], "models": ", ".join(dict.fromkeys(g.model))}
        for frac, col in ((1.0, "full capacity"), (0.5, "half capacity")):
            b = g[g.capacity_fraction == frac].fewest_lossless_bits
            row[f"fewest lossless bits, {col}"] = (
                "-" if not len(b) else f">{int(g.widest.max())}" if b.isna().any()
                else str(int(b.max())))
        row["paper, full capacity"] = ref[fam]
        out.append(row)
    return pd.DataFrame(out)


def quantization_rows(table: pd.DataFrame) -> list[dict]:
    """The paper's quantization claims (Sec. 5.1) against the main-setting measurements."""
    rows = []
    if table.empty:
        return rows
    ref = reference.value("quantization.lossless_bits_full_capacity")
    main = table[table.main & (table.recipe == "ours")]
    full = main[main.capacity_fraction == 1.0]
    for fam, g in full.groupby("family", sort=False):
        b = g.fewest_lossless_bits
        ours = f">{int(g.widest.max())}" if b.isna().any() else str(int(b.max()))
        ok = not b.isna().any() and abs(int(b.max()) - ref[fam]) <= 1  # within a bit
        rows.append(_row("Quantization", f"{FAMILY_NAMES[fam]} at full capacity keeps its "
                         f"accuracy down to", f"{ref[fam]} bits", "Sec. 5.1, Fig. 3(a)",
                         f"{ours} bits ({', '.join(g.model)})", ok))
    half = main[(main.family == "fc") & (main.capacity_fraction == 0.5)]
    if len(half):
        b = half.fewest_lossless_bits
        ours = f">{int(half.widest.max())}" if b.isna().any() else str(int(b.max()))
        rows.append(_row("Quantization", "an FCDNN at half capacity keeps every sample at",
                         "4 bits", "Sec. 5.1, Fig. 3(b)", f"{ours} bits",
                         not b.isna().any() and int(b.max()) <= 4))
    robust = []
    for _, g in main.groupby(["family", "model"]):
        g = g.dropna(subset=["fewest_lossless_bits"]).sort_values("data_per_param")
        if len(g) >= 2:
            robust.append(bool(g.fewest_lossless_bits.is_monotonic_increasing))
    if robust:
        rows.append(_row("Quantization", "fewer samples per parameter need fewer bits",
                         "yes", "Sec. 5.1, Fig. 4",
                         f"monotone in {sum(robust)} of {len(robust)} models", all(robust)))
    return rows


def divergence_table(table: pd.DataFrame) -> pd.DataFrame:
    """FCDNNs at full capacity: fewest lossless bits under each training recipe, step rule
    and retraining length, beside the paper's 6."""
    fc = table[(table.family == "fc") & (table.capacity_fraction == 1.0)].copy()
    if fc.empty:
        return fc
    fc["quantization"] = [
        "direct (no retraining)" if not r else f"progressive, {e} epochs retraining"
        for r, e in zip(fc.retrained, fc.retrain_epochs, strict=True)]
    fc["bits"] = [f">{int(w)}" if b != b else str(int(b))
                  for b, w in zip(fc.fewest_lossless_bits, fc.widest, strict=True)]
    out = fc.pivot_table(index=["recipe", "step_rule", "quantization"], columns="model",
                         values="bits", aggfunc="first").reset_index()
    acc = fc.pivot_table(index="recipe", columns="model", values="float_accuracy",
                         aggfunc="first")
    out.columns.name = None
    out.insert(0, "float accuracy", [", ".join(f"{v:.3f}" for v in acc.loc[r])
                                     for r in out.recipe])
    out["paper"] = reference.value("quantization.lossless_bits_full_capacity")["fc"]
    return out


def divergence_verdicts(table: pd.DataFrame, step_rule: str, base_epochs: int) -> list[str]:
    """One line per setting of the divergence study: each FCDNN's fewest lossless bits at
    full capacity, and which of them reach the paper's 6 bits."""
    fc = table[(table.family == "fc") & (table.capacity_fraction == 1.0)]
    ours = fc.recipe == "ours"
    settings = [
        (f"Our recipe, progressive, {step_rule} rule", ours & fc.main),
        ("Paper-range recipe, same quantization", (fc.recipe == "paper") & fc.main),
        ("Our recipe, the other step rule", ours & fc.retrained & (fc.step_rule != step_rule)),
        ("Our recipe, longer retraining", ours & (fc.retrain_epochs > base_epochs)),
        ("Our recipe, direct quantization", ours & ~fc.retrained & (fc.step_rule == step_rule))]
    target = reference.value("quantization.lossless_bits_full_capacity")["fc"]
    lines = []
    for label, mask in settings:
        g = fc[mask]
        if not len(g):
            continue
        bits = [(m, b, w) for m, b, w in zip(g.model, g.fewest_lossless_bits, g.widest,
                                              strict=True)]
        shown = ", ".join(f"{m} {'>' + str(int(w)) if b != b else int(b)}" for m, b, w in bits)
        reach = [m for m, b, _ in bits if b == b and b <= target]
        lines.append(f"- {label}: {shown} bits; reaches the paper's {target} bits for "
                     f"{', '.join(reach) if reach else 'none'}.")
    return lines


def real_task_rows(rows: pd.DataFrame) -> list[dict]:
    """The paper's real-task claims (Sec. 5.2) against our real-task measurements."""
    if rows.empty:
        return []
    from .realtasks import robustness

    out = []
    acc = robustness(rows[rows.task != "lm"], "accuracy")
    ppl = robustness(rows[rows.task == "lm"], "perplexity") if (rows.task == "lm").any() \
        else acc.iloc[0:0]
    rob = pd.concat([acc, ppl], ignore_index=True)
    rob["bits"] = rob.fewest_bits.fillna(99)
    wide = rob.pivot_table(index=["task", "model", "params"], columns="split", values="bits")
    if {"train", "test"} <= set(wide.columns):
        ok = wide.test <= wide.train
        out.append(_row("Real tasks", "the test set is more robust to quantization than the "
                        "training set", "yes", "Sec. 5.2, Fig. 5, 6",
                        f"test needs no more bits than train in {int(ok.sum())} of {len(ok)} nets",
                        bool(ok.all())))
        mono = [bool(g.sort_values("params").test.is_monotonic_decreasing)
                for _, g in wide.reset_index().groupby("task") if len(g) >= 2]
        if mono:
            out.append(_row("Real tasks", "larger nets are more robust", "yes",
                            "Sec. 5.2, Fig. 6, 7", f"test bits fall or stay as nets grow in "
                            f"{sum(mono)} of {len(mono)} families", all(mono)))
    m8 = rows[(rows.task == "mnist") & (rows.model == "2x8") & (rows.split == "test")]
    if len(m8) and (m8.bits == 4).any():
        f, q = m8[m8.bits.isna()].accuracy.iloc[0], m8[(m8.bits == 4) & m8.retrained]
        if len(q):
            q4 = q.accuracy.iloc[0]
            out.append(_row("Real tasks", "a 2-layer MNIST FCDNN of width 8 at 4 bits matches "
                            "float", "yes", "Sec. 5.2, Fig. 7(a)",
                            f"test accuracy {q4:.4f} vs float {f:.4f}", q4 >= f - 0.01))
    for task, name in (("resnet", "ResNets"), ("lm", "word-level LMs")):
        t = rob[(rob.task == task) & (rob.split == "test")]
        if len(t):
            lost = t.fewest_bits.isna().any()
            worst = int(rows.bits.max()) if lost else int(t.fewest_bits.max())
            out.append(_row("Real tasks", f"{name} keep their test performance down to",
                            "6 bits", "Sec. 5.2, Fig. 7(b, c)",
                            f"{'>' if lost else ''}{worst} bits ({', '.join(t.model)}; "
                            f"within 1 % of float)", not lost and worst <= 6))
    return out


def scorecard(profile: str | None = None, cache: ResultsCache | None = None) -> pd.DataFrame:
    """Every claim with results under ``profile``, from the cache."""
    cache = cache or ResultsCache()
    check = _latest(cache.records(MI_KIND), profile)
    if not check.empty:
        check["relative_error"] = (check.empirical_mean - check.formula) / check.n_samples
    fc, cnn, rnn = (summaries(k, profile, cache) for k in (FCDNN_KIND, CNN_KIND, RNN_KIND))
    rows = mi_rows(check) + fcdnn_rows(fc) + cnn_rows(cnn, fc) + rnn_rows(rnn)
    rows += ordering_rows(families(fc, cnn, rnn))
    from .advise import measured

    rows += quantization_rows(measured(profile, cache))
    real = [{**r, "key": rec["key"]} for rec in cache.records("real-tasks")
            if profile is None or rec["result"].get("profile") == profile
            for r in rec["result"]["rows"]]
    rows += real_task_rows(pd.DataFrame(real).drop_duplicates(
        ["task", "model", "bits", "retrained", "split"], keep="last") if real else
        pd.DataFrame())
    return pd.DataFrame(rows, columns=COLUMNS)
