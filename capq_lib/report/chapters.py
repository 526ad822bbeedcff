"""Each chapter's configuration, built from its parameters before anything is computed.

``capq build`` calls :func:`configure` for every chapter with the profile's values over the
notebook's defaults, so a bad value (a negative epoch count, an unknown model, a string
where a list belongs) stops the build at once with the chapter and parameter named, not
inside a notebook hours into a run. The same constructors build the studies in the notebooks.
:func:`check_parameters` is the notebooks' own guard when papermill runs them directly.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path
from typing import Any

import papermill
from IPython import get_ipython

from capq_lib.core import plain, validate
from capq_lib.core.devices import resolve_device
from capq_lib.core.paths import BOOK_ROOT
from capq_lib.engine.quantize import check_bits
from capq_lib.engine.surface import SurfaceConfig
from capq_lib.experiments.at_capacity import AtCapacity
from capq_lib.experiments.channel import MICheck
from capq_lib.experiments.lm_capacity import LMCapacityStudy
from capq_lib.experiments.precision import QuantizationStudy
from capq_lib.experiments.realtasks import CIFAR_SIZES, RealTaskStudy
from capq_lib.experiments.search import (
    CNNCapacityStudy,
    FCDNNCapacityStudy,
    FCDNNCNNRecipeStudy,
    RNNCapacityStudy,
    TransformerCapacityStudy,
)
from capq_lib.experiments.storage import check_url
from capq_lib.experiments.trained_mi import TrainedMICheck
from capq_lib.report import profiles

Namespace = dict[str, Any]
#: parameters every chapter takes (the runner sets them)
COMMON = ("profile", "device")


def _storage(ns: Namespace) -> None:
    if ns["storage"] is not None:
        check_url(ns["storage"])


def _lengths(ns: Namespace) -> None:
    for f in validate.non_empty("length_factors", ns["length_factors"]):
        validate.number("length_factors", f, lo=0.01, hi=100)
    validate.integer("length_seeds", ns["length_seeds"], lo=0)


def _fcdnn(ns: Namespace) -> list[Any]:
    study = FCDNNCapacityStudy.from_namespace(ns)
    _storage(ns)
    _lengths(ns)
    validate.choice("fig1a_depth", ns["fig1a_depth"], study.depths)
    validate.choice("fig1b_width", ns["fig1b_width"], study.widths)
    validate.choice("fig2a_model", ns["fig2a_model"], [s.name for s in study.specs()])
    return [study]


def _rnn(ns: Namespace) -> list[Any]:
    study = RNNCapacityStudy.from_namespace(ns)
    _storage(ns)
    _lengths(ns)
    validate.choice("fig_units", ns["fig_units"], study.units)
    return [study]


def _cnn(ns: Namespace) -> list[Any]:
    study = CNNCapacityStudy.from_namespace(ns)
    _storage(ns)
    _lengths(ns)
    return [study, FCDNNCNNRecipeStudy.like(study, ns["equal_effort_widths"], [1],
                                            ns["equal_effort_n_per_param"])]


def _mi(ns: Namespace) -> list[Any]:
    return [MICheck(n_samples=ns["n_samples"], accuracies=ns["accuracies"],
                    repeats=ns["repeats"], seed=ns["seed"], profile=ns["profile"]),
            TrainedMICheck(models=ns["trained_models"], n_per_param=ns["trained_n_per_param"],
                           seeds=ns["trained_seeds"], epochs=ns["trained_epochs"],
                           tolerance=ns["gap_tolerance"], seed=ns["seed"],
                           profile=ns["profile"])]


def _surfaces(ns: Namespace) -> list[Any]:
    validate.integer("samples", ns["samples"], lo=2)
    validate.number("within", ns["within"], lo=0)
    for size in validate.non_empty("cnn_models", ns["cnn_models"]):
        validate.choice("cnn_models", size, CIFAR_SIZES)
    for units in validate.non_empty("lm_models", ns["lm_models"]):
        validate.integer("lm_models", units, lo=1, hi=8192)
    for width in validate.non_empty("widths", ns["widths"]):
        if width != "float":
            if not (isinstance(width, str) and width.isdigit()):
                raise validate.ConfigError(f"widths must be 'float' or a bit width as text "
                                           f"('8', '4', ...); got {width!r}")
            check_bits(int(width))
    return [SurfaceConfig(ns["alpha_min"], ns["alpha_max"], ns["points"], ns["directions"])]


def _fill(ns: Namespace) -> list[Any]:
    return [QuantizationStudy.from_namespace(
        {**{k: ns[k] for k in ns}, "fc_models": ns["fill_models"], "cnn_models": [],
         "rnn_models": []})]


def _transformer(ns: Namespace) -> list[Any]:
    """The transformer chapter: the classifier's capacity search (the LSTM chapter's
    parameters, plus ``heads``), the LM measure (``lm_*``) and the classifier's
    quantization at capacity (``quant_*``); the notebook takes its studies from here."""
    study = TransformerCapacityStudy.from_namespace(ns)
    _storage(ns)
    _lengths(ns)
    lm = LMCapacityStudy(
        profile=ns["profile"], models=ns["lm_models"], heads=ns["lm_heads"],
        vocab=ns["lm_vocab"], seq_len=ns["lm_seq_len"], shapes=ns["lm_shapes"],
        entropy_fractions=ns["lm_entropy_fractions"], seeds=ns["lm_seeds"],
        steps=ns["lm_steps"], batch=ns["lm_batch"], lr=ns["lm_lr"],
        bf16_models=ns["lm_bf16_models"], bits=ns["bits"],
        retrain_steps=ns["lm_retrain_steps"])
    quant = AtCapacity(profile=ns["profile"], seeds=ns["quant_seeds"], bits=ns["bits"],
                       retrain_epochs=ns["quant_retrain_epochs"],
                       lossless_tolerance=ns["lossless_tolerance"])
    return [study, lm, quant]


CONFIGURE: dict[str, Callable[[Namespace], list[Any]]] = {
    "intro": lambda ns: [],
    "mutual-information": _mi,
    "fcdnn-capacity": _fcdnn,
    "cnn-capacity": _cnn,
    "rnn-capacity": _rnn,
    "transformer-capacity": _transformer,
    "quantization": lambda ns: [QuantizationStudy.from_namespace(ns)],
    "bits-needed": _fill,
    "real-tasks": lambda ns: [RealTaskStudy.from_namespace(ns)],
    "loss-surfaces": _surfaces,
}


def notebook_defaults(path: Path) -> Namespace:
    """Names and default values of the notebook's cell tagged ``parameters``."""
    return defaults(papermill.inspect_notebook(str(path)))


