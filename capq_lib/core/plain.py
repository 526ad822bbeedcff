"""Plain values only: what a profile, a papermill parameter file or a cache record may hold.

A profile comes from someone else as often as from its user, and papermill turns every
parameter into code (a ``bytes`` value, which YAML's ``!!binary`` makes, is written into the
notebook unescaped). So a value that crosses into a notebook is text, a number, a boolean,
null, or a list or mapping of those (mapping keys are text), checked all the way down, with
bounds on size and nesting; YAML's aliases (which make self-references and billion-laughs
expansions) and every tag that builds anything else are refused before the value is built.
"""

from __future__ import annotations

import math
from typing import Any

import yaml

from capq_lib.core.validate import ConfigError

#: bounds on a parameter file: bytes of text, nesting depth, values in all
MAX_BYTES = 1 << 20
MAX_DEPTH = 16
MAX_NODES = 100_000
#: the types a plain value is built from
SCALARS = (str, bool, int, float, type(None))
#: YAML tags that build plain values (the core schema); anything else is refused
PLAIN_TAGS = {f"tag:yaml.org,2002:{t}" for t in
              ("str", "int", "float", "bool", "null", "seq", "map")}


def _label(where: str, key: str) -> str:
    return f"{where}: {key}" if where and key else where or key


def check(value: Any, key: str = "", where: str = "", depth: int = 0) -> Any:
    """``value`` if it is plain all the way down; else a ConfigError naming ``where`` (a
    file) and the key under it (a dotted path from ``key``) and what is allowed."""
    name = _label(where, key)
    if depth > MAX_DEPTH:
        raise ConfigError(f"{name}: nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    if isinstance(value, SCALARS):
        return value
    if isinstance(value, list):
        for i, v in enumerate(value):
            check(v, f"{key}[{i}]", where, depth + 1)
        return value
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise ConfigError(f"{name}: keys must be text, got {k!r}")
            check(v, f"{key}.{k}".lstrip("."), where, depth + 1)
        return value
    raise ConfigError(f"{name} must be text, a number, true/false, null, or a list or mapping "
                      f"of those; got a value of type {type(value).__name__}")


def _scan(text: str, where: str) -> None:
    """Refuse aliases, anchors, foreign tags, deep nesting and too many values, reading the
    YAML as events (nothing is built yet, so no value can be expanded or executed); an
    error names the key it found under."""
    frames: list[dict[str, Any]] = []  # open mappings and lists, with the key or index now
    nodes = 0

    def here() -> str:
        out = ""
        for f in frames:
            if f["map"] and f["key"] is not None:
                out += f".{f['key']}"
            elif not f["map"]:
                out += f"[{f['i']}]"
        return _label(where, out.lstrip("."))

    def done() -> None:  # the value of the innermost open mapping or list is complete
        if frames:
            frames[-1]["key" if frames[-1]["map"] else "i"] = (
                None if frames[-1]["map"] else frames[-1]["i"] + 1)

    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.CollectionEndEvent):
                frames.pop()
                done()
                continue
            if not isinstance(event, yaml.NodeEvent):
                continue
            nodes += 1
            line = event.start_mark.line + 1
            if nodes > MAX_NODES:
                raise ConfigError(f"{where}: more than {MAX_NODES:,} values")
            top = frames[-1] if frames else None
            is_key = top is not None and top["map"] and top["key"] is None
            name = f"{here()} (a key)" if is_key else here()
            if isinstance(event, yaml.AliasEvent) or event.anchor is not None:
                raise ConfigError(f"{name}: YAML anchors and aliases (&, *) are not allowed "
                                  f"in a parameter file (line {line}); write each value out")
            tag = getattr(event, "tag", None)
            if tag not in (None, "!") and tag not in PLAIN_TAGS:
                raise ConfigError(f"{name}: the tag {tag} (line {line}) is not allowed; "
                                  f"values are text, numbers, true/false, null, lists and "
                                  f"mappings")
            if is_key:
                if not isinstance(event, yaml.ScalarEvent):
                    raise ConfigError(f"{name}: keys must be text (line {line})")
                top["key"] = event.value
            elif isinstance(event, yaml.ScalarEvent):
                done()
            else:
                if len(frames) >= MAX_DEPTH:
                    raise ConfigError(f"{name}: nested deeper than {MAX_DEPTH} levels "
                                      f"(line {line})")
                frames.append({"map": isinstance(event, yaml.MappingStartEvent), "key": None,
                               "i": 0})
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{where} is not valid YAML{at}: {what}") from None


def load_yaml(data: str | bytes, where: str) -> Any:
    """Parse a parameter file's text into plain values, or a one-line ConfigError that
    names ``where`` (the file) and, for a value of the wrong kind, its key."""
    if len(data) > MAX_BYTES:
        raise ConfigError(f"{where} is larger than {MAX_BYTES // 1024} KiB; is it the right "
                          f"file?")
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError:
            raise ConfigError(f"{where} is not text (UTF-8 YAML); is it the right file?"
                              ) from None
    if "\x00" in data:
        raise ConfigError(f"{where} is not text (UTF-8 YAML); is it the right file?")
    _scan(data, where)
    try:
        value = yaml.safe_load(data)
    except yaml.YAMLError as err:  # the scan parsed it; kept for safety
        raise ConfigError(f"{where} is not valid YAML: {str(err).splitlines()[0]}") from None
    except RecursionError:
        raise ConfigError(f"{where}: nested too deeply") from None
    return check(value, where=where)
