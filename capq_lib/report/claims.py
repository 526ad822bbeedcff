"""Every "paper says / we measured" claim of the book, each declared once.

A :class:`Claim` says what the paper claims (its value read from ``data/paper``, with the
place the paper states it), how we measure it, the test that decides the verdict with its
tolerance, and the precondition a measurement must meet before it may be judged. Its
``judge`` turns the :class:`Evidence` (the cached results of one profile) into findings:
what we measured, in words, and a verdict from :mod:`capq_lib.core.verdicts` (agrees, differs,
inconclusive). Chapters print their own claims with :func:`markdown`; the intro stacks
them all into the scorecard.

Tolerances follow these rules, stated once here and never widened for a verdict:

- a range the paper states (FCDNNs store 1.7 to 2.5 bits per parameter) is used as stated;
- a single number the paper states (2.3 bits per parameter, a 4x factor, Table 1's 2.48)
  matches within ``REL_TOLERANCE`` (10 %) of it. The paper's own FCDNN values spread 19 %
  either side of the middle of their range, so this is tighter than the paper's spread;
- a relation ("does not depend on size") is a ratio with its interval against an
  equivalence margin of the same 10 %: agrees inside it, differs wholly outside it, so a
  measured trend can come out "differs";
- a number of bits matches when the seeds' interval of fewest lossless bits lies within
  ``BIT_SLACK`` (half a bit: the resolution of a schedule with every width) of the paper's.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
from IPython.display import Markdown

from capq_lib.core import reference
from capq_lib.core import verdicts as v
from capq_lib.core.verdicts import Estimate, Verdict
from capq_lib.experiments.realtasks import LM_TASKS, on_stand_in
from capq_lib.nets.models import count_parameters
from capq_lib.nets.taskmodels import CIFARCNN

#: the columns of a scorecard row
COLUMNS = ["chapter", "claim", "paper says", "source", "we measured", "test", "verdict"]


@dataclass
class Evidence:
    """The cached results of one profile that the claims judge; an empty frame means the
    chapter has not run."""

    profile: str
    mi_trained: pd.DataFrame = field(default_factory=pd.DataFrame)
    fc: pd.DataFrame = field(default_factory=pd.DataFrame)
    cnn: pd.DataFrame = field(default_factory=pd.DataFrame)
    rnn: pd.DataFrame = field(default_factory=pd.DataFrame)
    #: FCDNNs trained with the CNN chapter's optimizer and epochs (equal effort)
    fc_cnn_recipe: pd.DataFrame = field(default_factory=pd.DataFrame)
    #: training-length rows of every capacity chapter (``experiment`` says whose)
    lengths: pd.DataFrame = field(default_factory=pd.DataFrame)
    #: fewest lossless bits per family, model, N definition and seed (the quantization
    #: chapter; one row per net)
    lossless: pd.DataFrame = field(default_factory=pd.DataFrame)
    #: the quantization chapter's main rows: one per net (seed) and width, float included
    quant: pd.DataFrame = field(default_factory=pd.DataFrame)
    #: the fill sweep: one row per net, float bits per parameter and fewest lossless bits
    fill: pd.DataFrame = field(default_factory=pd.DataFrame)
    #: real-task rows: one per net, width and split
    real: pd.DataFrame = field(default_factory=pd.DataFrame)
    #: loss-surface points: one per net, width, split and alpha (means over directions)
    surfaces: pd.DataFrame = field(default_factory=pd.DataFrame)
    #: transformer classifiers' capacity summaries (the LSTM chapter's data, Eq. (1))
    tf: pd.DataFrame = field(default_factory=pd.DataFrame)
    #: transformer LMs' capacity summaries (Morris's measure), per model and precision
    lm: pd.DataFrame = field(default_factory=pd.DataFrame)
    #: the LMs quantized: one row per net, width, way (tables) and route
    lm_quant: pd.DataFrame = field(default_factory=pd.DataFrame)


@dataclass(frozen=True)
class Finding:
    """One judged measurement: what we measured, the verdict, and when a claim is judged
    per model, which one (it then names the claim's subject)."""

    ours: str
    verdict: Verdict
    subject: str = ""
    paper: str | None = None  # overrides the claim's paper value when it depends on subject


@dataclass(frozen=True)
class Claim:
    key: str
    chapter: str
    text: str
    #: where the paper's value lives in data/paper/reference.yaml
    ref: str
    measure: str
    test: str
    judge: Callable[[Evidence], list[Finding]]
    precondition: str = ""
    #: the subjects the paper states the claim for (Table-1 models, families, tasks), with
    #: the paper's value for each (None: the claim's); a subject without a finding gets a
    #: "not measured" row, so the scorecard shows what was skipped as well as what was
    #: checked
    subjects: Callable[[], dict[str, str | None]] | None = None
    #: why the claim (or a subject of it: a mapping) may lack a measurement under a profile
    unmeasured: str | dict[str, str] = "no results of its chapter under this profile"

    def why_unmeasured(self, subject: str = "") -> str:
        if isinstance(self.unmeasured, dict):
            return self.unmeasured.get(subject, "no results of its chapter under this profile")
        return self.unmeasured

    @property
    def paper(self) -> str:
        """The paper's value as the scorecard shows it (an entry's ``shown`` text where the
        bare value would not read as the claim, e.g. ``true``)."""
        entry = reference.entry(self.ref)
        val = entry.get("shown", entry.get("value", "per model, below"))
        return " to ".join(map(str, val)) if isinstance(val, list) else str(val)

    @property
    def source(self) -> str:
        return reference.source(self.ref)

    def rows(self, ev: Evidence) -> list[dict]:
        found = self.judge(ev)
        expected = self.subjects() if self.subjects else {}
        have = {f.subject for f in found}
        missing = [Finding("not measured", v.not_measured(self.why_unmeasured(s)), s, p)
                   for s, p in expected.items() if s not in have]
        if not found and not expected:
            missing = [Finding("not measured", v.not_measured(self.why_unmeasured()))]
        out = []
        for f in found + missing:
            if "{subject}" in self.text:
                text = self.text.format(subject=f.subject)
            else:
                text = f"{self.text} ({f.subject})" if f.subject else self.text
            test = self.test + (f"; precondition: {self.precondition}"
                                if self.precondition else "")
            out.append(dict(zip(COLUMNS, [self.chapter, text, f.paper or self.paper,
                                          self.source, f.ours, test, str(f.verdict)],
                                strict=True)))
        return out


#: a single number of the paper matches within this fraction of it (see the module's rules)
REL_TOLERANCE = 0.10
#: fewest lossless bits match the paper's when the seeds' interval lies within this many bits
BIT_SLACK = 0.5
#: an accuracy loss of 0 matches within the quantization chapter's lossless tolerance
LOSSLESS_POINTS = 0.005


def near(value: float) -> float:
    """The tolerance of one paper number under the rule: 10 % of it."""
    return REL_TOLERANCE * abs(value)


def counts(table: pd.DataFrame) -> dict[str, int]:
    """How many scorecard rows agree, differ, are inconclusive, or were not measured."""
    first = table["verdict"].str.split(" (", n=1, regex=False).str[0] if len(table) else []
    return {o: int((first == o).sum()) if len(table) else 0 for o in v.OUTCOMES}


def counts_text(table: pd.DataFrame) -> str:
    c = counts(table)
    return (f"{len(table)} rows: {c[v.AGREES]} agree, {c[v.DIFFERS]} differ, "
            f"{c[v.INCONCLUSIVE]} inconclusive, {c[v.NOT_MEASURED]} not measured")


# --- reading estimates off capacity summaries -----------------------------------------------

def _se(sd: float, n: int) -> float:
    return sd / math.sqrt(n) if n > 1 and sd == sd else float("nan")


def convergence(row: pd.Series) -> tuple[bool, str]:
    """Whether a capacity is only a lower bound, and why in words: an unbracketed peak, a
    longer training that stored more, or no length check at all (never converged by
    default)."""
    if not bool(row.get("bracketed", False)):
        return True, ""
    done = row.get("converged")
    if done is None or done != done:
        return True, "convergence not checked"
    if not bool(done):
        return True, "not converged in training length"
    return False, ""


def bits_per_param(row: pd.Series, conv: bool = False) -> Estimate:
    """A model's replicated bits per parameter (conv share for CNNs); a lower bound when its
    peak is unbracketed, its training had not converged, or convergence was not checked."""
    n = int(row.get("replicates", 0) or 0)
    col = "conv_bits_per_param" if conv else "bits_per_param"
    sd = row.get(f"{col}_sd", float("nan"))
    lower, caveat = convergence(row)
    return Estimate(float(row[col]), _se(sd, n), max(n, 1) if n else 1, lower, caveat)


def capacity(row: pd.Series) -> Estimate:
    n = int(row.get("replicates", 0) or 0)
    lower, caveat = convergence(row)
    return Estimate(float(row.capacity_bits), _se(row.get("capacity_bits_sd", float("nan")), n),
                    max(n, 1), lower, caveat)


def ratio(a: Estimate, b: Estimate) -> Estimate:
    """a / b with relative errors added in quadrature; a lower bound of either side leaves
    the ratio without a known direction, so it is marked as one too (inconclusive)."""
    r = a.mean / b.mean
    se = abs(r) * math.sqrt((a.se / a.mean) ** 2 + (b.se / b.mean) ** 2)
    return Estimate(r, se, min(a.n, b.n), a.lower_bound or b.lower_bound,
                    a.caveat or b.caveat)


def _models(df: pd.DataFrame) -> str:
    return ", ".join(df.model)


def _why(e: Estimate, row: pd.Series | None = None) -> str:
    """The reason an estimate is a lower bound, in words."""
    if not e.lower_bound or row is None:
        return ""
    return "; " + (convergence(row)[1] or "peak not bracketed")


def family(df: pd.DataFrame, conv: bool = False) -> Estimate:
    return v.mean_of([bits_per_param(r, conv) for _, r in df.iterrows()])


# --- Mutual information -------------------------------------------------------------------

MI_TOLERANCE = 0.02


def _mi(ev: Evidence) -> list[Finding]:
    rows = ev.mi_trained
    if rows.empty:
        return []
    within = rows.gap_per_sample.abs() <= MI_TOLERANCE
    worst = rows.loc[rows.gap_per_sample.abs().idxmax()]
    ours = (f"largest |plug-in - Eq. (1)| {abs(worst.gap_per_sample):.4f} bits/sample (at "
            f"N/P = {worst.n_per_param:.2g}, accuracy {worst.accuracy:.3f}); "
            f"{int(within.sum())} of {len(rows)} trained nets within {MI_TOLERANCE}")
    return [Finding(ours, v.all_hold(int(within.sum()), len(rows)))]


# --- FCDNN capacity -----------------------------------------------------------------------

def _fc_mean(ev: Evidence) -> list[Finding]:
    if ev.fc.empty:
        return []
    e = family(ev.fc)
    paper = reference.value("fcdnn.bits_per_param_mean")
    return [Finding(f"{e.text()} over {_models(ev.fc)}", v.within(e, paper, near(paper)))]


def _fc_range(ev: Evidence) -> list[Finding]:
    if ev.fc.empty:
        return []
    lo, hi = reference.value("fcdnn.bits_per_param_range")
    parts, outcomes = [], []
    for _, r in ev.fc.iterrows():
        e = bits_per_param(r)
        parts.append(f"{r.model} {e.text().split(' (')[0]}")
        outcomes.append(v.in_range(e, lo, hi))
    return [Finding("; ".join(parts), _all(outcomes))]


def _all(outcomes: list[Verdict]) -> Verdict:
    """Every sub-verdict agrees: agrees; any differs: differs; else the first reason."""
    if any(o.outcome == v.DIFFERS for o in outcomes):
        return v.differs(next(o.reason for o in outcomes if o.outcome == v.DIFFERS))
    if outcomes and all(o.outcome == v.AGREES for o in outcomes):
        return v.agrees()
    return v.inconclusive(next((o.reason for o in outcomes if o.outcome == v.INCONCLUSIVE),
                               "not measured"))


def _fc_width(ev: Evidence) -> list[Finding]:
    fc = ev.fc
    if fc.empty or "width" not in fc:
        return []
    pairs = []
    for _, g in fc.groupby("depth"):
        by_w = {int(r.width): r for _, r in g.iterrows()}
        pairs += [(by_w[w], by_w[2 * w]) for w in sorted(by_w) if 2 * w in by_w]
    if not pairs:
        return []
    rs = [ratio(capacity(b), capacity(a)) for a, b in pairs]
    e = v.mean_of(rs)
    ours = (f"{e.text()} (capacity ratio, mean of {len(rs)} doublings: "
            + ", ".join(f"{a.model} to {b.model}" for a, b in pairs) + ")")
    paper = float(reference.value("fcdnn.width_doubling_n_factor"))
    return [Finding(ours, v.within(e, paper, near(paper)))]


def _fc_depth(ev: Evidence) -> list[Finding]:
    fc = ev.fc
    if fc.empty or "depth" not in fc:
        return []
    one = {int(r.width): r for _, r in fc[fc.depth == 1].iterrows()}
    deeper = [r for _, r in fc[fc.depth > 1].iterrows() if int(r.width) in one]
    if not deeper:
        return []
    rs = []
    for r in deeper:
        x = ratio(capacity(r), capacity(one[int(r.width)]))
        rs.append(Estimate(x.mean / r.depth, x.se / r.depth, x.n, x.lower_bound, x.caveat))
    e = v.mean_of(rs)
    return [Finding(f"C(d) / (d C(1)) = {e.text()} over {', '.join(r.model for r in deeper)}",
                    v.within(e, 1.0, near(1.0)))]


# --- CNN capacity -------------------------------------------------------------------------

def _cnn_models(ev: Evidence) -> list[Finding]:
    out = []
    table = reference.paper()["cnn"]["table1"]["models"]
    for _, r in ev.cnn.iterrows():
        e = bits_per_param(r, conv=True)
        paper = table[r.model]["conv_bits_per_param"]
        out.append(Finding(e.text() + _why(e, r), v.within(e, paper, near(paper)),
                           f"model {r.model}", f"{paper} (model {r.model})"))
    return out


def _paper_conv_mean(models: list[str]) -> float:
    table = reference.paper()["cnn"]["table1"]["models"]
    return float(np.mean([table[m]["conv_bits_per_param"] for m in models]))


def _cnn_mean(ev: Evidence) -> list[Finding]:
    if ev.cnn.empty:
        return []
    e = family(ev.cnn, conv=True)
    models = list(ev.cnn.model)
    target = _paper_conv_mean(models)
    paper = (f"{target:.2f} over the same models ({', '.join(models)}, Table 1); "
             f"{reference.value('cnn.conv_bits_per_param_mean')} over all six")
    return [Finding(f"{e.text()} over {', '.join(models)}",
                    v.within(e, target, near(target)), paper=paper)]


def _cnn_vs_fc(ev: Evidence, fc: pd.DataFrame, label: str) -> list[Finding]:
    if ev.cnn.empty or fc.empty:
        return []
    c, f = family(ev.cnn, conv=True), family(fc)
    return [Finding(f"CNN {c.text()} vs FCDNN {f.text()} ({label}: {_models(fc)})",
                    v.greater(c, f))]


# --- RNN capacity -------------------------------------------------------------------------

def _rnn_bpp(ev: Evidence) -> list[Finding]:
    if ev.rnn.empty:
        return []
    paper_units = reference.value("rnn.model")["units"]
    big = ev.rnn.loc[ev.rnn.params.idxmax()]
    e = bits_per_param(big)
    same = int(big.units) == paper_units
    caveat = "" if same else (f"; caveat: size differs, ours has {int(big.units)} units, "
                              f"the paper's {paper_units}")
    paper = reference.value("rnn.bits_per_param")
    return [Finding(f"{e.text()}{_why(e, big)} ({big.model}){caveat}",
                    v.within(e, paper, near(paper)))]


def _rnn_size(ev: Evidence) -> list[Finding]:
    """Largest LSTM's bits per parameter over the smallest's, ordered by size (not by
    value, which would make the ratio >= 1 by construction), against the equivalence
    margin: a size effect measured beyond it says "differs"."""
    if len(ev.rnn) < 2:
        return []
    small = ev.rnn.loc[ev.rnn.params.idxmin()]
    big = ev.rnn.loc[ev.rnn.params.idxmax()]
    e = ratio(bits_per_param(big), bits_per_param(small))
    return [Finding(f"largest / smallest LSTM's bits per parameter {e.text()} "
                    f"({big.model} / {small.model})", v.within(e, 1.0, near(1.0)))]


# --- All families -------------------------------------------------------------------------

def _order(ev: Evidence) -> list[Finding]:
    fams = [(n, family(df, conv=n == "CNN")) for n, df in
            (("FCDNN", ev.fc), ("CNN", ev.cnn), ("LSTM", ev.rnn)) if not df.empty]
    if len(fams) < 2:
        return []
    ours = "; ".join(f"{n} {e.text()}" for n, e in fams) + " (family means, in the " \
        "paper's order)"
    if not ev.tf.empty:  # beyond the paper: where transformers fall, on the LSTM's data
        ours += f"; transformer classifier {family(ev.tf).text()} (not part of the claim)"
    return [Finding(ours, v.ordered([e for _, e in fams]))]


# --- Quantization -------------------------------------------------------------------------

FAMILY_NAMES = {"fc": "FCDNN", "cnn": "CNN", "rnn": "LSTM"}
FULL, HALF_C, HALF_N = "N_at_max x 1", "C/2", "N_at_max/2"


def seed_bits(g: pd.DataFrame) -> Estimate:
    """Fewest lossless bits over the seeds of one setting: mean and standard error, so that
    a single seed's loss shows instead of hiding in the seeds' mean accuracy. A seed lossy
    even at the widest width counts as one bit more and makes the value a lower bound."""
    lossy = g.fewest_lossless_bits.isna()
    vals = g.fewest_lossless_bits.fillna(g.widest + 1).astype(float)
    e = Estimate.of(vals, lower_bound=bool(lossy.any()))
    return replace(e, caveat=f"lossy even at {int(g.widest.max())} bits, the widest "
                             f"measured" if lossy.any() else "")


def _seed_text(e: Estimate, g: pd.DataFrame) -> str:
    per = ", ".join(">" + str(int(w)) if b != b else str(int(b))
                    for b, w in zip(g.fewest_lossless_bits, g.widest, strict=True))
    return f"{e.text(what='seeds')} bits (per seed: {per})"


def worst_model(t: pd.DataFrame) -> tuple[str, Estimate, pd.DataFrame]:
    """The model of ``t`` that needs the most bits (by its seeds' mean), and its estimate."""
    best = None
    for model, g in t.groupby("model", sort=False):
        e = seed_bits(g)
        if best is None or e.mean > best[1].mean:
            best = (model, e, g)
    return best


def _quant_full(ev: Evidence) -> list[Finding]:
    t = ev.lossless
    if t.empty:
        return []
    ref = reference.value("quantization.lossless_bits_full_capacity")
    out = []
    for fam, g in t[t.definition == FULL].groupby("family", sort=False):
        model, e, mine = worst_model(g)
        out.append(Finding(f"{_seed_text(e, mine)}, {model}, the model of {_models_of(g)} "
                           f"that needed the most", v.bits_near(e, ref[fam], BIT_SLACK),
                           FAMILY_NAMES[fam], f"{ref[fam]} bits"))
    return out


def _models_of(t: pd.DataFrame) -> str:
    return ", ".join(dict.fromkeys(t.model))


def _quant_half(ev: Evidence) -> list[Finding]:
    t = ev.lossless
    fc = t[(t.family == "fc") & (t.definition == HALF_C)] if len(t) else t
    if fc.empty:
        return []
    model, e, mine = worst_model(fc)
    ours_half = t[(t.family == "fc") & (t.definition == HALF_N)]
    extra = ""
    if len(ours_half):
        m2, e2, _ = worst_model(ours_half)
        extra = f"; at our N_at_max/2: {e2.text(what='seeds')} bits ({m2})"
    ref = reference.value("quantization.half_capacity_fc")
    paper = (f"{ref['lossless_bits']} bits ({ref['depth']}x{ref['width']} FCDNN, C about "
             f"{ref['capacity_bits']:,} bits, N = {ref['n_samples']:,})")
    return [Finding(f"{_seed_text(e, mine)} at N = C/2 ({model}, the most of "
                    f"{_models_of(fc)}){extra}",
                    v.bits_at_most_seeds(e, ref["lossless_bits"], BIT_SLACK), paper=paper)]


def _quant_fewer_samples(ev: Evidence) -> list[Finding]:
    t = ev.lossless
    if t.empty:
        return []
    parts, outcomes = [], []
    for model, g in t.groupby("model", sort=False):
        pts = sorted(((float(x), seed_bits(h)) for x, h in g.groupby("data_per_param")),
                     key=lambda p: p[0])
        if len(pts) < 2:
            continue
        outcomes.append(v.rises_between(pts[0][1], pts[-1][1]))
        parts.append(f"{model}: " + ", ".join(
            f"{e.mean:.2g}{'+' if e.lower_bound else ''} at N/P {x:.2g}" for x, e in pts))
    if not outcomes:
        return []
    k = sum(o.outcome == v.AGREES for o in outcomes)
    return [Finding(f"bits (seeds' mean) rise from the smallest to the largest N/P beyond 2 "
                    f"s.e. in {k} of {len(outcomes)} models (" + "; ".join(parts) + ")",
                    _all(outcomes))]


FILL_LEAST_SLOPE = 0.5
FILL_BAND = 0.25


def _quant_fill_trend(ev: Evidence) -> list[Finding]:
    nets = ev.fill[ev.fill.recipe == "ours"] if len(ev.fill) else ev.fill
    if nets.empty:
        return []
    s = v.slope(nets.bits_per_param_float, nets.ranked_bits)
    return [Finding(f"fewest lossless bits rise by {s.text(what='nets')} per bit stored per "
                    f"parameter "
                    f"(least squares over the FCDNNs of the fill sweep, our recipe, "
                    f"{nets.bits_per_param_float.min():.2f} to "
                    f"{nets.bits_per_param_float.max():.2f} bits per parameter)",
                    v.trend_up(s, FILL_LEAST_SLOPE))]


def _quant_operating_point(ev: Evidence) -> list[Finding]:
    if ev.fill.empty:
        return []
    bpp = reference.value("fcdnn.bits_per_param_mean")
    bits = reference.value("quantization.lossless_bits_full_capacity")["fc"]
    near = ev.fill[(ev.fill.bits_per_param_float - bpp).abs() <= FILL_BAND]
    k = int((near.ranked_bits <= bits).sum())
    needed = ", ".join(f"{int(b)}" for b in sorted(near.ranked_bits)) or "none"
    return [Finding(f"{k} of {len(near)} fill-sweep FCDNNs storing {bpp} \u00b1 {FILL_BAND} bits "
                    f"per parameter are lossless at {bits} bits (bits they needed: {needed})",
                    v.all_hold(k, len(near)))]


# --- Real tasks ---------------------------------------------------------------------------

#: a net is judged only when its float version is of useful quality (test set)
MIN_TEST_ACCURACY = 0.9
MAX_PERPLEXITY_OVER_UNIGRAM = 0.6
REAL_TOLERANCE = 0.01  # "no loss": within 1 % (relative) of float
#: "the test set is more robust than the training set" needs nets that memorized
#: something: float training performance at least this much (relative) better than test
MIN_TRAIN_TEST_GAP = 0.01
REAL_PRECONDITION = (f"float test accuracy >= {MIN_TEST_ACCURACY} (classifiers), float test "
                     f"perplexity <= {MAX_PERPLEXITY_OVER_UNIGRAM} x the unigram perplexity of "
                     f"the same text (LMs)")
GAP_PRECONDITION = (REAL_PRECONDITION + f"; and float training performance at least "
                    f"{MIN_TRAIN_TEST_GAP:.0%} (relative) better than test, so that the two "
                    f"splits can differ")
REAL_FAMILY = {"mnist": "MNIST FCDNNs", "cifar": "CIFAR CNNs", "resnet": "ResNets",
               "lm": "word-level LMs", "tlm": "word-level transformer LMs"}
#: what the paper's nets of a task trained on, when ours cannot have (no ImageNet here)
NEVER_REAL = {"resnet": "the paper's ResNets are ImageNet's; ours train on CIFAR-10 or what "
                        "stands in for it"}


def _metric(task: str) -> str:
    return "perplexity" if task in LM_TASKS else "accuracy"


def useful(real: pd.DataFrame) -> pd.DataFrame:
    """Per net: its float test quality (mean over seeds), whether it meets the
    precondition, its training-against-test gap, and whether it trained on a stand-in."""
    out = []
    floats = real[real.bits.isna()]
    for (task, model), g in floats.groupby(["task", "model"], sort=False):
        m = _metric(task)
        split = g.groupby("split")[m].mean()
        r = g.iloc[0]
        test, train = split.get("test", float("nan")), split.get("train", float("nan"))
        if task in LM_TASKS:
            base = r.get("unigram_perplexity", float("nan"))
            ok = base == base and test <= MAX_PERPLEXITY_OVER_UNIGRAM * base
            quality = f"perplexity {test:.0f} ({test / base:.2f} x unigram)" \
                if base == base else f"perplexity {test:.0f} (no unigram baseline)"
            gap = test / train - 1
        else:
            ok = test >= MIN_TEST_ACCURACY
            quality = f"accuracy {test:.3f}"
            gap = train / test - 1
        out.append({"task": task, "model": model, "params": int(r.params), "useful": bool(ok),
                    "quality": quality, "gap": float(gap), "data": r.get("data", ""),
                    "stand_in": on_stand_in(r.get("data", ""))})
    return pd.DataFrame(out, columns=["task", "model", "params", "useful", "quality", "gap",
                                      "data", "stand_in"])


def relative_loss(real: pd.DataFrame) -> pd.DataFrame:
    """Per net, seed, split and retrained width: the loss against that seed's float net,
    relative (accuracy lost, or perplexity gained, over float; negative: better)."""
    if "seed" not in real:
        real = real.assign(seed=0)
    keys = ["task", "model", "seed", "split"]
    out = []
    for (task, model, seed, split), g in real.groupby(keys, sort=False):
        m = _metric(task)
        f = g[g.bits.isna()][m]
        if f.empty:
            continue
        f = float(f.iloc[0])
        q = g[g.bits.notna() & g.retrained.astype(bool)]
        for r in q.itertuples():
            val = getattr(r, m)
            loss = (f - val) / f if m == "accuracy" else (val - f) / f
            out.append({"task": task, "model": model, "seed": seed, "split": split,
                        "bits": int(r.bits), "params": int(r.params), "loss": loss})
    return pd.DataFrame(out, columns=["task", "model", "seed", "split", "bits", "params",
                                      "loss"])


def _loss_at(loss: pd.DataFrame, task: str, model: str, split: str, bits: int) -> Estimate:
    g = loss[(loss.task == task) & (loss.model == model) & (loss.split == split)
             & (loss.bits == bits)]
    return Estimate.of(g.loss)


def _pct(e: Estimate) -> str:
    if e.missing:
        return "not measured"
    spread = f" \u00b1 {100 * v.Z * e.se:.1f}" if e.n > 1 and e.se == e.se else ""
    return f"{100 * e.mean:+.1f}{spread} %"


def _judged(ev: Evidence, need_gap: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The nets that meet the precondition, and every net's quality with ``judged``."""
    q = useful(ev.real)
    ok = q.useful & ((q.gap >= MIN_TRAIN_TEST_GAP) if need_gap else True)
    return q[ok], q.assign(judged=ok)


def _left_out(q: pd.DataFrame, task: str, need_gap: bool = False) -> str:
    """A note naming ``task``'s nets that were not judged, and why."""
    left = q[(q.task == task) & ~q.judged]
    if left.empty:
        return ""
    return "; not judged (below the precondition): " + ", ".join(
        f"{r.model} ({r.quality}" + (f", train/test gap {100 * r.gap:+.1f} %" if need_gap
                                     else "") + ")" for r in left.itertuples())


def _stand_in_verdict(task: str, q: pd.DataFrame) -> str:
    """Why a family's verdict cannot speak for the paper's dataset ('' when it can)."""
    if task in NEVER_REAL:
        return NEVER_REAL[task]
    mine = q[q.task == task]
    if len(mine) and mine.stand_in.any():
        return "trained on a stand-in for missing data (see the data statement)"
    return ""


def _family_finding(task: str, q: pd.DataFrame, ours: str, verdict: Verdict,
                    note: str = "") -> Finding:
    why = _stand_in_verdict(task, q)
    if why:
        return Finding(f"on stand-in data ({why}): {ours}{note}",
                       v.inconclusive("stand-in data"), REAL_FAMILY.get(task, task))
    return Finding(ours + note, verdict, REAL_FAMILY.get(task, task))


def _narrowest(real: pd.DataFrame) -> int:
    return int(real.bits.dropna().min())


def _real_test_vs_train(ev: Evidence) -> list[Finding]:
    if ev.real.empty:
        return []
    keep, q = _judged(ev, need_gap=True)
    loss = relative_loss(ev.real)
    b = _narrowest(ev.real)
    out = []
    for task in dict.fromkeys(q.task):
        judged = keep[keep.task == task]
        parts, outcomes = [], []
        for r in judged.itertuples():
            tr = loss[(loss.task == task) & (loss.model == r.model) & (loss.bits == b)]
            wide = tr.pivot_table(index="seed", columns="split", values="loss")
            if not {"train", "test"} <= set(wide.columns):
                continue
            d = Estimate.of(wide["train"] - wide["test"])
            outcomes.append(v.positive(d))
            parts.append(f"{r.model} {_pct(d)}")
        if not outcomes:
            out.append(_family_finding(task, q, "no net meets the precondition",
                                       v.inconclusive("no net meets the precondition"),
                                       _left_out(q, task, need_gap=True)))
            continue
        ours = (f"training-set loss minus test-set loss at {b} bits (relative to float; "
                f"positive: the test set is more robust): " + ", ".join(parts))
        out.append(_family_finding(task, q, ours, _all(outcomes),
                                   _left_out(q, task, need_gap=True)))
    return out


def _real_larger(ev: Evidence) -> list[Finding]:
    if ev.real.empty:
        return []
    keep, q = _judged(ev)
    loss = relative_loss(ev.real)
    b = _narrowest(ev.real)
    out = []
    for task, g in keep.groupby("task", sort=False):
        if len(g) < 2:
            continue
        g = g.sort_values("params")
        small, large = g.iloc[0], g.iloc[-1]
        es = _loss_at(loss, task, small.model, "test", b)
        el = _loss_at(loss, task, large.model, "test", b)
        ours = (f"test loss at {b} bits, relative to float: {small.model} {_pct(es)}, "
                f"{large.model} {_pct(el)} (smallest and largest)")
        out.append(_family_finding(task, q, ours, v.greater(es, el), _left_out(q, task)))
    return out


def _real_mnist8(ev: Evidence) -> list[Finding]:
    if ev.real.empty:
        return []
    keep, q = _judged(ev)
    width = reference.value("real_tasks.mnist_fcdnn_4bit_matches_float_from_width")
    name = f"2x{width}"
    loss = relative_loss(ev.real)
    e = _loss_at(loss, "mnist", name, "test", 4)
    if e.missing:
        return []
    if not ((keep.task == "mnist") & (keep.model == name)).any():
        return [Finding(f"{name} not judged{_left_out(q, 'mnist')}",
                        v.inconclusive("precondition not met"))]
    f = _family_finding("mnist", q, f"test accuracy lost at 4 bits, relative to float: "
                        f"{_pct(e)} ({name})", v.at_most(e, REAL_TOLERANCE))
    return [replace(f, subject="")]


def _real_6bits(ev: Evidence) -> list[Finding]:
    if ev.real.empty:
        return []
    keep, q = _judged(ev)
    loss = relative_loss(ev.real)
    out = []
    for task in ("resnet", "lm", "tlm"):
        nets = keep[keep.task == task]
        if q[q.task == task].empty:
            continue
        ests = [(r.model, _loss_at(loss, task, r.model, "test", 6)) for r in nets.itertuples()]
        ests = [(m, e) for m, e in ests if not e.missing]
        if not ests:
            out.append(_family_finding(task, q, "no net meets the precondition",
                                       v.inconclusive("no net meets the precondition"),
                                       _left_out(q, task)))
            continue
        model, worst = max(ests, key=lambda me: me[1].mean)
        ours = ("test loss at 6 bits, relative to float: " + ", ".join(
            f"{m} {_pct(e)}" for m, e in ests) + f"; the worst, {model}, judged")
        f = _family_finding(task, q, ours, v.at_most(worst, REAL_TOLERANCE),
                            _left_out(q, task))
        out.append(replace(f, paper="6 bits"))
    return out


# --- claims located by N, and the paper's setup checked -----------------------------------

def _n_interval(row: pd.Series) -> tuple[int, int]:
    """Where a peak of I lies: between the trained N on either side of the peak's N (the
    grid's resolution is the measurement's uncertainty)."""
    swept = sorted(int(n) for n in row.get("n_swept") or [row.n_at_max])
    i = swept.index(int(row.n_at_max))
    return swept[max(0, i - 1)], swept[min(len(swept) - 1, i + 1)]


def _peak_in(row: pd.Series, lo: float, hi: float) -> Verdict:
    """Does the peak's N lie in [lo, hi]? Agrees when everything between its neighbours
    does, differs when nothing does; an unbracketed or unconverged peak cannot say."""
    lower, why = convergence(row)
    a, b = _n_interval(row)
    if lower:
        return v.inconclusive(why or "lower bound")
    if lo <= a and b <= hi:
        return v.agrees()
    if b < lo or a > hi:
        return v.differs()
    return v.inconclusive("the N grid straddles the range")


def _fc_fig2a(ev: Evidence) -> list[Finding]:
    m = reference.value("fcdnn.fig2a_model")
    name = f"{m['depth']}x{m['width']}"
    row = ev.fc[ev.fc.model == name] if len(ev.fc) else ev.fc
    if row.empty:
        return []
    r = row.iloc[0]
    lo, hi = reference.value("fcdnn.fig2a_n_at_max_range")
    a, b = _n_interval(r)
    return [Finding(f"peak at N = {int(r.n_at_max):,} (between the trained {a:,} and {b:,})",
                    _peak_in(r, lo, hi))]


def _paper_lstm(ev: Evidence) -> pd.Series | None:
    units = reference.value("rnn.model")["units"]
    if ev.rnn.empty or "units" not in ev.rnn:
        return None
    row = ev.rnn[ev.rnn.units == units]
    return None if row.empty else row.iloc[0]


def _rnn_n_at_max(ev: Evidence) -> list[Finding]:
    r = _paper_lstm(ev)
    if r is None:
        return []
    paper = reference.value("rnn.n_at_max")
    a, b = _n_interval(r)
    return [Finding(f"peak at N = {int(r.n_at_max):,} (between the trained {a:,} and {b:,}; "
                    f"{r.model})", _peak_in(r, paper - near(paper), paper + near(paper)))]


def _rnn_p_at_max(ev: Evidence) -> list[Finding]:
    """The paper's accuracy at its LSTM's peak, compared as an error rate (1 - p), the
    quantity the rule's 10 % can apply to."""
    r = _paper_lstm(ev)
    if r is None:
        return []
    paper = 1 - reference.value("rnn.p_at_max")
    n = int(r.get("replicates", 0) or 0)
    p = float(r.get("p_replicates", float("nan")))
    lower, why = convergence(r)
    e = Estimate(1 - p, _se(r.get("p_replicates_sd", float("nan")), n), max(n, 1), lower, why)
    return [Finding(f"p = {p:.4f} at the peak (mean of {n} replicates, {r.model}); error rate "
                    f"{e.text('.4f', 'replicates')} against the paper's {paper:.4f}",
                    v.within(e, paper, near(paper)))]


def _quant_loss6(ev: Evidence) -> list[Finding]:
    """Per family at full capacity: the accuracy each seed lost at 6 bits (progressive,
    retrained) against its float self; the model of the family that lost the most."""
    q = ev.quant
    if q.empty:
        return []
    ref = reference.value("quantization.loss_at_6_bits_full_capacity")
    full = q[(q.definition == FULL) & q.main.astype(bool)]
    out = []
    for fam, g in full.groupby("family", sort=False):
        worst = None
        for model, h in g.groupby("model", sort=False):
            f = h[h.bits.isna()].set_index("seed").accuracy
            six = h[h.bits == 6].set_index("seed").accuracy
            lost = (f - six).dropna()
            if lost.empty:
                continue
            e = Estimate.of(lost)
            if worst is None or e.mean > worst[1].mean:
                worst = (model, e)
        if worst is None:
            continue
        paper = float(ref[fam])
        tol = max(near(paper), LOSSLESS_POINTS)
        out.append(Finding(f"{100 * worst[1].mean:.1f} \u00b1 {100 * v.Z * worst[1].se:.1f} points "
                           f"({worst[0]}, {worst[1].n} seeds)" if worst[1].n > 1 else
                           f"{100 * worst[1].mean:.1f} points ({worst[0]}, one seed)",
                           v.within(worst[1], paper, tol), FAMILY_NAMES[fam],
                           f"{100 * paper:.0f} points"))
    return out


def _real_cifar_params(ev: Evidence) -> list[Finding]:
    """The paper's CIFAR CNN sizes against ours, counted from our model definitions (a
    check of the architecture, measured without training)."""
    out = []
    for size, paper in reference.value("real_tasks.cifar10_params").items():
        ours = count_parameters(CIFARCNN(size))
        out.append(Finding(f"{ours:,} parameters", v.agrees() if ours == paper else
                           v.differs(), f"{size} CNN", f"{paper:,}"))
    return out


# --- Loss surfaces -------------------------------------------------------------------------

def surface_rise(surf: pd.DataFrame, within: float) -> pd.DataFrame:
    """Per net, width and split: how far the mean loss over the directions rises above its
    value at alpha = 0 within |alpha| <= ``within`` (the largest rise there), with the
    standard error of that rise (the directions' spread at that alpha)."""
    keys = ["task", "model", "width", "split"]
    near = surf[surf.alpha.abs() <= within + 1e-9]
    out = []
    for key, g in near.groupby(keys, sort=False):
        zero = g[g.alpha == 0]
        if zero.empty:
            continue
        top = g.loc[(g.loss - float(zero.loss.iloc[0])).idxmax()]
        n = int(g.directions.iloc[0]) if "directions" in g else 1
        se = float(top.loss_std) / math.sqrt(n) if n > 1 else float("nan")
        out.append({**dict(zip(keys, key, strict=True)), "n": n,
                    "rise": float(top.loss - zero.loss.iloc[0]), "se": se,
                    "data": g.data.iloc[0] if "data" in g else ""})
    return pd.DataFrame(out)


#: the rise compared is the largest within this |alpha| of the trained weights
SURFACE_WITHIN = 0.5
SURFACE_TASKS = {"cifar": "CIFAR CNNs", "lm": "word-level LMs"}


def _difference(a: pd.Series, b: pd.Series) -> Estimate:
    n = int(min(a.n, b.n))
    return Estimate(a.rise - b.rise, math.sqrt(a.se ** 2 + b.se ** 2), n)


def _surface_findings(ev: Evidence, pairs: Callable[[pd.DataFrame], list], what: str
                      ) -> list[Finding]:
    if ev.surfaces.empty:
        return []
    rise = surface_rise(ev.surfaces, SURFACE_WITHIN)
    out = []
    for task, g in rise.groupby("task", sort=False):
        found = pairs(g)
        if not found:
            continue
        ests = [(label, e) for label, e in found]
        ours = (f"{what} within |alpha| <= {SURFACE_WITHIN:g}: " + ", ".join(
            f"{label} {e.cell('.3f')}" for label, e in ests)
            + f" (loss, ± 2 s.e. over {ests[0][1].n} directions)")
        subject = SURFACE_TASKS.get(task, task)
        if on_stand_in(g.data.iloc[0]):
            out.append(Finding(f"on stand-in data: {ours}", v.inconclusive("stand-in data"),
                               subject))
        else:
            out.append(Finding(ours, _all([v.positive(e) for _, e in ests]), subject))
    return out


def _surf_test_less(ev: Evidence) -> list[Finding]:
    def pairs(g: pd.DataFrame) -> list:
        out = []
        for (model, width), h in g.groupby(["model", "width"], sort=False):
            s = h.set_index("split")
            if {"train", "test"} <= set(s.index):
                out.append((f"{model} {width}", _difference(s.loc["train"], s.loc["test"])))
        return out
    return _surface_findings(ev, pairs, "training-set rise minus test-set rise")


def _surf_quantized_wider(ev: Evidence) -> list[Finding]:
    def pairs(g: pd.DataFrame) -> list:
        out = []
        widths = [w for w in g.width.unique() if w != "float"]
        coarse = min(widths, key=lambda w: int(str(w).split()[0])) if widths else None
        for (model, split), h in g.groupby(["model", "split"], sort=False):
            s = h.set_index("width")
            if coarse and {"float", coarse} <= set(s.index):
                out.append((f"{model} {split}", _difference(s.loc["float"], s.loc[coarse])))
        return out
    return _surface_findings(ev, pairs, "float rise minus the narrowest width's rise")


# --- Transformers (beyond the paper) ------------------------------------------------------

MORRIS_SIZE = "Morris's models have 100k to 20M parameters"


def _largest(df: pd.DataFrame) -> pd.Series:
    return df.loc[df.params.idxmax()]


def _tf_lm_bpp(ev: Evidence) -> list[Finding]:
    fl = ev.lm[ev.lm.precision == "float32"] if len(ev.lm) else ev.lm
    if fl.empty:
        return []
    big = _largest(fl)
    e = bits_per_param(big)
    paper = reference.value("transformers.lm_bits_per_param")
    return [Finding(f"{e.text()}{_why(e, big)} ({big.model}, {int(big.params):,} parameters, "
                    f"V = {int(big.vocab)}, S = {int(big.seq_len)}; caveat: {MORRIS_SIZE})",
                    v.within(e, paper, near(paper)))]


def _tf_bf16(ev: Evidence) -> list[Finding]:
    if ev.lm.empty or not (ev.lm.precision == "bfloat16").any():
        return []
    bf = ev.lm[ev.lm.precision == "bfloat16"]
    out = []
    for r in bf.itertuples():
        fl = ev.lm[(ev.lm.precision == "float32") & (ev.lm.model == r.model)]
        if fl.empty:
            continue
        a, b = bits_per_param(fl.iloc[0]), bits_per_param(pd.Series(r._asdict()))
        d = Estimate(a.mean - b.mean, math.sqrt(a.se ** 2 + b.se ** 2), min(a.n, b.n),
                     a.lower_bound or b.lower_bound, a.caveat or b.caveat)
        ref = reference.value("transformers.precision_bits_per_param")
        paper = ref["float32"] - ref["bfloat16"]
        out.append(Finding(f"float32 minus bfloat16: {d.text()} bits per parameter "
                           f"({r.model})", v.within(d, paper, near(paper))))
    return out[-1:]


def _lm_retained(ev: Evidence, bits: int, route: str, way: str = "float tables"
                 ) -> tuple[str, Estimate] | None:
    """Per seed, the share of its float memorized bits an LM keeps at ``bits`` (the
    largest model at full capacity)."""
    q = ev.lm_quant
    if q.empty:
        return None
    full = q[q.point == "full"]
    if full.empty:
        return None
    model = full.loc[full.params.idxmax(), "model"]
    g = full[full.model == model]
    fl = g[g.bits.isna()].set_index("seed").memorized_bits
    at = g[(g.bits == bits) & (g.route == route) & (g.way == way)].set_index("seed")
    if at.empty:
        return None
    kept = (at.memorized_bits / fl.reindex(at.index)).dropna()
    # name the point, so a reader recomputing from the export picks the same rows
    where = f"{model} at full capacity (N = {int(g.n_sequences.iloc[0]):,}, {way})"
    return where, Estimate.of(kept)


def _lm_lost(ev: Evidence, bits: int) -> tuple[str, Estimate, Estimate] | None:
    """The largest LM's retained fraction after post-training quantization at ``bits``,
    and the fraction it lost (same spread), or None when not measured."""
    got = _lm_retained(ev, bits, "direct")
    if got is None:
        return None
    model, e = got
    return model, e, Estimate(1 - e.mean, e.se, e.n)


def _tf_int8(ev: Evidence) -> list[Finding]:
    got = _lm_lost(ev, 8)
    if got is None:
        return []
    model, e, lost = got
    return [Finding(f"{model} at 8 bits, post-training, keeps {e.text('.3f')} of its float "
                    f"memorized bits", v.at_most(lost, REAL_TOLERANCE))]


def _tf_int4(ev: Evidence) -> list[Finding]:
    got = _lm_lost(ev, 4)
    if got is None:
        return []
    model, e, lost = got
    half = Estimate(reference.value("transformers.int4_loses_half"), 0.0, e.n)
    return [Finding(f"{model} at 4 bits, post-training, keeps {e.text('.3f')} of its float "
                    f"memorized bits (loses {lost.cell('.3f')})", v.greater(lost, half))]


def _tf_retrain(ev: Evidence) -> list[Finding]:
    direct, prog = _lm_retained(ev, 4, "direct"), _lm_retained(ev, 4, "progressive")
    if direct is None or prog is None:
        return []
    model, a = prog
    b = direct[1]
    return [Finding(f"{model} at 4 bits keeps {a.text('.3f')} of its float bits with "
                    f"retraining, {b.text('.3f')} without", v.greater(a, b))]


def _tf_linear(ev: Evidence) -> list[Finding]:
    if len(ev.tf) < 2:
        return []
    small, big = ev.tf.loc[ev.tf.params.idxmin()], ev.tf.loc[ev.tf.params.idxmax()]
    e = ratio(bits_per_param(big), bits_per_param(small))
    return [Finding(f"largest / smallest classifier's bits per parameter {e.text()} "
                    f"({big.model} / {small.model})", v.within(e, 1.0, near(1.0)))]


def _tf_vs_lstm(ev: Evidence) -> list[Finding]:
    if ev.tf.empty or ev.rnn.empty:
        return []
    t, r = _largest(ev.tf), _largest(ev.rnn)
    e = ratio(bits_per_param(t), bits_per_param(r))
    return [Finding(f"transformer / LSTM bits per parameter {e.text()} ({t.model}, "
                    f"{int(t.params):,} parameters, against {r.model}, {int(r.params):,}; "
                    f"same data, Eq. (1))", v.within(e, 1.0, near(1.0)))]


CLAIMS: list[Claim] = [
    Claim("mi.eq1", "Mutual information",
          "Eq. (1) gives the bits a trained classifier of accuracy p holds about N random "
          "labels", "mutual_information.formula",
          "plug-in estimate of N I(Y; Y_hat) from each trained net's own answers on its "
          "training set, FCDNNs from below to well past capacity",
          f"|plug-in - Eq. (1)| <= {MI_TOLERANCE} bits per sample for every net", _mi),
    Claim("fcdnn.mean", "FCDNN capacity", "bits per parameter, mean over architectures",
          "fcdnn.bits_per_param_mean",
          "replicated capacity (mean of fresh trainings at the search's bracketed peak) over "
          "parameters, averaged over our architectures",
          "mean ± 2 s.e. inside 2.3 ± 10 % (agrees) or wholly outside (differs)", _fc_mean),
    Claim("fcdnn.range", "FCDNN capacity", "every architecture stores 1.7 to 2.5 bits per "
          "parameter", "fcdnn.bits_per_param_range", "replicated bits per parameter of "
          "each architecture", "each inside 1.7 to 2.5, as the paper states it",
          _fc_range),
    Claim("fcdnn.width", "FCDNN capacity", "doubling the width multiplies what is memorized "
          "by", "fcdnn.width_doubling_n_factor", "ratio of replicated capacities of "
          "architectures of equal depth whose widths differ by 2x", "within 4 ± 10 %", _fc_width),
    Claim("fcdnn.depth", "FCDNN capacity", "depth d memorizes d times what depth 1 does",
          "fcdnn.depth_n_factor", "replicated capacity of depth d over d times that of "
          "depth 1, same width", "within 1 ± 10 %", _fc_depth),
    Claim("fcdnn.fig2a", "FCDNN capacity", "a 3x64 FCDNN's information peaks at N between "
          "30,000 and 40,000", "fcdnn.fig2a_n_at_max_range", "the N of the search's peak of "
          "I, located between the trained N on either side of it",
          "that interval inside the paper's range (agrees) or outside it (differs)",
          _fc_fig2a, unmeasured="the paper's 3x64 FCDNN is not among this profile's "
          "architectures (the paper profile trains it, hours on a GPU)"),
    Claim("cnn.model", "CNN capacity", "conv bits per parameter (FC share at 2.3)",
          "cnn.table1", "replicated capacity minus 2.3 bits per FC parameter, over conv "
          "parameters", "within the paper's value of the same model ± 10 %",
          _cnn_models, subjects=lambda: {
              f"model {m}": f"{t['conv_bits_per_param']} (model {m})"
              for m, t in reference.paper()["cnn"]["table1"]["models"].items()},
          unmeasured="not among this profile's CNNs (the paper profile measures all six "
          "Table-1 models, hours on a GPU)"),
    Claim("cnn.mean", "CNN capacity", "conv bits per parameter, mean over models",
          "cnn.conv_bits_per_param_mean", "mean of the models' replicated conv shares",
          "within the paper's mean over the same models ± 10 %", _cnn_mean),
    Claim("cnn.vs_fc", "CNN capacity", "a conv parameter stores more than an FC parameter",
          "families.conv_above_fc", "conv share of our CNNs against our FCDNNs' bits "
          "per parameter, each trained with its own chapter's recipe",
          "CNN - FCDNN > 2 s.e. (agrees) or < -2 s.e. (differs)",
          lambda ev: _cnn_vs_fc(ev, ev.fc, "own recipes")),
    Claim("cnn.vs_fc.equal", "CNN capacity", "a conv parameter stores more than an FC "
          "parameter, at equal effort", "families.conv_above_fc",
          "conv share of our CNNs against FCDNNs trained with the CNNs' optimizer, learning "
          "rate, batches and epochs", "CNN - FCDNN > 2 s.e. (agrees) or < -2 s.e. (differs)",
          lambda ev: _cnn_vs_fc(ev, ev.fc_cnn_recipe, "CNN recipe")),
    Claim("rnn.bpp", "RNN capacity", "bits per parameter of the LSTM", "rnn.bits_per_param",
          "replicated capacity over parameters of our largest LSTM", "within 3.7 ± 10 %",
          _rnn_bpp),
    Claim("rnn.n_at_max", "RNN capacity", "the 32-unit LSTM's information peaks at "
          "N = 32K", "rnn.n_at_max", "the N of the search's peak of I for our 32-unit LSTM, "
          "between the trained N on either side of it", "that interval inside 32,768 ± 10 % "
          "(agrees) or outside it (differs)", _rnn_n_at_max,
          unmeasured="the paper's 32-unit LSTM is not among this profile's sizes (the paper "
          "profile trains it)"),
    Claim("rnn.p_at_max", "RNN capacity", "the 32-unit LSTM's accuracy at its peak",
          "rnn.p_at_max", "the replicates' error rate 1 - p at the peak of our 32-unit LSTM",
          "within the paper's error rate 0.0048 ± 10 %", _rnn_p_at_max,
          unmeasured="the paper's 32-unit LSTM is not among this profile's sizes (the paper "
          "profile trains it)"),
    Claim("rnn.size", "RNN capacity", "bits per parameter does not depend on the LSTM's "
          "size", "rnn.size_independent", "replicated bits per parameter of our largest "
          "LSTM (by parameters) over that of our smallest", "ratio's interval inside the "
          "equivalence margin 1 ± 10 % (agrees) or wholly outside it (differs)", _rnn_size),
    Claim("families.order", "All families", "bits per parameter grows FC < CNN < LSTM",
          "families.order", "family means of replicated bits per parameter (conv share for "
          "CNNs)", "each step up > 2 s.e. (agrees); a step down by > 2 s.e. (differs)",
          _order),
    Claim("quant.full", "Quantization", "{subject} at full capacity keeps its accuracy down to",
          "quantization.lossless_bits_full_capacity",
          "per seed, the fewest bits at which its accuracy stays within the chapter's "
          "tolerance of float at that width and every wider one (progressive quantization "
          "with retraining, N = N_at_max); the model of the family that needed the most",
          "the seeds' mean ± 2 s.e. within the paper's width ± 0.5 bit (agrees) or wholly "
          "outside it (differs)", _quant_full,
          subjects=lambda: {FAMILY_NAMES[f]: f"{b} bits" for f, b in reference.value(
              "quantization.lossless_bits_full_capacity").items()},
          unmeasured={"CNN": "this profile does not quantize CNNs (the quick profile leaves "
                      "them out: their capacity is a lower bound at its budget; the paper "
                      "profile quantizes them on a GPU)"}),
    Claim("quant.loss6", "Quantization", "{subject} at full capacity loses at 6 bits",
          "quantization.loss_at_6_bits_full_capacity", "per seed, float accuracy minus "
          "accuracy at 6 bits (progressive quantization with retraining, N = N_at_max); the "
          "model of the family that lost the most",
          "the seeds' mean ± 2 s.e. within the paper's loss ± 10 % of it (at least ± 0.5 "
          "points, the chapter's lossless tolerance) or wholly outside (differs)",
          _quant_loss6, subjects=lambda: {FAMILY_NAMES[f]: f"{100 * x:.0f} points" for f, x
                                          in reference.value(
              "quantization.loss_at_6_bits_full_capacity").items()},
          unmeasured={"CNN": "this profile does not quantize CNNs (the paper profile does, "
                      "on a GPU)"}),
    Claim("quant.half", "Quantization", "an FCDNN at half capacity keeps every sample at 4 bits",
          "quantization.half_capacity_fc", "as above, FCDNNs at the paper's half capacity, "
          "N = C/2 (C the replicated capacity in bits)", "the seeds' mean ± 2 s.e. of fewest "
          "lossless bits at most 4.5 (agrees) or wholly above it (differs)", _quant_half),
    Claim("quant.fewer_samples", "Quantization", "fewer samples per parameter need fewer bits",
          "quantization.overparameterized_more_robust",
          "per seed, fewest lossless bits of each model at every N it was trained at (a loss "
          "even at the widest width counts as one bit more, never as missing)",
          "per model, more bits at the largest N/P than at the smallest, by more than 2 s.e. "
          "(agrees); fewer or exactly as many (differs)", _quant_fewer_samples),
    Claim("quant.fill", "Bits stored and bits needed", "the more a weight stores, the more "
          "bits it needs",
          "quantization.bits_follow_capacity_per_parameter",
          "fill sweep: FCDNNs trained at N/P from 1 to 3, each net's float I/P against its own "
          "fewest lossless bits", f"slope's interval above 0 (agrees) or below "
          f"{FILL_LEAST_SLOPE} bits per bit per parameter (differs)", _quant_fill_trend),
    Claim("quant.operating_point", "Bits stored and bits needed", "an FCDNN storing 2.3 bits "
          "per parameter "
          "keeps its accuracy at 6 bits", "quantization.fc_operating_point",
          f"fill-sweep FCDNNs (both recipes) whose float I/P lies within {FILL_BAND} of 2.3",
          "every one lossless at 6 bits", _quant_operating_point),
    Claim("real.test_robust", "Real tasks", "the test set of {subject} is more robust to "
          "quantization than the training set", "real_tasks.test_more_robust_than_train",
          "per seed, the relative loss against float on the training set minus that on the "
          "test set, at the narrowest width (progressive quantization with retraining)",
          "per net, that difference's interval above 0 (agrees) or below 0 (differs), every "
          "net; on stand-in data inconclusive", _real_test_vs_train, GAP_PRECONDITION,
          subjects=lambda: {"CIFAR CNNs": None, "word-level LMs": None},
          unmeasured="no nets of this family under this profile"),
    Claim("real.larger_robust", "Real tasks", "larger {subject} are more robust",
          "real_tasks.larger_nets_more_robust", "per seed, the relative test loss at the "
          "narrowest width of the smallest and the largest net of a task",
          "smallest minus largest > 2 s.e. (agrees) or < -2 s.e. (differs); on stand-in data "
          "inconclusive", _real_larger, REAL_PRECONDITION,
          subjects=lambda: {"CIFAR CNNs": None, "ResNets": None, "word-level LMs": None},
          unmeasured="fewer than two sizes of this family meet the precondition under this "
          "profile"),
    Claim("real.mnist8", "Real tasks", "a 2-layer MNIST FCDNN of width 8 at 4 bits matches "
          "float", "real_tasks.mnist_fcdnn_4bit_matches_float_from_width",
          "per seed, the relative test accuracy lost after progressive quantization to 4 "
          "bits with retraining", "the seeds' interval at most 1 % (agrees) or wholly above "
          "it (differs)", _real_mnist8, REAL_PRECONDITION),
    Claim("real.6bits", "Real tasks", "{subject} keep their test performance at 6 bits",
          "real_tasks.resnet_and_wlm_lossless_bits", "per seed, the relative test loss at 6 "
          "bits (progressive quantization with retraining); the worst net of the task",
          "the seeds' interval at most 1 % (agrees) or wholly above it (differs); on "
          "stand-in data inconclusive", _real_6bits, REAL_PRECONDITION,
          subjects=lambda: {"ResNets": "6 bits", "word-level LMs": "6 bits",
                            "word-level transformer LMs": "6 bits (the LSTM LMs' claim, "
                                                          "asked of transformers)"},
          unmeasured={"ResNets": "no ResNets under this profile (the paper's are ImageNet's, "
                      "which no profile here trains on)"}),
    Claim("surf.test_less", "Loss surfaces", "along random directions the test loss of "
          "{subject} rises less than the training loss", "loss_surfaces.test_degrades_less",
          "per net and width, the largest rise of the mean loss over filter-normalized "
          f"random directions within |alpha| <= {SURFACE_WITHIN:g}, training minus test set",
          "every difference's interval above 0 (agrees); one below 0 (differs); on stand-in "
          "data inconclusive", _surf_test_less,
          subjects=lambda: {"CIFAR CNNs": None, "word-level LMs": None},
          unmeasured="no loss surfaces of this family under this profile"),
    Claim("surf.quantized_wider", "Loss surfaces", "the narrowest width's loss surface of "
          "{subject} is wider than the float one's", "loss_surfaces.quantized_basin_wider",
          f"per net and split, the largest rise within |alpha| <= {SURFACE_WITHIN:g} of the "
          "float net minus that of the same net at the narrowest width measured",
          "every difference's interval above 0 (agrees); one below 0 (differs); on stand-in "
          "data inconclusive", _surf_quantized_wider,
          subjects=lambda: {"CIFAR CNNs": None, "word-level LMs": None},
          unmeasured="no loss surfaces of this family under this profile"),
    Claim("tf.lm_bpp", "Transformers", "a transformer LM stores about this many bits per "
          "parameter of uniformly random token sequences", "transformers.lm_bits_per_param",
          "memorized bits (S log2 V minus NLL, per sequence, at least 0) at the bracketed peak "
          "over N, mean over seeds, over the parameters of our largest float32 LM",
          "within 3.6 ± 10 %; a lower bound (unbracketed, not converged) is inconclusive",
          _tf_lm_bpp),
    Claim("tf.bf16", "Transformers", "trained in bfloat16, an LM stores less per parameter "
          "than in float32", "transformers.precision_bits_per_param", "the same LMs trained "
          "with every weight rounded to bfloat16 after each update, against float32",
          "the difference within 0.32 ± 10 %", _tf_bf16),
    Claim("tf.int8", "Transformers", "post-training int8 keeps what an LM memorized",
          "transformers.int8_keeps", "per seed, memorized bits at 8 bits quantized directly "
          "(tables in float) over float, the largest LM at its capacity's N",
          "the share lost at most 1 % (agrees) or wholly more (differs)", _tf_int8),
    Claim("tf.int4", "Transformers", "post-training int4 loses more than half of what an LM "
          "memorized", "transformers.int4_loses_half", "per seed, the share of memorized bits "
          "lost at 4 bits quantized directly", "more than 0.5 by 2 s.e. (agrees) or less "
          "(differs)", _tf_int4),
    Claim("tf.retrain", "Transformers", "retraining at 4 bits recovers what post-training "
          "quantization lost", "transformers.retraining_recovers", "per seed, the share "
          "kept at 4 bits progressively with retraining against directly",
          "retrained keeps more by 2 s.e. (agrees) or less (differs)", _tf_retrain),
    Claim("tf.linear", "Transformers", "a transformer classifier's capacity grows in "
          "proportion to its parameters", "transformers.classifier_size_independent",
          "replicated bits per parameter of our largest classifier over our smallest",
          "ratio's interval inside 1 ± 10 % (agrees) or wholly outside (differs)",
          _tf_linear),
    Claim("tf.vs_lstm", "Transformers", "a transformer weight stores about what an LSTM "
          "weight stores, on the same data", "transformers.classifier_vs_lstm",
          "replicated bits per parameter (Eq. (1)) of our largest transformer classifier "
          "over our largest LSTM's", "ratio's interval inside 1 ± 10 % (agrees) or wholly "
          "outside (differs)", _tf_vs_lstm),
    Claim("real.cifar_params", "Real tasks", "the {subject} has this many parameters",
          "real_tasks.cifar10_params", "parameters of our CIFAR CNN definitions, counted "
          "(every tensor)", "equal to the paper's count (agrees) or not (differs)",
          _real_cifar_params),
]


def by_key(key: str) -> Claim:
    return next(c for c in CLAIMS if c.key == key)


def rows(ev: Evidence, chapter: str | None = None) -> pd.DataFrame:
    """Every claim's findings (of one chapter, or all) as scorecard rows."""
    out = [r for c in CLAIMS if chapter is None or c.chapter == chapter for r in c.rows(ev)]
    return pd.DataFrame(out, columns=COLUMNS)


def on_page(ev: Evidence, chapter: str) -> Markdown:
    """A chapter's claims and verdicts, as its page shows them under its results."""
    return Markdown(markdown(rows(ev, chapter)))


def markdown(table: pd.DataFrame) -> str:
    """Scorecard rows as the bullet list a chapter page shows under its results."""
    return "\n".join(
        f"- **{r['claim']}**: paper {r['paper says']} ({r['source']}); we measured "
        f"{r['we measured']}. Test: {r['test']}. *{r['verdict']}*."
        for _, r in table.iterrows())