def defaults(parameters: dict[str, dict[str, Any]]) -> Namespace:
    """A notebook's default values from papermill's ``inspect_notebook`` (source text)."""
    out = {}
    for name, spec in parameters.items():
        try:
            out[name] = ast.literal_eval(spec["default"])
        except (ValueError, SyntaxError):
            out[name] = spec["default"]
    return out


class Reads(dict):
    """A namespace that remembers which names were read: a parameter that a chapter's
    configuration never reads is a parameter nobody checks (a test keeps that list empty)."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.read: set[str] = set()

    def __getitem__(self, key: str) -> Any:
        self.read.add(key)
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        self.read.add(key)
        return super().get(key, default)


def configure(chapter: str, namespace: Namespace) -> list[Any]:
    """The chapter's configuration objects (studies, checks), each validated on creation,
    after the parameters every chapter takes (``device``, ``profile``)."""
    if chapter not in CONFIGURE:
        raise validate.ConfigError(f"chapter must be one of {', '.join(CONFIGURE)}; "
                                   f"got {chapter!r}")
    try:
        resolve_device(namespace["device"])
        if not isinstance(namespace["profile"], str) or not namespace["profile"]:
            raise validate.ConfigError(f"profile must be a non-empty text (a label for the "
                                       f"records), got {namespace['profile']!r}")
        return CONFIGURE[chapter](namespace)
    except KeyError as err:
        raise validate.ConfigError(f"chapter {chapter}: parameter {err} is missing") from None
    except (TypeError, ValueError) as err:
        raise validate.ConfigError(f"chapter {chapter}: {err}") from None


def _assigned(source: str) -> list[str]:
    """Names a cell assigns at top level, in order."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    return [t.id for node in tree.body if isinstance(node, ast.Assign | ast.AnnAssign)
            for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
            if isinstance(t, ast.Name)]


