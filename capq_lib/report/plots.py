"""Plotly figure builders for every figure of the book, and the renderer the book needs.

Figures are emitted as a MIME bundle holding both plotly's own JSON (JupyterLab renders it)
and an HTML snippet without plotly.js (the built book loads one local copy of plotly.js on
every page), so pages stay small and make no network requests.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
from plotly.io.base_renderers import MimetypeRenderer
from plotly.subplots import make_subplots

from capq_lib.core import reference
from capq_lib.core.info import mutual_information

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf"]
PAPER = dict(color="#555", symbol="x", size=9)


class BookRenderer(MimetypeRenderer):
    """plotly JSON for live Jupyter plus a plotly.js-free HTML div for the static book."""

    def to_mimebundle(self, fig_dict: dict) -> dict:
        html = pio.to_html(fig_dict, include_plotlyjs=False, full_html=False,
                           config={"displaylogo": False, "responsive": True})
        return {"application/vnd.plotly.v1+json": {"data": fig_dict.get("data", []),
                                                   "layout": fig_dict.get("layout", {}),
                                                   "config": {"displaylogo": False}},
                "text/html": html}


pio.renderers["capq"] = BookRenderer()
pio.renderers.default = "capq"


def _layout(fig: go.Figure, title: str, **kw) -> go.Figure:
    fig.update_layout(title=title, template="plotly_white", height=kw.pop("height", 430),
                      margin=dict(l=60, r=20, t=60, b=50), hovermode="closest",
                      legend=dict(orientation="h", y=-0.2), **kw)
    return fig


# --- Mutual information chapter ------------------------------------------------------------

def mi_per_sample(p_grid: np.ndarray | None = None) -> go.Figure:
    """I/N = 1 - H2(p) against accuracy p, with the two anchor points of Sec. 3.1."""
    p = np.linspace(0.0, 1.0, 401) if p_grid is None else np.asarray(p_grid)
    fig = go.Figure(go.Scatter(x=p, y=mutual_information(1, p), mode="lines", name="I / N",
                               line=dict(color=PALETTE[0], width=3),
                               hovertemplate="p = %{x:.3f}<br>I/N = %{y:.4f} bits<extra></extra>"))
    fig.add_trace(go.Scatter(x=[0.5, 1.0], y=[0.0, 1.0], mode="markers+text", name="anchors",
                             text=["p = 0.5: nothing stored", "p = 1: N bits"],
                             textposition=["top center", "bottom left"],
                             marker=dict(size=10, color=PALETTE[1])))
    return _layout(fig, "Bits stored per sample, I/N, against training accuracy p",
                   xaxis_title="training accuracy p", yaxis_title="I / N (bits per sample)")


def mi_check(sim: pd.DataFrame) -> go.Figure:
    """Eq. (1) against the plug-in estimate, one slider step per N (precomputed frames)."""
    ns = sorted(sim["n_samples"].unique())
    p = np.linspace(0.0, 1.0, 201)
    fig = go.Figure()
    for i, n in enumerate(ns):
        d = sim[sim.n_samples == n]
        fig.add_trace(go.Scatter(x=d["p"], y=d["empirical_mean"] / n, mode="markers",
                                 name=f"plug-in estimate, N = {n}", visible=i == 0,
                                 error_y=dict(type="data", array=d["empirical_std"] / n),
                                 marker=dict(color=PALETTE[1], size=8)))
    fig.add_trace(go.Scatter(x=p, y=mutual_information(1, p), mode="lines", name="Eq. (1)",
                             line=dict(color=PALETTE[0])))
    steps = [dict(method="update", label=str(n),
                  args=[{"visible": [j == i for j in range(len(ns))] + [True]}])
             for i, n in enumerate(ns)]
    fig.update_layout(sliders=[dict(active=0, steps=steps, currentvalue=dict(prefix="N = "),
                                    pad=dict(t=50))])
    fig = _layout(fig, "Eq. (1) against an empirical estimate from simulated predictions",
                  xaxis_title="accuracy p", yaxis_title="I / N (bits per sample)", height=520)
    fig.update_layout(legend=dict(orientation="h", y=1.0, yanchor="bottom", x=0),
                      margin=dict(t=90))
    return fig


def mi_trained_gap(rows: pd.DataFrame, tolerance: float) -> go.Figure:
    """Plug-in estimate minus Eq. (1), bits per sample, of trained nets against N/P: each
    net as a point, the mean over seeds as a line with its spread, the tolerance shaded.
    Models sit slightly apart along x so that their points do not hide each other."""
    fig = go.Figure()
    fig.add_hrect(y0=-tolerance, y1=tolerance, fillcolor="rgba(44,160,44,0.12)", line_width=0)
    fig.add_hline(y=0, line=dict(color="#888", width=1))
    hover_net = ("%{text}, N/P = %{customdata[5]:.2g}, N = %{customdata[0]:,}"
                 "<br>gap = %{y:+.4f} bits/sample<br>p = %{customdata[1]:.4f}"
                 "<br>predicts 1 for %{customdata[2]:.1%}"
                 "<br>errors on 0s %{customdata[3]:.1%}, on 1s %{customdata[4]:.1%}"
                 "<extra></extra>")
    hover_mean = ("%{text}, N/P = %{customdata[5]:.2g}: mean gap %{y:+.4f} bits/sample"
                  "<br>mean p = %{customdata[0]:.4f}<br>predicts 1 for %{customdata[1]:.1%}"
                  "<br>|error on 1s - error on 0s| = %{customdata[2]:.1%}"
                  "<br>Fano slack %{customdata[3]:.4f}, label deficit %{customdata[4]:.4f}"
                  "<extra></extra>")
    models = list(dict.fromkeys(rows["model"]))
    for i, model in enumerate(models):
        g = rows[rows.model == model]
        shift = 1.0 + 0.04 * (i - (len(models) - 1) / 2)
        color = PALETTE[i % len(PALETTE)]
        fig.add_trace(go.Scatter(
            x=g["n_per_param"] * shift, y=g["gap_per_sample"], mode="markers",
            name=f"{model}, one net", text=[model] * len(g), legendgroup=model,
            marker=dict(color=color, size=6, opacity=0.45),
            customdata=g[["n_samples", "accuracy", "pred_1_share", "error_0", "error_1",
                          "n_per_param"]], hovertemplate=hover_net))
        m = g.groupby("n_per_param", as_index=False).agg(
            gap=("gap_per_sample", "mean"), std=("gap_per_sample", "std"),
            p=("accuracy", "mean"), pred_1=("pred_1_share", "mean"),
            asym=("error_asymmetry", lambda s: s.abs().mean()),
            slack=("fano_slack_per_sample", "mean"),
            deficit=("label_deficit_per_sample", "mean"))
        m["ratio"] = m["n_per_param"]
        fig.add_trace(go.Scatter(
            x=m["n_per_param"] * shift, y=m["gap"], mode="lines+markers",
            name=f"{model}, mean \u00b1 std over seeds", text=[model] * len(m),
            legendgroup=model, line=dict(color=color, width=2), marker=dict(size=8),
            error_y=dict(type="data", array=m["std"].fillna(0.0), thickness=1.2, width=4),
            customdata=m[["p", "pred_1", "asym", "slack", "deficit", "ratio"]],
            hovertemplate=hover_mean))
    ticks = sorted(rows["n_per_param"].unique())
    top = max(2 * tolerance, float(rows.gap_per_sample.abs().max()) * 1.15)
    return _layout(fig, f"Trained nets: plug-in estimate minus Eq. (1) (shaded: "
                        f"\u00b1{tolerance:g} bits per sample)",
                   xaxis=dict(type="log", title="samples per parameter N / P",
                              tickvals=ticks, ticktext=[f"{t:g}" for t in ticks]),
                   yaxis=dict(title="gap (bits per sample)", range=[-top, top],
                              zeroline=False))


# --- FCDNN capacity chapter ----------------------------------------------------------------

def accuracy_vs_n(curve: pd.DataFrame, by: str, fixed: dict, title: str) -> go.Figure:
    """Fig. 1: best training accuracy against N, one line per value of ``by``."""
    d = curve
    for k, v in fixed.items():
        d = d[d[k] == v]
    fig = go.Figure()
    for i, (val, g) in enumerate(d.groupby(by)):
        g = g.sort_values("n_samples")
        fig.add_trace(go.Scatter(
            x=g["n_samples"], y=g["accuracy"], mode="lines+markers", name=f"{by} {val}",
            line=dict(color=PALETTE[i % len(PALETTE)]), customdata=g[["params", "mutual_info"]],
            hovertemplate=("N = %{x}<br>p = %{y:.4f}<br>params = %{customdata[0]}"
                           "<br>I = %{customdata[1]:.0f} bits<extra></extra>")))
    return _layout(fig, title, xaxis=dict(type="log", title="number of samples N"),
                   yaxis=dict(title="training accuracy p", range=[0.45, 1.02]))


def regions(curve: pd.DataFrame, near: float = 0.9) -> dict[str, tuple[float, float]]:
    """Split N into over-parameterized / maximum / under-parameterized (Fig. 2a).

    The maximum region holds the N whose I is within ``near`` of the capacity; smaller N
    are over-parameterized, larger N under-parameterized.
    """
    c = curve.sort_values("n_samples")
    ns = [float(n) for n in c.n_samples]
    top = [float(n) for n in c[c["mutual_info"] >= near * c["mutual_info"].max()].n_samples]
    i, j = ns.index(top[0]), ns.index(top[-1])
    # each border halfway (geometrically) to the next N outside, so that a maximum held by
    # one trained N is still a region of its own, between its neighbours
    lo = float(np.sqrt(ns[i - 1] * ns[i])) if i > 0 else ns[i]
    hi = float(np.sqrt(ns[j] * ns[j + 1])) if j + 1 < len(ns) else ns[j]
    return {"over-parameterized": (ns[0], lo), "maximum": (lo, hi),
            "under-parameterized": (hi, ns[-1])}


def capacity_regions(curve: pd.DataFrame, model: str) -> go.Figure:
    """Fig. 2a: accuracy and I against N for one net, with the three regions shaded."""
    c = curve[curve.model == model].sort_values("n_samples")
    fig = go.Figure()
    shade = {"over-parameterized": "#2ca02c", "maximum": "#ff7f0e",
             "under-parameterized": "#d62728"}
    for name, (lo, hi) in regions(c).items():
        if hi > lo:
            fig.add_vrect(x0=lo, x1=hi, fillcolor=shade[name], opacity=0.12, line_width=0)
            fig.add_annotation(x=np.log10(np.sqrt(lo * hi)), yref="paper",
                               y=1.07 if name == "maximum" else 1.0,
                               yanchor="bottom", text=name, showarrow=False,
                               font=dict(size=11, color=shade[name]))
    fig.add_trace(go.Scatter(x=c["n_samples"], y=c["mutual_info"], name="I (bits)",
                             mode="lines+markers", line=dict(color=PALETTE[0])))
    fig.add_trace(go.Scatter(x=c["n_samples"], y=c["accuracy"], name="accuracy p",
                             mode="lines+markers", yaxis="y2",
                             line=dict(color=PALETTE[1], dash="dot")))
    label = f"FCDNN {model}" if model[:1].isdigit() else model
    return _layout(fig, f"Mutual information and accuracy against N, {label}",
                   xaxis=dict(type="log", title="number of samples N"),
                   yaxis=dict(title="I (bits)", rangemode="tozero"),
                   yaxis2=dict(title="accuracy p", overlaying="y", side="right",
                               range=[0.45, 1.02]))


def capacity_vs_params(summary: pd.DataFrame, others: dict[str, pd.DataFrame] | None = None
                       ) -> go.Figure:
    """Fig. 2b: capacity against parameter count (log-log), ours beside the paper's.

    ``summary`` holds our FCDNNs; ``others`` more of our families by label (e.g. "CNN")."""
    fig = go.Figure()
    lo, hi = reference.value("fcdnn.bits_per_param_range")
    mean = reference.value("fcdnn.bits_per_param_mean")
    cnn = reference.paper()["cnn"]["table1"]["models"]
    rnn = reference.value("rnn.model")
    ours = {k: d for k, d in {"FCDNN": summary, **(others or {})}.items()
            if d is not None and len(d)}
    xs = np.array([*[p for d in ours.values() for p in d["params"]],
                   *[m["params"] for m in cnn.values()], rnn["params"]])
    grid = np.geomspace(xs.min() / 1.5, xs.max() * 1.5, 50)
    fig.add_trace(go.Scatter(x=np.r_[grid, grid[::-1]], y=np.r_[lo * grid, hi * grid[::-1]],
                             fill="toself", fillcolor="rgba(31,119,180,0.12)", line_width=0,
                             name=f"paper, FCDNN range {lo}-{hi} bits/param", hoverinfo="skip"))
    fig.add_trace(go.Scatter(x=grid, y=mean * grid, mode="lines", name=f"{mean} bits/param",
                             line=dict(color="#1f77b4", dash="dash")))
    symbols = {"FCDNN": "circle", "CNN": "x", "LSTM": "diamond"}
    for i, (label, d) in enumerate(ours.items()):
        fig.add_trace(go.Scatter(
            x=d["params"], y=d["capacity_bits"], mode="markers", name=f"ours, {label}",
            text=d["model"], customdata=d["bits_per_param"],
            marker=dict(color=PALETTE[(i + 1) % len(PALETTE)], size=10,
                        symbol=symbols.get(label, "circle")),
            hovertemplate="%{text}: %{x} params<br>C = %{y:.0f} bits"
                          "<br>%{customdata:.2f} bits/param<extra></extra>"))
    fig.add_trace(go.Scatter(
        x=[m["params"] for m in cnn.values()], y=[m["capacity_bits"] for m in cnn.values()],
        mode="markers", name="paper, CNN (Table 1)", text=[f"CNN {k}" for k in cnn],
        marker=PAPER, hovertemplate="%{text}: %{x} params<br>C = %{y:.0f} bits<extra></extra>"))
    rnn_c = reference.value("rnn.bits_per_param") * rnn["params"]
    fig.add_trace(go.Scatter(x=[rnn["params"]], y=[rnn_c], mode="markers",
                             name="paper, LSTM (Sec. 4.3)",
                             marker=dict(color="#555", symbol="diamond-open", size=10)))
    return _layout(fig, "Capacity against number of parameters",
                   xaxis=dict(type="log", title="parameters"),
                   yaxis=dict(type="log", title="capacity C (bits)"))


def bits_per_param_by_family(rows: pd.DataFrame) -> go.Figure:
    """Bits per parameter of every measured architecture, grouped by family (mean ± 2 s.e.
    over its replicates; open markers are lower bounds), with the paper's
    value of each family as a bar: is FC < CNN < LSTM? Error bars are 2 s.e."""
    fig = go.Figure()
    if rows.empty:
        fig.add_annotation(text="no capacity results yet under this profile", showarrow=False,
                           x=0.5, y=0.5, xref="paper", yref="paper")
    for i, (family, g) in enumerate(rows.groupby("family", sort=False)):
        lower = g["lower_bound"].astype(bool).to_numpy() if "lower_bound" in g else \
            np.zeros(len(g), dtype=bool)
        fig.add_trace(go.Scatter(
            x=[family] * len(g), y=g["bits"], mode="markers", name=family, text=g["model"],
            error_y=dict(type="data", array=g["spread"].fillna(0)) if "spread" in g else None,
            marker=dict(color=PALETTE[i % len(PALETTE)], size=11,
                        symbol=np.where(lower, "circle-open", "circle")),
            customdata=np.where(lower, " (lower bound)", ""),
            hovertemplate="%{text}: %{y:.2f} bits/param%{customdata}<extra></extra>"))
        fig.add_trace(go.Scatter(x=[family], y=[g["paper"].iloc[0]], mode="markers",
                                 marker=dict(symbol="line-ew-open", size=40, color="#555",
                                             line=dict(width=3)),
                                 name="paper" if i == 0 else None, showlegend=i == 0,
                                 hovertemplate=f"paper: {g['paper'].iloc[0]} bits/param"
                                               "<extra></extra>"))
    return _layout(fig, "Bits per parameter by family (conv share for CNNs)",
                   yaxis=dict(title="bits per parameter", rangemode="tozero"), showlegend=True)


def capacity_vs_length(by_length: pd.DataFrame) -> go.Figure:
    """Bits per parameter (conv share for CNNs) against training length (the study's
    epochs x factor), one line per model with the seeds' standard deviation, the paper's
    value dashed: does the capacity still grow when training is longer?"""
    table = reference.paper()["cnn"]["table1"]["models"]
    fc_bits = reference.value("cnn.fc_bits_per_param_assumed")
    fig = go.Figure()
    conv = "params_conv" in by_length and by_length.params_conv.notna().all()
    for i, (model, g) in enumerate(by_length.groupby("model", sort=False)):
        color = PALETTE[i % len(PALETTE)]
        if conv:
            p_fc, p_conv = int(g.params_fc.iloc[0]), int(g.params_conv.iloc[0])
            y, size = (g.capacity_bits - fc_bits * p_fc) / p_conv, p_conv
            paper = table.get(model, {}).get("conv_bits_per_param")
        else:
            size = int(g.params.iloc[0])
            y = g.capacity_bits / size
            paper = (reference.value("rnn.bits_per_param") if "units" in g
                     and g.units.notna().all() else
                     reference.value("fcdnn.bits_per_param_mean"))
        unit = "conv bits/param" if conv else "bits/param"
        fig.add_trace(go.Scatter(
            x=g.epochs, y=y, mode="lines+markers", name=f"{model}", line=dict(color=color),
            error_y=dict(type="data", array=(g.capacity_bits_sd / size).fillna(0)),
            customdata=np.c_[g.factor, g.n_samples, g.p, g.seeds],
            hovertemplate=("%{x} epochs (x%{customdata[0]:g}): %{y:.2f} " + unit +
                           "<br>at N = %{customdata[1]:,}, mean p %{customdata[2]:.4f}, "
                           "%{customdata[3]} seeds<extra>" + model + "</extra>")))
        if paper is not None:
            fig.add_hline(y=paper, line_dash="dash", line_color=color,
                          annotation_text=f"paper, {model}" if conv else "paper",
                          annotation_position="top left")
    return _layout(fig, "Capacity against training length",
                   xaxis=dict(title="epochs", type="log"),
                   yaxis=dict(title="conv bits per parameter (FC at 2.3)" if conv else
                              "bits per parameter", rangemode="tozero"))


def search_ranges(trials: pd.DataFrame) -> go.Figure:
    """Every trial's stored bits per parameter against its learning rate, the paper's lr
    range shaded: shows which part of the search space the capacity came from."""
    lo, hi = reference.value("fcdnn.lr_range")
    fig = go.Figure()
    fig.add_vrect(x0=lo, x1=hi, fillcolor="#1f77b4", opacity=0.1, line_width=0)
    fig.add_annotation(x=np.log10(np.sqrt(lo * hi)), y=1.0, yref="paper", yanchor="bottom",
                       text="paper's lr range", showarrow=False, font=dict(color="#1f77b4"))
    symbols = {1: "circle", 2: "square", 3: "diamond"}
    for i, (model, g) in enumerate(trials.groupby("model", sort=False)):
        fig.add_trace(go.Scatter(
            x=g["lr"], y=g["mutual_info"] / g["params"], mode="markers", name=model,
            marker=dict(color=PALETTE[i % len(PALETTE)], size=7, opacity=0.75,
                        symbol=[symbols.get(int(s), "circle") for s in g["stage"]]),
            customdata=np.c_[g["stage"], g["n_samples"], g["momentum"], g["accuracy"]],
            hovertemplate=("stage %{customdata[0]}: lr %{x:.4f}, momentum %{customdata[2]:.2f}"
                           "<br>N = %{customdata[1]}, p = %{customdata[3]:.4f}"
                           "<br>%{y:.2f} bits/param<extra>" + model + "</extra>")))
    return _layout(fig, "Where the capacity was found: bits per parameter of every trial",
                   xaxis=dict(type="log", title="initial learning rate"),
                   yaxis=dict(title="I / parameters (bits)", rangemode="tozero"))


def bits_vs_size(summary: pd.DataFrame, paper: float, by: str = "units") -> go.Figure:
    """Bits per parameter against model size: flat if capacity is proportional to size."""
    fig = go.Figure(go.Scatter(
        x=summary["params"], y=summary["bits_per_param"], mode="lines+markers+text",
        text=summary["model"], textposition="top center", name="ours",
        marker=dict(size=10, color=PALETTE[1]),
        hovertemplate="%{text}: %{x} params, %{y:.2f} bits/param<extra></extra>"))
    fig.add_hline(y=paper, line_dash="dash", line_color="#555",
                  annotation_text=f"paper: {paper} bits/param", annotation_position="top left")
    return _layout(fig, "Bits per parameter against size",
                   xaxis=dict(type="log", title="parameters"),
                   yaxis=dict(title="bits per parameter", rangemode="tozero"))


# --- Capacity under quantization -------------------------------------------------------------

#: a slider under the legend: the legend sits just below the x axis, the slider below it
SLIDER_BELOW = dict(y=-0.32, yanchor="top", pad=dict(t=10))


def _below(fig: go.Figure) -> go.Figure:
    fig.update_layout(height=fig.layout.height + 90, margin=dict(b=160),
                      legend=dict(orientation="h", y=-0.16, yanchor="top"))
    return fig


def _bits_axis(bits: list[int]) -> list[str]:
    """Category labels left to right: float, then fewer and fewer bits (as the paper plots)."""
    return ["float"] + [str(b) for b in sorted(bits, reverse=True)]


def quantization_slider(q: pd.DataFrame, group: str, label: str, title: str,
                        start_bits: int = 6) -> go.Figure:
    """Left: accuracy against bit width, one line per ``group`` value. Right: every group's
    accuracy at the width the slider picks, with the share of its float I kept; the slider
    shows one precomputed trace set per width, so it works in the static book.

    ``q`` holds one row per group and bit width: ``accuracy``, ``float_accuracy``,
    ``mutual_info``, ``float_mi`` (``precision.accuracy_by_bits``)."""
    bits = sorted((int(b) for b in q["bits"].unique()), reverse=True)
    groups = list(dict.fromkeys(q[group]))
    fig = make_subplots(rows=1, cols=2, column_widths=[0.6, 0.4], horizontal_spacing=0.1,
                        subplot_titles=("accuracy against bits",
                                        "at the slider's width (labels: % of float I kept)"))
    for i, g in enumerate(groups):
        d = q[q[group] == g].sort_values("bits", ascending=False)
        fig.add_trace(go.Scatter(
            x=_bits_axis(bits), y=[d.float_accuracy.iloc[0], *d.accuracy],
            mode="lines+markers", name=f"{label} {g}".strip(), legendgroup=str(g),
            line=dict(color=PALETTE[i % len(PALETTE)]),
            hovertemplate=f"{label} {g}, " + "%{x} bits: p = %{y:.4f}<extra></extra>"),
            row=1, col=1)
    n_lines = len(groups)
    for b in bits:
        d = q[q.bits == b].set_index(group).loc[groups]
        kept = 100 * d.mutual_info / d.float_mi.where(d.float_mi > 0)
        fig.add_trace(go.Scatter(
            x=[str(b)] * len(groups), y=d.accuracy, mode="markers", showlegend=False,
            marker=dict(size=14, symbol="circle-open", color="#111", line=dict(width=2)),
            visible=bool(b == start_bits), hoverinfo="skip"), row=1, col=1)
        fig.add_trace(go.Bar(
            x=[f"{label} {g}".strip() for g in groups], y=d.accuracy, showlegend=False,
            marker_color=[PALETTE[i % len(PALETTE)] for i in range(len(groups))],
            text=[f"{k:.0f}%" if k == k else "" for k in kept], textposition="outside",
            textfont=dict(size=12), cliponaxis=False,
            customdata=np.c_[d.float_accuracy, d.mutual_info],
            hovertemplate=(f"{b} bits: " + "p = %{y:.4f} (float %{customdata[0]:.4f})"
                           "<br>I = %{customdata[1]:.0f} bits<extra></extra>"),
            visible=bool(b == start_bits)), row=1, col=2)
    steps = []
    for j, b in enumerate(bits):
        vis = [True] * n_lines + [bool(k // 2 == j) for k in range(2 * len(bits))]
        steps.append(dict(method="update", label=str(b), args=[{"visible": vis}]))
    active = bits.index(start_bits) if start_bits in bits else 0
    if start_bits not in bits:
        for k, tr in enumerate(fig.data[n_lines:]):
            tr.visible = k // 2 == 0
    fig.update_layout(sliders=[dict(active=active, steps=steps, **SLIDER_BELOW,
                                    currentvalue=dict(prefix="bits per weight: "))])
    fig.update_yaxes(title_text="training accuracy p", range=[0.45, 1.05], row=1, col=1)
    fig.update_yaxes(range=[0.45, 1.12], row=1, col=2)
    fig.update_xaxes(title_text="bits per weight", type="category", row=1, col=1)
    fig.update_xaxes(tickangle=-30, automargin=True, row=1, col=2)
    # labels keep a readable size: plotly would otherwise shrink them to fit narrow bars
    fig.update_layout(uniformtext=dict(minsize=11, mode="show"))
    return _below(_layout(fig, title, height=480))


def family_fractions(main: pd.DataFrame, family: str, title: str, why: str) -> go.Figure:
    """Fig. 4: one model of ``family`` at every fraction of its capacity it was trained at,
    labelled by samples per parameter; a family this profile did not quantize gets a
    figure that says so (and why), so every panel the page refers to is there."""
    d = main[main.family == family]
    if d.empty:
        fig = go.Figure()
        fig.add_annotation(text=f"not measured under this profile: {why}", showarrow=False,
                           x=0.5, y=0.5, xref="paper", yref="paper")
        fig.update_xaxes(visible=False)
        fig.update_yaxes(visible=False)
        return _layout(fig, title, height=220)
    d = d[d.model == d.model.iloc[0]].assign(ratio=lambda t: t.data_per_param.round(2))
    return quantization_slider(d, "ratio", "N/P =",
                               f"{title} {d.model.iloc[0]}: accuracy against bits per N/P")


def lossless_bits_by_ratio(table: pd.DataFrame, paper: dict[str, int]) -> go.Figure:
    """Fewest lossless bits against data per parameter, one line per model, the paper's
    full-capacity values as dashed levels: the advisor's evidence. A setting that lost even
    at the widest width is drawn one above it, as "> widest" (worse, not absent)."""
    fig = go.Figure()
    widest = int(table.widest.max()) if len(table) else 0
    families = list(dict.fromkeys(table.family))
    symbols = ["circle", "square", "diamond", "cross", "star"]
    for (family, model), g in table.groupby(["family", "model"], sort=False):
        g = g.sort_values("data_per_param")
        color = PALETTE[families.index(family) % len(PALETTE)]
        lost = g.fewest_lossless_bits.isna()
        shown = [f">{int(w)}" if m else str(int(b))
                 for b, w, m in zip(g.fewest_lossless_bits, g.widest, lost, strict=True)]
        k = list(dict.fromkeys(table[table.family == family].model)).index(model)
        fig.add_trace(go.Scatter(
            x=g.data_per_param, y=g.fewest_lossless_bits.fillna(g.widest + 1),
            mode="lines+markers", name=f"{family} {model}", line=dict(color=color, shape="hv"),
            marker=dict(symbol=[("triangle-up" if m else symbols[k % len(symbols)])
                                for m in lost], size=9),
            text=shown, hovertemplate=f"{model}: " + "N/P = %{x:.2f}, %{text} bits<extra>"
            + family + "</extra>"))
    for i, family in enumerate(families):
        if family in paper:
            fig.add_hline(y=paper[family], line_dash="dash",
                          line_color=PALETTE[i % len(PALETTE)],
                          annotation_text=f"paper, {family} at capacity: {paper[family]}",
                          annotation_position="top left")
    ticks = list(range(0, widest + 1, 2))
    return _layout(fig, "Fewest bits without loss against samples per parameter",
                   xaxis=dict(title="samples per parameter N / P"),
                   yaxis=dict(title="fewest lossless bits", rangemode="tozero",
                              tickvals=[*ticks, widest + 1],
                              ticktext=[*map(str, ticks), f">{widest}"]))


def fill_sweep(nets: pd.DataFrame, paper_bpp: float, paper_bits: int,
               fits: pd.DataFrame | None = None, study_nets: pd.DataFrame | None = None
               ) -> go.Figure:
    """The fill sweep: each net's fewest lossless bits against the bits it stored per
    parameter in float (small points, jittered up and down so equal widths stay readable),
    the mean +- sd over seeds per N (large points), a colour per recipe, a symbol per model,
    the fitted line per recipe (``fits``, ``fill.fit``), the paper's operating point, and
    optionally the quantization study's own nets (``study_nets``, hollow grey). A net that
    lost even at the widest width sits one above it, labelled "> widest"."""
    fig = go.Figure()
    widest = int(nets.widest.max())
    recipes = list(dict.fromkeys(nets.recipe))
    models = list(dict.fromkeys(nets.model))
    symbols = ["circle", "square", "diamond", "cross", "star", "hexagon"]
    names = {"ours": "our recipe", "paper": "paper-range recipe"}
    jitter = (((np.arange(len(nets)) * 0.618034) % 1.0) - 0.5) * 0.3
    nets = nets.assign(_y=nets.ranked_bits + jitter,
                       _shown=[f">{int(w)}" if b != b else str(int(b))
                               for b, w in zip(nets.fewest_lossless_bits, nets.widest,
                                               strict=True)])
    for (recipe, model), g in nets.groupby(["recipe", "model"], sort=False):
        color = PALETTE[recipes.index(recipe) % len(PALETTE)]
        symbol = symbols[models.index(model) % len(symbols)]
        label = f"{names.get(recipe, recipe)}, {model}"
        fig.add_trace(go.Scatter(
            x=g.bits_per_param_float, y=g._y, mode="markers", name=f"{label}, each net",
            legendgroup=label, marker=dict(color=color, symbol=symbol, size=6, opacity=0.45),
            customdata=np.c_[g.n_per_param, g._shown, g.float_accuracy],
            hovertemplate=(f"{label}<br>N/P = " + "%{customdata[0]}: %{x:.2f} bits/param "
                           "(p = %{customdata[2]:.4f}), %{customdata[1]} bits<extra></extra>")))
        m = g.groupby("n_per_param").agg(x=("bits_per_param_float", "mean"),
                                         x_sd=("bits_per_param_float", "std"),
                                         y=("ranked_bits", "mean"), y_sd=("ranked_bits", "std"),
                                         k=("seed", "size")).reset_index().fillna(0.0)
        fig.add_trace(go.Scatter(
            x=m.x, y=m.y, mode="markers", name=f"{label}, mean +- sd per N",
            legendgroup=label, marker=dict(color=color, symbol=symbol, size=12,
                                           line=dict(color="#111", width=1)),
            error_x=dict(type="data", array=m.x_sd, color=color, thickness=1),
            error_y=dict(type="data", array=m.y_sd, color=color, thickness=1),
            customdata=np.c_[m.n_per_param, m.k],
            hovertemplate=(f"{label}, N/P = " + "%{customdata[0]} (%{customdata[1]} nets): "
                           "%{x:.2f} bits/param, %{y:.2f} bits<extra></extra>")))
    if fits is not None and "slope" in fits:
        for _, f in fits.dropna(subset=["slope"]).iterrows():
            xs = np.array([f.bpp_min, f.bpp_max])  # over the fills the recipe reached
            color = PALETTE[recipes.index(f.recipe) % len(PALETTE)]
            fig.add_trace(go.Scatter(
                x=xs, y=f.intercept + f.slope * xs, mode="lines", line=dict(color=color,
                                                                            dash="dot"),
                name=f"{names.get(f.recipe, f.recipe)}: fitted line", hoverinfo="skip"))
    if study_nets is not None and len(study_nets):
        fig.add_trace(go.Scatter(
            x=study_nets.bits_per_param_float, y=study_nets.ranked_bits, mode="markers",
            name="the quantization study's nets (our recipe)",
            marker=dict(color="#888", symbol="circle-open", size=9, line=dict(width=1.5)),
            text=[f"{m} at {d}" for m, d in zip(study_nets.model, study_nets.definition,
                                                 strict=True)],
            hovertemplate="%{text}: %{x:.2f} bits/param, %{y} bits<extra></extra>"))
    fig.add_trace(go.Scatter(
        x=[paper_bpp], y=[paper_bits], mode="markers", marker=dict(**{**PAPER, "size": 14}),
        name=f"paper: {paper_bpp} bits/param, lossless at {paper_bits} bits",
        hovertemplate="paper (Sec. 4.1, 5.1): %{x} bits/param, %{y} bits<extra></extra>"))
    ticks = list(range(0, widest + 1, 2))
    return _layout(fig, "Fill sweep: bits needed per weight against bits stored per parameter",
                   height=560, xaxis=dict(title="bits stored per parameter in float (I / P)"),
                   yaxis=dict(title="fewest lossless bits (each net)", rangemode="tozero",
                              tickvals=[*ticks, widest + 1],
                              ticktext=[*map(str, ticks), f">{widest}"]))


# --- Real tasks and loss surfaces -----------------------------------------------------------

def metric_vs_bits(rows: pd.DataFrame, metric: str, title: str,
                   splits: tuple[str, ...] = ("train", "test"), log: bool = False) -> go.Figure:
    """A real-task metric against bit width (float at the left), one colour per net, solid
    for the test set and dashed for the training set (Fig. 6 and 7)."""
    keep = rows[(rows.bits.isna() | rows.retrained) & rows.split.isin(splits)]
    bits = sorted({int(b) for b in keep.bits.dropna()}, reverse=True)
    fig = go.Figure()
    for i, (model, g) in enumerate(keep.groupby("model", sort=False)):
        for split in splits:
            d = g[g.split == split]
            y = [d[d.bits.isna()][metric].iloc[0]] + [d[d.bits == b][metric].iloc[0]
                                                      for b in bits]
            fig.add_trace(go.Scatter(
                x=_bits_axis(bits), y=y, mode="lines+markers", name=f"{model}, {split}",
                line=dict(color=PALETTE[i % len(PALETTE)],
                          dash="solid" if split == "test" else "dash"),
                hovertemplate=f"{model} {split}, " + "%{x} bits: %{y:.4g}<extra></extra>"))
    return _layout(fig, title, xaxis=dict(title="bits per weight", type="category"),
                   yaxis=dict(title=metric, type="log" if log else "linear"))


def surface_slider(surf: pd.DataFrame, metric: str, title: str) -> go.Figure:
    """f(alpha) per net and data split, one slider step per precision (8, 6, ... bits): the
    chosen precision's curves drawn over the float ones, which stay on every step (pale), so
    the two can be compared; the slider starts at the narrowest width."""
    widths = list(dict.fromkeys(surf.width))
    quantized = [w for w in widths if w != "float"]
    fig = go.Figure()
    owner = []
    for w in ["float", *quantized] if "float" in widths else quantized:
        is_float = w == "float"
        for i, ((model, split), g) in enumerate(surf[surf.width == w].groupby(
                ["model", "split"], sort=False)):
            fig.add_trace(go.Scatter(
                x=g.alpha, y=g[metric], mode="lines", name=f"{model}, {split}, {w}",
                visible=is_float or (bool(quantized) and w == quantized[-1]),
                opacity=0.35 if is_float else 1.0,
                line=dict(color=PALETTE[(i // 2) % len(PALETTE)],
                          width=1.5 if is_float else 2.5,
                          dash="solid" if split == "test" else "dash"),
                hovertemplate=f"{model} {split}, {w}: " + "alpha %{x:.2f}, %{y:.4g}"
                              "<extra></extra>"))
            owner.append(w)
    steps = [dict(method="update", label=str(w),
                  args=[{"visible": [o in ("float", w) for o in owner]}]) for w in quantized]
    if steps:
        fig.update_layout(sliders=[dict(active=len(steps) - 1, steps=steps, **SLIDER_BELOW,
                                        currentvalue=dict(prefix="float (pale) and "))])
    return _below(_layout(fig, title, height=470, xaxis=dict(title="alpha (step along d)"),
                          yaxis=dict(title=metric)))


# --- transformers -------------------------------------------------------------------------

def lm_memorized(rows: pd.DataFrame) -> go.Figure:
    """Memorized bits against N for each LM (float32; mean ± sd over seeds), the ceiling
    no net can pass (dashed, same colour) and the data's entropy (grey): memorized bits
    rise with N while a net can hold them, then level off or fall."""
    fig = go.Figure()
    fl = rows[rows.precision == "float32"]
    for i, (model, g) in enumerate(fl.groupby("model", sort=False)):
        per = g.groupby("n_sequences").agg(m=("memorized_bits", "mean"),
                                           s=("memorized_bits", "std"),
                                           c=("ceiling_bits", "mean")).reset_index()
        color = PALETTE[i % len(PALETTE)]
        fig.add_trace(go.Scatter(x=per.n_sequences, y=per.m, mode="lines+markers",
                                 name=f"{model} ({int(g.params.iloc[0]):,} params)",
                                 error_y=dict(type="data", array=per.s.fillna(0)),
                                 line=dict(color=color)))
        fig.add_trace(go.Scatter(x=per.n_sequences, y=per.c, mode="lines",
                                 name=f"{model}: ceiling", showlegend=i == 0,
                                 legendgroup="ceiling", line=dict(color=color, dash="dash"),
                                 hovertemplate="ceiling %{y:.0f} bits<extra></extra>"))
    return _layout(fig, "Memorized bits against the number of random sequences",
                   xaxis=dict(type="log", title="sequences N"),
                   yaxis=dict(type="log", title="bits memorized (mean over seeds)"))


def transformer_capacity_vs_params(lm: pd.DataFrame, tf: pd.DataFrame, morris: float
                                   ) -> go.Figure:
    """Capacity against parameters (log-log): the LMs (float32 and bfloat16) and the
    classifiers (Eq. (1)), Morris's 3.6 bits per parameter as a line; open markers are
    lower bounds."""
    fig = go.Figure()
    sets = [(f"LM, {p}", lm[lm.precision == p]) for p in ("float32", "bfloat16")
            if len(lm) and (lm.precision == p).any()]
    if len(tf):
        sets.append(("classifier (Eq. (1))", tf))
    xs = [x for _, d in sets for x in d.params]
    for i, (label, d) in enumerate(sets):
        lower = [not bool(b) or c is False for b, c in
                 zip(d.bracketed, d.get("converged", [True] * len(d)), strict=True)]
        fig.add_trace(go.Scatter(
            x=d.params, y=d.capacity_bits, mode="markers", name=label, text=d.model,
            marker=dict(size=11, color=PALETTE[i % len(PALETTE)],
                        symbol=["circle-open" if lb else "circle" for lb in lower]),
            hovertemplate="%{text}: %{x:,} params, %{y:,.0f} bits<extra></extra>"))
    if xs:
        grid = np.geomspace(min(xs) / 1.5, max(xs) * 1.5, 30)
        fig.add_trace(go.Scatter(x=grid, y=morris * grid, mode="lines",
                                 name=f"Morris et al.: {morris} bits/param",
                                 line=dict(color="#555", dash="dash")))
    return _layout(fig, "Transformer capacity against parameters",
                   xaxis=dict(type="log", title="parameters"),
                   yaxis=dict(type="log", title="capacity (bits)"))


def bits_per_weight_slider(q: pd.DataFrame, title: str, start_bits: int = 4) -> go.Figure:
    """Left: memorized bits per parameter against bit width, one line per way (tables in
    float or deployed) and route (direct, progressive), the most a b-bit grid can hold,
    log2(2^b - 1), dashed. Right: every way and route at the slider's width (precomputed
    frames, so the slider works in the static page)."""
    full = q[q.point == "full"]
    model = full.loc[full.params.idxmax(), "model"] if len(full) else None
    g = full[full.model == model]
    params = int(g.params.iloc[0]) if len(g) else 1
    flt = g[g.bits.isna()].memorized_bits.mean() / params if len(g) else 0.0
    bits = sorted((int(b) for b in g.bits.dropna().unique()), reverse=True)
    fig = make_subplots(rows=1, cols=2, column_widths=[0.6, 0.4], horizontal_spacing=0.1,
                        subplot_titles=("bits per parameter against bit width",
                                        "at the slider's width"))
    combos = [(w, r) for w in ("float tables", "deployed") for r in ("direct", "progressive")]
    for i, (way, route) in enumerate(combos):
        d = g[(g.way == way) & (g.route == route)].groupby("bits").memorized_bits.mean()
        fig.add_trace(go.Scatter(x=[str(b) for b in bits],
                                 y=[d.get(b, np.nan) / params for b in bits],
                                 mode="lines+markers", name=f"{route}, {way}",
                                 line=dict(color=PALETTE[i], dash="solid" if route ==
                                           "progressive" else "dot")), row=1, col=1)
    fig.add_trace(go.Scatter(x=[str(b) for b in bits],
                             y=[math.log2(2 ** b - 1) for b in bits], mode="lines",
                             name="most a b-bit grid holds, log2(2^b - 1)",
                             line=dict(color="#555", dash="dash")), row=1, col=1)
    fig.add_hline(y=flt, line_dash="dot", line_color="#999", annotation_text="float",
                  row=1, col=1)
    n_lines = len(combos) + 1
    for b in bits:
        vals = [g[(g.way == w) & (g.route == r) & (g.bits == b)].memorized_bits.mean() /
                params for w, r in combos]
        fig.add_trace(go.Bar(x=[f"{r}, {w}" for w, r in combos], y=vals, showlegend=False,
                             marker_color=PALETTE[:len(combos)], visible=b == start_bits,
                             text=[f"{v:.2f}" for v in vals], textposition="outside",
                             cliponaxis=False), row=1, col=2)
    steps = [dict(method="update", label=str(b),
                  args=[{"visible": [True] * n_lines + [j == i for j in range(len(bits))]}])
             for i, b in enumerate(bits)]
    active = bits.index(start_bits) if start_bits in bits else 0
    if bits:
        fig.update_layout(sliders=[dict(active=active, steps=steps, **SLIDER_BELOW,
                                        currentvalue=dict(prefix="bits per weight: "))])
    fig.update_xaxes(title_text="bits per weight", type="category", row=1, col=1)
    fig.update_xaxes(tickangle=-30, automargin=True, row=1, col=2)
    fig.update_yaxes(title_text=f"bits memorized per parameter ({model})", row=1, col=1)
    return _below(_layout(fig, title, height=480))
