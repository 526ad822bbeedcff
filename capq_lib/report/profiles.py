"""Profiles: named parameter sets (book/profiles/*.yaml) that papermill injects into chapters.

A profile file looks like::

    description: what this profile is for
    timeout_s: 1800           # papermill's per-cell execution timeout
    chapters:
      fcdnn-capacity:         # a notebook of the book, by file stem
        widths: [16, 32]      # a name from that notebook's `parameters` cell

Every chapter and parameter name is checked against the notebooks before anything runs.
A profile is known by its content, not its file name: its identity ``NAME@DIGEST`` (a hash of
its parameters) labels every record made with it, so records of two different files named
``smoke.yaml``, or of a profile before and after an edit, never mix in one figure.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from capq_lib.core import plain
from capq_lib.core.paths import BOOK_ROOT
from capq_lib.core.validate import ConfigError

PROFILE_DIR = BOOK_ROOT / "book" / "profiles"
#: parameters every chapter takes; the runner sets them
COMMON_PARAMETERS = ("profile", "device")


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    timeout_s: int
    chapters: dict[str, dict[str, Any]] = field(default_factory=dict)
    path: Path | None = None

    @property
    def digest(self) -> str:
        """A hash of the parameters (what decides the results; not the description)."""
        blob = json.dumps(self.chapters, sort_keys=True, default=repr)
        return hashlib.sha256(blob.encode()).hexdigest()[:10]

    @property
    def identity(self) -> str:
        """``NAME@DIGEST``: the label of every record made under this profile."""
        return f"{self.name}@{self.digest}"

    def parameters(self, chapter: str, device: str) -> dict[str, Any]:
        """What papermill injects into ``chapter``: the profile's values plus profile/device."""
        return {**self.chapters.get(chapter, {}), "profile": self.identity, "device": device}


def available() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))


def load(name_or_path: str) -> Profile:
    """Load a profile by name (book/profiles/NAME.yaml) or by path, checking its shape. A
    name with a path separator (or a leading dot) is a path, never a name: ``../x`` does not
    reach outside the profiles folder."""
    path = Path(name_or_path)
    as_path = (path.suffix in (".yaml", ".yml") or "/" in name_or_path
               or os.sep in name_or_path or name_or_path.startswith("."))
    if not as_path:
        path = PROFILE_DIR / f"{name_or_path}.yaml"
        if not name_or_path or not path.is_file():
            raise ConfigError(f"profile must be one of {', '.join(available())} "
                              f"(or a path to a .yaml file); got {name_or_path!r}")
    elif path.suffix not in (".yaml", ".yml"):
        raise ConfigError(f"profile {name_or_path!r} is a path (it has a separator) but not "
                          f"a .yaml file; give a profile name ({', '.join(available())}) or "
                          f"a path ending in .yaml")
    elif not path.is_file():
        raise ConfigError(f"profile file {str(path)!r} does not exist")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ConfigError(f"profile file {path} cannot be read: {err.strerror}") from None
    raw = plain.load_yaml(data, f"profile file {path}")
    where = f"profile file {path}"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: must be a mapping with keys description, timeout_s, "
                          f"chapters; got {type(raw).__name__}")
    unknown = set(raw) - {"description", "timeout_s", "chapters"}
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: "
                          f"description, timeout_s, chapters")
    timeout = raw.get("timeout_s", 1800)
    if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout < 1:
        raise ConfigError(f"{where}: timeout_s must be an integer >= 1 (seconds); "
                          f"got {timeout!r}")
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise ConfigError(f"{where}: description must be text; got {description!r}")
    chapters = raw.get("chapters", {})
    if chapters is None:
        chapters = {}
    if not isinstance(chapters, dict):
        raise ConfigError(f"{where}: chapters must map chapter names to parameter mappings; "
                          f"got {chapters!r}")
    for chapter, params in chapters.items():
        if params is None:
            chapters[chapter] = {}
        elif not isinstance(params, dict):
            raise ConfigError(f"{where}: chapters.{chapter} must be a mapping of parameter "
                              f"names to values; got {type(params).__name__}")
        for key in chapters[chapter]:
            if key in COMMON_PARAMETERS:
                raise ConfigError(f"{where}: chapters.{chapter}.{key} is set by the runner "
                                  f"(--{key}), not by a profile")
    return Profile(path.stem, description, timeout, chapters, path)


def check_against(profile: Profile, notebook_parameters: dict[str, set[str]]) -> None:
    """Refuse chapters or parameter names that the notebooks do not have."""
    for chapter, params in profile.chapters.items():
        if chapter not in notebook_parameters:
            raise ConfigError(
                f"profile file {profile.path}: chapter {chapter!r} is not in the book; "
                f"chapters: {', '.join(sorted(notebook_parameters))}")
        unknown = set(params) - notebook_parameters[chapter]
        if unknown:
            raise ConfigError(
                f"profile file {profile.path}: chapters.{chapter} sets unknown parameter(s) "
                f"{sorted(unknown)}; that notebook's parameters: "
                f"{', '.join(sorted(notebook_parameters[chapter]))}")