def check_parameters(namespace: Namespace, chapter: str | None = None) -> None:
    """A notebook's guard, before it computes anything: refuse parameters that papermill
    injected but the notebook does not know, then build ``chapter``'s configuration from
    the namespace, so that a bad value (or ``device="cuda"`` on a machine without one) stops
    the notebook at once, as ``capq build`` would have stopped before running it.

    Papermill (``-p``, ``-y``, ``-f``) only warns about a misspelt name and runs the full
    default study; this looks at the cell papermill injected (it starts with
    ``# Parameters``) and at the cell before it (the notebook's ``parameters`` cell) in the
    kernel's history."""
    history = [str(h) for h in namespace.get("In", [])]
    injected = [i for i, src in enumerate(history) if src.lstrip().startswith(INJECTED)]
    if injected and injected[-1] > 0:
        i = injected[-1]
        known = set(_assigned(history[i - 1])) | set(COMMON)
        unknown = [n for n in _assigned(history[i]) if n not in known]
        if unknown:
            raise validate.ConfigError(
                f"unknown parameter(s) {', '.join(unknown)}; this notebook's parameters: "
                f"{', '.join(sorted(known))}")
    if chapter is not None:
        resolve_profile(namespace, chapter)
        configure(chapter, namespace)


def resolve_profile(namespace: Namespace, chapter: str) -> None:
    """A notebook run by hand says ``profile = "quick"`` (a shipped profile's name, and its
    defaults are that profile's values): its records then carry the profile's identity
    ``NAME@DIGEST``, so a reader who runs it gets the page's numbers from the cache. Once a
    value differs from the profile's, the records are labelled "notebook" instead, so an
    edited run never mixes with the profile's."""
    label = namespace.get("profile")
    if not isinstance(label, str) or "@" in label or label not in profiles.available():
        return
    prof = profiles.load(label)
    expected = {**notebook_defaults(BOOK_ROOT / "book" / f"{chapter}.ipynb"),
                **prof.chapters.get(chapter, {})}
    changed = sorted(k for k, v in expected.items()
                     if k not in COMMON and k in namespace and namespace[k] != v)
    namespace["profile"] = "notebook" if changed else prof.identity
    if changed:
        print(f"capq: {', '.join(changed)} differ from profile {label!r}: this run's records "
              f"are labelled 'notebook'")


#: how papermill's injected cell starts (papermill writes this comment first)
INJECTED = "# Parameters"


def injected_problem(source: str) -> str | None:
    """What is wrong with papermill's injected cell, or None when it only assigns plain
    values (text, numbers, booleans, None, lists and dicts of those) to names.

    Papermill writes each parameter into the notebook as code, and a value it does not
    expect (``bytes``, which YAML's ``!!binary`` makes) is written unescaped, so a parameter
    file could carry code into the kernel. Read as Python, such a cell is no longer a list of
    literal assignments, which is what this checks."""
    try:
        tree = ast.parse(source)
    except SyntaxError as err:
        return f"papermill's parameter cell is not valid Python (line {err.lineno})"
    for node in tree.body:
        target = node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 \
            else None
        if not isinstance(target, ast.Name):
            return (f"papermill's parameter cell holds a statement that assigns no parameter "
                    f"(line {node.lineno})")
        try:
            value = ast.literal_eval(node.value)
            plain.check(value, target.id)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            return (f"parameter {target.id}: papermill wrote code, not a value, into the "
                    f"notebook (a parameter file with a !!binary or other non-plain value?); "
                    f"nothing was run; allowed values: text, numbers, true/false, null, lists "
                    f"and mappings")
        except validate.ConfigError as err:
            return f"parameter {err}"
    return None


def _guard(lines: list[str]) -> list[str]:
    """An IPython input transformer: papermill's injected cell runs only if it holds values
    alone; otherwise it is replaced by a cell that raises, naming the parameter."""
    if not lines or not lines[0].startswith(INJECTED):
        return lines
    problem = injected_problem("".join(lines))
    if problem is None:
        return lines
    return ["from capq_lib.core.validate import ConfigError\n",
            f"raise ConfigError({problem!r})\n"]


def guard_injected_parameters() -> None:
    """Check papermill's injected cell before it runs (not after, when its code would have
    run already): every notebook calls this in a hidden cell before its parameters."""
    shell = get_ipython()
    if shell is None:  # not in IPython: nothing can be injected
        return
    cleanup = shell.input_transformers_cleanup
    if _guard not in cleanup:
        cleanup.insert(0, _guard)
