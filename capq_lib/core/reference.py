"""The paper's reported numbers (data/paper/reference.yaml), each with its figure or table."""

from __future__ import annotations

import functools
from typing import Any

import yaml

from capq_lib.core.paths import BOOK_ROOT

REFERENCE_FILE = BOOK_ROOT / "data" / "paper" / "reference.yaml"


@functools.cache
def paper() -> dict[str, Any]:
    """The whole reference file as nested dicts."""
    return yaml.safe_load(REFERENCE_FILE.read_text())


def value(path: str) -> Any:
    """``value("fcdnn.bits_per_param_mean")`` -> 2.3."""
    return _entry(path)["value"]


def source(path: str) -> str:
    """Where the paper states the value at ``path``."""
    return _entry(path)["source"]


def entry(path: str) -> dict[str, Any]:
    """The whole entry at ``path`` (its value, source and any other fields)."""
    return _entry(path)


def _entry(path: str) -> dict[str, Any]:
    node: Any = paper()
    for part in path.split("."):
        node = node[part]
    return node
