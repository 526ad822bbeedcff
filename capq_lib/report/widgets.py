"""Live ipywidgets for Jupyter: the quantization explorer (with its first look, which
needs no results yet) and the bits calculator.

A widget's Python callback needs a running kernel; in the static book a saved widget would
move without updating. So under the book build (``CAPQ_BATCH=1``) these return a note that
says how to get the live version instead of a dead control."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import ipywidgets as w
import pandas as pd
import torch
from IPython.display import Markdown
from IPython.display import display as show

from capq_lib.core.info import mutual_information
from capq_lib.core.validate import ConfigError
from capq_lib.engine.population import (
    Member,
    evaluate_population,
    stack_memorization_sets,
    stack_nets,
)
from capq_lib.engine.quantize import STEP_RULES, QuantConfig
from capq_lib.experiments.advise import advise
from capq_lib.experiments.precision import (
    QuantizationStudy,
    UnitNets,
    first_look_units,
    load_nets,
    unit_nets,
)
from capq_lib.experiments.results import ResultsCache

STATIC_NOTE = ("*{what} needs a running Python kernel.* Open this page as a notebook (the "
               "launch button at the top, or `jupyter lab book/quantization.ipynb` in a clone) "
               "and run it: the control then {does}.")


def live() -> bool:
    """False while the book is being built (papermill batch run)."""
    return os.environ.get("CAPQ_BATCH") != "1"


def requantized(nets: UnitNets, bits: int | None, rule: str) -> pd.DataFrame:
    """Float nets quantized directly to ``bits`` (None: float), each evaluated on its own
    memorization set: accuracy p and I per seed."""
    config = None if bits is None else QuantConfig(bits, rule)
    n = nets.n_samples
    members = [Member(n, s, s) for s in nets.seeds]
    x, y = stack_memorization_sets(members, nets.spec.input_shape, torch.device("cpu"))
    model = stack_nets(nets.spec, nets.nets, x.device)
    model.quantize_weights(config)
    acc = evaluate_population(model, x, y, torch.full((len(nets.nets),), n))[0].tolist()
    return pd.DataFrame({"seed": nets.seeds, "accuracy": acc,
                         "mutual_info": [float(mutual_information(n, a)) for a in acc]})


def requantize(key: str, bits: int | None, rule: str, cache: ResultsCache | None = None
               ) -> pd.DataFrame:
    """A unit's saved float nets (record ``key``) quantized directly to ``bits``."""
    return requantized(load_nets(key, cache), bits, rule)


def _quantizer_controls(options: list[tuple[str, Any]], nets_for: Callable[[Any], UnitNets],
                        show_first: bool = False) -> w.VBox:
    """Nets, bit width, step rule and float: the table of p and I per seed follows them.
    With ``show_first`` the controls are displayed before the first nets are fetched, so
    that a progress bar of their training shows in the output below them."""
    unit = w.Dropdown(options=options, description="nets")
    bits = w.IntSlider(value=6, min=1, max=16, description="bits")
    rule = w.ToggleButtons(options=list(STEP_RULES), description="step rule")
    use_float = w.Checkbox(value=False, description="float (no quantization)")
    out = w.Output()

    def update(_=None) -> None:
        with out:
            out.clear_output(wait=True)
            nets = nets_for(unit.value)  # may train (a progress bar in this output)
            df = requantized(nets, None if use_float.value else bits.value, rule.value)
            out.clear_output(wait=True)
            display(Markdown(f"N = {nets.n_samples:,} samples, {len(nets.nets)} nets, "
                             f"{nets.source}"))
            display(df.style.format({"accuracy": "{:.4f}", "mutual_info": "{:.0f}"})
                    .hide(axis="index"))

    for c in (unit, bits, rule, use_float):
        c.observe(update, names="value")
    box = w.VBox([unit, w.HBox([bits, use_float]), rule, out])
    if show_first:
        display(box)
    update()
    return box


def explorer(rows: pd.DataFrame, cache: ResultsCache | None = None):
    """Pick a trained unit, a bit width and a step rule; see it requantized at once."""
    if not live():
        return Markdown(STATIC_NOTE.format(what="The explorer",
                                           does="requantizes the chosen nets as you move it"))
    units = rows.drop_duplicates("key")
    options = [(f"{r.family} {r.model}, N = {r.n_samples} ({r.capacity_fraction:g} of "
                f"capacity, {r.recipe} recipe)", r.key) for r in units.itertuples()]
    loaded: dict[str, UnitNets] = {}

    def nets_for(key: str) -> UnitNets:
        if key not in loaded:
            loaded[key] = load_nets(key, cache)
        return loaded[key]

    return _quantizer_controls(options, nets_for)


def first_look(study: QuantizationStudy, device: str = "auto",
               cache: ResultsCache | None = None) -> None:
    """Before the chapter's long run: each model's nets at full capacity in the explorer,
    the chapter's saved ones when there are, else trained on first pick (smallest model
    first, with a progress bar). Displays the controls itself (they must be on screen
    before the first training starts); nothing in a book build."""
    if not live():
        return
    units = first_look_units(study)
    options = [(f"{u.family} {u.spec.name} ({u.spec.n_params:,} parameters), "
                f"{u.definition}", i) for i, u in enumerate(units)]
    got: dict[int, UnitNets] = {}

    def nets_for(i: int) -> UnitNets:
        if i not in got:
            got[i] = unit_nets(study, units[i], device, cache)
        return got[i]

    _quantizer_controls(options, nets_for, show_first=True)


def calculator(table: pd.DataFrame):
    """The bits advisor as a form: family, parameters, samples -> advice with evidence."""
    if not live():
        return Markdown(STATIC_NOTE.format(what="The calculator",
                                           does="answers as you type"))
    family = w.Dropdown(options=["fc", "cnn", "rnn"], description="family")
    params = w.IntText(value=1000, description="parameters")
    samples = w.IntText(value=1000, description="samples")
    out = w.Output()

    def update(_=None) -> None:
        with out:
            out.clear_output(wait=True)
            try:
                print(advise(family.value, params.value, samples.value, table).text())
            except ConfigError as err:
                print(f"cannot advise: {err}")

    for c in (family, params, samples):
        c.observe(update, names="value")
    update()
    return w.VBox([family, params, samples, out])


def display(obj) -> None:
    show(obj)
