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
from typing import Any

from capq_lib.core import validate
from capq_lib.engine.surface import SurfaceConfig
from capq_lib.experiments.channel import MICheck
from capq_lib.experiments.precision import QuantizationStudy
from capq_lib.experiments.realtasks import RealTaskStudy
from capq_lib.experiments.search import (
    CNNCapacityStudy,
    FCDNNCapacityStudy,
    FCDNNCNNRecipeStudy,
    RNNCapacityStudy,
)
from capq_lib.experiments.trained_mi import TrainedMICheck

Namespace = dict[str, Any]
#: parameters every chapter takes (the runner sets them)
COMMON = ("profile", "device")


def _cnn(ns: Namespace) -> list[Any]:
    study = CNNCapacityStudy.from_namespace(ns)
    for f in ns["length_factors"]:
        validate.number("length_factors", f, lo=0.01, hi=100)
    validate.integer("length_seeds", ns["length_seeds"], lo=0)
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
    return [SurfaceConfig(ns["alpha_min"], ns["alpha_max"], ns["points"], ns["directions"])]


def _fill(ns: Namespace) -> list[Any]:
    return [QuantizationStudy.from_namespace(
        {**ns, "fc_models": ns["fill_models"], "cnn_models": [], "rnn_models": []})]


CONFIGURE: dict[str, Callable[[Namespace], list[Any]]] = {
    "intro": lambda ns: [],
    "mutual-information": _mi,
    "fcdnn-capacity": lambda ns: [FCDNNCapacityStudy.from_namespace(ns)],
    "cnn-capacity": _cnn,
    "rnn-capacity": lambda ns: [RNNCapacityStudy.from_namespace(ns)],
    "quantization": lambda ns: [QuantizationStudy.from_namespace(ns)],
    "bits-needed": _fill,
    "real-tasks": lambda ns: [RealTaskStudy.from_namespace(ns)],
    "loss-surfaces": _surfaces,
}


def defaults(parameters: dict[str, dict[str, Any]]) -> Namespace:
    """A notebook's default values from papermill's ``inspect_notebook`` (source text)."""
    out = {}
    for name, spec in parameters.items():
        try:
            out[name] = ast.literal_eval(spec["default"])
        except (ValueError, SyntaxError):
            out[name] = spec["default"]
    return out


def configure(chapter: str, namespace: Namespace) -> list[Any]:
    """The chapter's configuration objects (studies, checks), each validated on creation."""
    if chapter not in CONFIGURE:
        raise validate.ConfigError(f"chapter must be one of {', '.join(CONFIGURE)}; "
                                   f"got {chapter!r}")
    try:
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


def check_parameters(namespace: Namespace) -> None:
    """Refuse parameters that papermill injected but the notebook does not know.

    Papermill (``-p``, ``-y``, ``-f``) only warns about a misspelt name and runs the full
    default study; this looks at the cell papermill injected (it starts with
    ``# Parameters``) and at the cell before it (the notebook's ``parameters`` cell) in the
    kernel's history, and stops before anything is computed. Outside papermill it does
    nothing."""
    history = [str(h) for h in namespace.get("In", [])]
    injected = [i for i, src in enumerate(history) if src.lstrip().startswith("# Parameters")]
    if not injected or injected[-1] == 0:
        return
    i = injected[-1]
    known = set(_assigned(history[i - 1])) | set(COMMON)
    unknown = [n for n in _assigned(history[i]) if n not in known]
    if unknown:
        raise validate.ConfigError(
            f"unknown parameter(s) {', '.join(unknown)}; this notebook's parameters: "
            f"{', '.join(sorted(known))}")
