"""'Paper says / we measured': the chapters' comparison tables, and the scorecard.

The claims themselves, their tests and verdicts, live in ``claims.py``; this module reads
the cached results they judge (``evidence``) and builds the tables the pages show beside
them. The intro page stacks every claim whose results exist, so the scorecard grows with
the book.
"""

from __future__ import annotations

import html
import re

import numpy as np
import pandas as pd

from capq_lib.core import reference
from capq_lib.core.info import conv_bits_per_parameter
from capq_lib.core.verdicts import Estimate, Z
from capq_lib.experiments import fill, lm_capacity, records, trained_mi
from capq_lib.experiments.advise import measured
from capq_lib.experiments.capacity import (
    CNN_KIND,
    FCDNN_CNN_RECIPE_KIND,
    FCDNN_KIND,
    RNN_KIND,
    TRAINING_LENGTH_KIND,
    TRANSFORMER_KIND,
)
from capq_lib.experiments.consistency import consistency
from capq_lib.experiments.precision import EXPERIMENT as QUANTIZATION
from capq_lib.experiments.precision import main_rows
from capq_lib.experiments.realtasks import cached_surfaces
from capq_lib.experiments.records import summaries
from capq_lib.experiments.results import ResultsCache
from capq_lib.nets.models import CNNSpec, conv_reuse
from capq_lib.report import claims
from capq_lib.report.claims import Evidence

#: the paper's bits per FC parameter, subtracted from a CNN's capacity for its conv share
FC_ASSUMED = reference.value("cnn.fc_bits_per_param_assumed")


def _pm(mean: pd.Series, sd: pd.Series, n: pd.Series, fmt: str) -> list[str]:
    """'mean ± 2 s.e.' cells (Estimate.cell, the book's one format); the bare mean where
    there is no spread (fewer than two replicates)."""
    return [Estimate.from_sd(m, d, k).cell(fmt) for m, d, k in zip(mean, sd, n, strict=True)]


def _status(summary: pd.DataFrame) -> list[str]:
    """Per model, in a word or two: a maximum, or why only a lower bound."""
    out = []
    for _, r in summary.iterrows():
        lower, why = claims.convergence(r)
        out.append(("lower bound: " + (why or "peak not bracketed")) if lower else "maximum")
    return out


#: what a capacity table's columns mean, said once in its caption
SPREAD = "\u00b1 is two standard errors over the replicates"


def capacity_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Per model: where the search's I peaked, the capacity reported (the mean of fresh
    trainings of the winner, ± 2 s.e.), the search's own maximum beside it, and whether
    the capacity is a maximum or only a lower bound (and why)."""
    s = summary
    n = s.replicates
    return pd.DataFrame({
        "model": s.model, "params": s.params.map("{:,}".format),
        "peak at N (p)": [f"{k:,} ({p:.4f})" for k, p in zip(s.n_at_max, s.p_at_max,
                                                             strict=True)],
        "capacity, bits": _pm(s.capacity_bits, s.capacity_bits_sd, n, ",.0f"),
        "bits per param.": _pm(s.bits_per_param, s.bits_per_param_sd, n, ".2f"),
        "search max, bits": s.capacity_bits_search_max.map("{:,.0f}".format),
        "status": _status(s)})


def fcdnn_table(summary: pd.DataFrame) -> pd.DataFrame:
    """``capacity_table`` and whether each architecture lies in the paper's range."""
    lo, hi = reference.value("fcdnn.bits_per_param_range")
    t = capacity_table(summary)
    t[f"in {lo}-{hi}"] = np.where(summary.bits_per_param.between(lo, hi), "yes", "no")
    return t


def _replicates(summary: pd.DataFrame) -> str:
    n = sorted(set(int(x) for x in summary.replicates)) if len(summary) else []
    return f"{'/'.join(map(str, n))} replicates" if n else "no replicates"


def fcdnn_styled(summary: pd.DataFrame):
    """``fcdnn_table`` for the page, the paper's values in the caption."""
    lo, hi = reference.value("fcdnn.bits_per_param_range")
    mean = reference.value("fcdnn.bits_per_param_mean")
    where = reference.source("fcdnn.bits_per_param_range")
    return (fcdnn_table(summary).style.hide(axis="index")
            .set_caption(f"Capacity per architecture, mean of {_replicates(summary)} ("
                         f"{SPREAD}). Paper ({where}): {lo} to {hi} bits per parameter, "
                         f"mean {mean}."))


def search_winners(trials: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    """Per model: the recipe of the trial at the capacity, and whether the paper's search
    ranges (lr 0.001-0.05, momentum 0.6-0.99) contain it."""
    lr_lo, lr_hi = reference.value("fcdnn.lr_range")
    m_lo, m_hi = reference.value("fcdnn.momentum_range")
    search = trials[trials.stage < 5]
    best = search.loc[search.groupby("model")["mutual_info"].idxmax()].set_index("model")
    out = summary[["model"]].copy()
    out["stage"] = [int(best.loc[m, "stage"]) for m in out.model]
    out["lr"] = [best.loc[m, "lr"] for m in out.model]
    out["momentum"] = [best.loc[m, "momentum"] for m in out.model]
    out["N"] = [int(best.loc[m, "n_samples"]) for m in out.model]
    out["lr in paper's range"] = np.where((out.lr >= lr_lo) & (out.lr <= lr_hi), "yes", "no")
    out["momentum in paper's range"] = np.where(
        (out.momentum >= m_lo) & (out.momentum <= m_hi), "yes", "no")
    return out


def table1(cnn: pd.DataFrame, fc_bits: float | None):
    """Table 1 regenerated, our half: replicated capacity and conv share (± 2 s.e.).

    The conv share subtracts the FC layer's capacity at 2.3 bits per parameter (the
    paper's assumption) and, when ``fc_bits`` is given, at our own FCDNN measurement."""
    n = cnn.replicates
    t = pd.DataFrame({"model": cnn.model, "params (conv)": [
        f"{p:,} ({c:,})" for p, c in zip(cnn.params, cnn.params_conv, strict=True)],
        "capacity, bits": _pm(cnn.capacity_bits, cnn.capacity_bits_sd, n, ",.0f"),
        f"conv bits/param, FC at {FC_ASSUMED:g}": _pm(cnn.conv_bits_per_param,
                                                      cnn.conv_bits_per_param_sd, n, ".2f")})
    if fc_bits is not None:
        t[f"conv bits/param, FC at our {fc_bits:.2f}"] = [
            f"{conv_bits_per_parameter(c, f, v, fc_bits):.2f}"
            for c, f, v in zip(cnn.capacity_bits, cnn.params_fc, cnn.params_conv, strict=True)]
    t["search max, bits"] = cnn.capacity_bits_search_max.map("{:,.0f}".format)
    t["status"] = _status(cnn)
    return t.style.hide(axis="index").set_caption(
        f"Table 1 measured again: our CNNs, mean of {_replicates(cnn)} ({SPREAD}).")


def table1_paper(cnn: pd.DataFrame):
    """Table 1 regenerated, beside the paper: each model's conv share and capacity next to
    the paper's same model, and how often each conv weight is used per image."""
    ref = reference.paper()["cnn"]["table1"]["models"]
    t = pd.DataFrame({
        "model": cnn.model,
        "conv bits/param, ours": _pm(cnn.conv_bits_per_param, cnn.conv_bits_per_param_sd,
                                     cnn.replicates, ".2f"),
        "conv bits/param, paper": [f"{ref[m]['conv_bits_per_param']:.2f}" for m in cnn.model],
        "capacity, ours": cnn.capacity_bits.map("{:,.0f}".format),
        "capacity, paper": [f"{ref[m]['capacity_bits']:,.0f}" for m in cnn.model],
        "uses per conv weight": [f"{conv_reuse(CNNSpec(m)):,.0f}" for m in cnn.model]})
    return t.style.hide(axis="index").set_caption(
        f"Beside the paper ({reference.source('cnn.table1')}); a lower bound of ours is "
        f"marked \u2265 in the table above.")


def rnn_table(rnn: pd.DataFrame):
    """Our LSTMs, the paper's 32-unit one in the caption (Sec. 4.3)."""
    t = capacity_table(rnn)
    t.insert(1, "units", rnn.units.astype(int))
    return t.style.hide(axis="index").set_caption(
        f"Our LSTMs, mean of {_replicates(rnn)} ({SPREAD}). Paper "
        f"({reference.source('rnn.bits_per_param')}): {reference.value('rnn.bits_per_param')} "
        f"bits per parameter at 32 units.")


def families(fc: pd.DataFrame, cnn: pd.DataFrame, rnn: pd.DataFrame,
             fc_cnn_recipe: pd.DataFrame | None = None,
             tf: pd.DataFrame | None = None) -> pd.DataFrame:
    """Bits per parameter per measured model and family (conv share for CNNs), with its
    spread (2 s.e. over the replicates, as every ± in the book) and whether the value is
    a lower bound."""
    parts = []
    for name, df, col, ref in (
            ("FCDNN", fc, "bits_per_param", reference.value("fcdnn.bits_per_param_mean")),
            ("FCDNN, CNN recipe", fc_cnn_recipe, "bits_per_param",
             reference.value("fcdnn.bits_per_param_mean")),
            ("CNN", cnn, "conv_bits_per_param", reference.value("cnn.conv_bits_per_param_mean")),
            ("LSTM", rnn, "bits_per_param", reference.value("rnn.bits_per_param")),
            # beyond the paper: its bar is Morris et al.'s LM value (another measure)
            ("Transformer", tf, "bits_per_param",
             reference.value("transformers.lm_bits_per_param"))):
        if df is not None and not df.empty:
            lower = [claims.convergence(r)[0] for _, r in df.iterrows()]
            spread = [Z * Estimate.from_sd(m, d, n).se if n > 1 else 0.0 for m, d, n in
                      zip(df[col], df[f"{col}_sd"], df.replicates, strict=True)]
            parts.append(pd.DataFrame({"family": name, "model": df.model, "bits": df[col],
                                       "spread": spread, "lower_bound": lower,
                                       "paper": ref}))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(
        columns=["family", "model", "bits", "spread", "lower_bound", "paper"])


FAMILY_NAMES = {"fc": "FCDNN", "cnn": "CNN", "rnn": "LSTM"}


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


def evidence(profile: str | None = None, cache: ResultsCache | None = None) -> Evidence:
    """Everything the claims judge, read from the cache (``profile`` None: every profile)."""
    cache = cache or ResultsCache()
    fc, cnn, rnn, fc_cnn = (summaries(k, profile, cache) for k in
                            (FCDNN_KIND, CNN_KIND, RNN_KIND, FCDNN_CNN_RECIPE_KIND))
    lengths = training_lengths(profile, cache)
    real = records.rows("real-tasks", profile, cache)
    real = pd.DataFrame(real) if real else pd.DataFrame()
    if len(real):
        if "seed" not in real:
            real["seed"] = 0
        real = real.drop_duplicates(["task", "model", "seed", "bits", "retrained", "split"],
                                    keep="last")
    tf = summaries(TRANSFORMER_KIND, profile, cache)
    lm_rows = pd.DataFrame(records.rows(lm_capacity.EXPERIMENT, profile, cache))
    lm = lm_capacity.lm_summary(lm_rows) if len(lm_rows) else pd.DataFrame()
    lm_quant = pd.DataFrame(records.rows(lm_capacity.QUANT_EXPERIMENT, profile, cache))
    quant = pd.DataFrame(records.rows(QUANTIZATION, profile, cache))
    quant = main_rows(quant) if len(quant) and "main" in quant else pd.DataFrame()
    return Evidence(profile or "all", mi_trained=trained_mi.cached_rows(profile, cache),
                    fc=fc, cnn=cnn, rnn=rnn, fc_cnn_recipe=fc_cnn, lengths=lengths,
                    lossless=measured(profile, cache, per_seed=True), quant=quant,
                    fill=fill.cached_nets(profile, cache), real=real,
                    surfaces=cached_surfaces(profile, cache), tf=tf, lm=lm,
                    lm_quant=lm_quant)


def training_lengths(profile: str | None, cache: ResultsCache | None = None) -> pd.DataFrame:
    """The capacity chapters' training-length rows (capacity against epochs) under
    ``profile``; ``experiment`` says whose (rows made before it was recorded: the CNNs')."""
    rows = pd.DataFrame(records.rows(TRAINING_LENGTH_KIND, profile, cache))
    if len(rows):
        rows["experiment"] = rows.get("experiment", pd.Series(CNN_KIND, index=rows.index)
                                      ).fillna(CNN_KIND)
    return rows


def scorecard(profile: str | None = None, cache: ResultsCache | None = None) -> pd.DataFrame:
    """Every claim with results under ``profile``, from the cache."""
    return claims.rows(evidence(profile, cache))


def bounds_text(summary: pd.DataFrame) -> str:
    """Which capacities are maxima and which only lower bounds, and why, in a sentence."""
    if summary.empty:
        return "No capacity was measured."
    parts = []
    for _, r in summary.iterrows():
        why = []
        step = r.get("step_above")
        if bool(r.get("bracketed", False)):
            pass
        elif r.p_at_max >= 1 and step is not None and step == step and r.n_at_max < r.n_grid_max:
            why.append(f"its peak memorized every sample (p = 1, so I = N) and the next N "
                       f"trained is {step:.0%} above it: the maximum lies in between")
        else:
            why.append(f"its peak is not bracketed (the largest N trained, {r.n_grid_max:,}, "
                       f"was still memorized to p = {r.p_at_n_grid_max:.3f})")
        done = r.get("converged")
        if done is None or done != done:
            why.append("its convergence in training length was not checked")
        elif not bool(done):
            why.append("a longer training still stored more")
        reps = int(r.get("replicates", 0) or 0)
        cap = Estimate.from_sd(r.capacity_bits, r.get("capacity_bits_sd", float("nan")), reps)
        spread = (f"{cap.cell(',.0f')} bits, 2 s.e. over {reps} replicates" if reps > 1
                  else f"{r.capacity_bits:,.0f} bits")
        parts.append(f"{r.model} ({spread}; search maximum {r.capacity_bits_search_max:,.0f})"
                     + (": a lower bound, as " + " and ".join(why) if why else
                        ": a bracketed maximum"))
    return "; ".join(parts) + "."


def consistency_text(table: pd.DataFrame) -> str:
    """The capacity page's consistency line: does any other record of the same
    architecture under this profile store more than the capacity reported? Written from
    ``experiments.consistency.consistency``."""
    if table.empty:
        return "No capacity to check."
    parts, missed = [], []
    for r in table.itertuples():
        cap = Estimate(r.capacity_bits_mean, r.capacity_bits_2se / Z, r.replicates).cell(
            ",.0f") + (" (2 s.e.)" if r.capacity_bits_2se == r.capacity_bits_2se else "")
        if not r.other_records:
            parts.append(f"{r.model}: {cap} bits; no other record of this profile trains it")
            continue
        other = f"{r.best_other_bits:,.0f} bits ({r.best_other_where})"
        if r.exceeds:
            missed.append(r.model)
            parts.append(f"{r.model}: {cap} bits, but another record stored {other}, more "
                         f"than 2 s.e. above it")
        else:
            parts.append(f"{r.model}: {cap} bits; the most any other record stored is {other}")
    head = ("**Consistency with every other record.** " + (
        f"The search missed the maximum of {', '.join(missed)}: a capacity that another "
        f"record of the same net beats is not the capacity. " if missed else
        "No other record of the same architecture under this profile beats a capacity "
        "above by more than 2 s.e. "))
    return head + "; ".join(parts) + (". Records made by chapters that run after this one "
                                      "(the quantization chapter, the fill sweep) are "
                                      "checked again on the intro page.")


def consistency_all(profile: str | None, cache: ResultsCache | None = None) -> str:
    """The consistency check of every capacity chapter's summaries against the records
    of the whole book (the intro runs last, so every other chapter's records are in)."""
    parts = []
    for kind, family in ((FCDNN_KIND, "fc"), (CNN_KIND, "cnn"), (RNN_KIND, "rnn")):
        summary = summaries(kind, profile, cache)
        if len(summary):
            parts.append(f"*{kind}*: " + consistency_text(
                consistency(summary, family, profile, cache)).split("** ", 1)[1].split(
                ". Records made by chapters", 1)[0] + ".")
    return ("**Every capacity against every other record of the same net.** "
            + " ".join(parts)) if parts else "No capacity results yet."


#: the scorecard's terms, each linked to its entry in the intro's glossary (``glossary``
#: directive: Sphinx makes the anchor "term-" + the term, lower-case, words joined by "-")
GLOSSARY = {
    "plug-in": "plug-in estimate", "N_at_max/2": "half capacity",
    "C/2": "half capacity", "N_at_max": "N at the peak", "2 s.e.": "standard error",
    "s.e.": "standard error", "FC share at 2.3": "conv bits per parameter",
    "conv share": "conv bits per parameter", "fill sweep": "fill sweep",
    "fill-sweep": "fill sweep", "C(d) / (d C(1))": "depth ratio", "unigram": "unigram",
    "stand-in": "stand-in", "lower bound": "lower bound", "bracketed": "bracketed",
    "not converged": "converged", "convergence not checked": "converged",
    "fewest lossless bits": "fewest lossless bits", "not measured": "not measured",
    "precondition": "precondition"}


def term_id(term: str) -> str:
    """The anchor Sphinx gives a glossary term."""
    return "term-" + "-".join(re.findall(r"[a-z0-9]+", term.lower()))


def _linked(text: str) -> str:
    """``text`` escaped for HTML, each glossary term's first use linked to its entry."""
    out = html.escape(text)
    done = set()
    for word in sorted(GLOSSARY, key=len, reverse=True):
        esc = html.escape(word)
        entry = GLOSSARY[word]
        if entry in done or esc not in out:
            continue
        i = out.index(esc)
        if out.rfind("<a ", 0, i) > out.rfind("</a>", 0, i):  # inside a link already
            continue
        out = (out[:i] + f'<a href="#{term_id(entry)}">{esc}</a>' + out[i + len(esc):])
        done.add(entry)
    return out


def cards(table: pd.DataFrame) -> str:
    """The scorecard as one card per claim (HTML): verdict and claim first, then the
    paper's value and source, what we measured and the test, terms linked to the glossary.
    Cards stack, so the page reads on a phone as on a desktop."""
    items = []
    for _, r in table.iterrows():
        verdict = str(r["verdict"])
        kind = verdict.split(" (", 1)[0].replace(" ", "-")
        test = str(r["test"])
        items.append(
            f'<div class="capq-card {kind}">'
            f'<div class="capq-head"><span class="capq-verdict">{_linked(verdict)}</span>: '
            f'{html.escape(str(r["claim"]))} '
            f'<span class="capq-chapter">({html.escape(str(r["chapter"]))})</span></div>'
            f'<dl><dt>paper</dt><dd>{html.escape(str(r["paper says"]))} '
            f'({html.escape(str(r["source"]))})</dd>'
            f'<dt>we measured</dt><dd>{_linked(str(r["we measured"]))}</dd>'
            f'<dt>test</dt><dd>{_linked(test)}</dd></dl></div>')
    return '<div class="capq-cards">' + "".join(items) + "</div>"


def transformer_bits_table(fewest: pd.DataFrame, lossless: pd.DataFrame) -> pd.DataFrame:
    """Fewest lossless bits at full capacity (N_at_max), per family: the transformer
    classifier's (progressive, tables in float, the quantization chapter's rule) beside
    the FCDNNs', CNNs' and LSTMs' of the quantization chapter and the paper's widths. Each
    family shows the model that needed the most, as the quantization claims judge it, so
    a number here is the same number there."""
    paper = reference.value("quantization.lossless_bits_full_capacity")
    t = fewest[(fewest.definition == "N_at_max x 1") & (fewest.way == "float tables")
               & (fewest.route == "progressive")] if len(fewest) else fewest
    groups = [(name, lossless[(lossless.family == fam)
                              & (lossless.definition == "N_at_max x 1")]
               if len(lossless) else lossless, f"{paper[fam]} bits")
              for fam, name in (("fc", "FCDNN"), ("cnn", "CNN"), ("rnn", "LSTM"))]
    groups.append(("Transformer classifier", t, "(not in the paper)"))
    rows = []
    for name, g, ref in groups:
        if len(g):
            model, e, _ = claims.worst_model(g)
            models = ", ".join(dict.fromkeys(g.model))
            which = model if model == models else f"{model} (the most of {models})"
            rows.append({"family": name, "model": which,
                         "fewest lossless bits": e.cell(".2f"), "paper": ref})
        else:
            rows.append({"family": name, "model": "not measured",
                         "fewest lossless bits": "not measured", "paper": ref})
    return pd.DataFrame(rows)


def transformer_table(summary: pd.DataFrame):
    """The transformer classifiers, as the LSTM table (the same measure, Eq. (1))."""
    t = capacity_table(summary)
    t.insert(1, "layers x width", [f"{int(a)} x {int(b)}" for a, b in
                                   zip(summary.layers, summary.width, strict=True)])
    return t.style.hide(axis="index").set_caption(
        f"Transformer classifiers on the LSTM chapter's data, mean of "
        f"{_replicates(summary)} ({SPREAD}).")


def _lm_data(lm: pd.DataFrame) -> str:
    """The data the LMs memorized: V and S, or, when they differ, where to read them."""
    if lm.empty:
        return "no LMs"
    first = lm[~lm.model.str.contains(" ")]
    first = first if len(first) else lm
    text = f"V = {int(first.vocab.iloc[0])}, S = {int(first.seq_len.iloc[0])}"
    if len(lm.groupby(["vocab", "seq_len"])) > 1:
        text += "; a label 'V... S...' names other data"
    return text


def lm_table(lm: pd.DataFrame):
    """The LMs' capacities per precision: the peak's N, memorized bits against the data's
    ceiling there, bits per parameter, and whether it is a maximum (and if not, why)."""
    status = []
    for _, r in lm.iterrows():
        if r.get("at_ceiling"):
            status.append("lower bound: memorized all it could at its peak")
        else:
            lower, why = claims.convergence(r)
            status.append(("lower bound: " + (why or "peak not bracketed")) if lower
                          else "maximum")
    t = pd.DataFrame({
        "model": lm.model, "precision": lm.precision, "params": lm.params.map("{:,}".format),
        "peak at N": lm.n_at_max.map("{:,}".format),
        "memorized, bits": _pm(lm.capacity_bits, lm.capacity_bits_sd, lm.replicates,
                               ",.0f"),
        "ceiling, bits": lm.ceiling_bits.map("{:,.0f}".format),
        "bits per param.": _pm(lm.bits_per_param, lm.bits_per_param_sd, lm.replicates,
                               ".2f"),
        "status": status})
    morris = reference.value("transformers.lm_bits_per_param")
    return t.style.hide(axis="index").set_caption(
        f"Language models ({_lm_data(lm)}), mean of {_replicates(lm)} "
        f"({SPREAD}). Morris et al. 2025: {morris} bits per parameter.")
