"""The results cache: one JSON file per computed config, written atomically, with provenance.

The key is a hash of the config, so the same config twice is computed once and an
interrupted sweep resumes where it stopped. A record is written only after its
computation succeeded (temp file + rename), so a failure never leaves half an entry.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import os
import platform
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from . import __version__

#: bump when a change in the code makes earlier records wrong
SCHEMA = 1
PROJECT_ROOT = Path(__file__).resolve().parents[1]


def results_dir() -> Path:
    """``$CAPQ_RESULTS_DIR`` if set, else ``data/results`` in the project."""
    return Path(os.environ.get("CAPQ_RESULTS_DIR") or PROJECT_ROOT / "data" / "results")


def config_key(kind: str, config: dict[str, Any]) -> str:
    """A stable hash of (kind, config, schema)."""
    blob = json.dumps({"kind": kind, "config": config, "schema": SCHEMA}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


@functools.cache
def git_commit() -> str | None:
    """The commit of the project checkout, with '+dirty' when tracked files changed."""
    try:
        run = functools.partial(subprocess.run, cwd=PROJECT_ROOT, capture_output=True,
                                text=True, timeout=10, check=True)
        head = run(["git", "rev-parse", "HEAD"]).stdout.strip()
        dirty = run(["git", "status", "--porcelain", "--untracked-files=no"]).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def provenance(device: str, wall_time_s: float) -> dict[str, Any]:
    """Who computed a record, with what, where and when."""
    return {
        "capq_version": __version__,
        "git_commit": git_commit(),
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "device": device,
        "wall_time_s": round(wall_time_s, 3),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


class ResultsCache:
    """Records of kind K live in ``root/K/<key>.json``."""

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root) if root is not None else results_dir()

    def path(self, kind: str, config: dict[str, Any]) -> Path:
        return self.root / kind / f"{config_key(kind, config)}.json"

    def get(self, kind: str, config: dict[str, Any]) -> dict[str, Any] | None:
        path = self.path(kind, config)
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            return None

    def put(self, kind: str, config: dict[str, Any], result: dict[str, Any],
            device: str, wall_time_s: float) -> dict[str, Any]:
        record = {"kind": kind, "key": config_key(kind, config), "config": config,
                  "result": result, "provenance": provenance(device, wall_time_s)}
        path = self.path(kind, config)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump(record, fh, indent=1, sort_keys=True)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return record

    def compute(self, kind: str, config: dict[str, Any], fn: Callable[[], dict[str, Any]],
                device: str) -> tuple[dict[str, Any], bool]:
        """The cached record for ``config``, computing it with ``fn`` on a miss; (record, hit)."""
        record = self.get(kind, config)
        if record is not None:
            return record, True
        start = time.perf_counter()
        result = fn()
        return self.put(kind, config, result, device, time.perf_counter() - start), False

    def records(self, kind: str) -> list[dict[str, Any]]:
        """Every record of ``kind``, oldest first."""
        folder = self.root / kind
        if not folder.is_dir():
            return []
        out = [json.loads(p.read_text()) for p in folder.glob("*.json")]
        return sorted(out, key=lambda r: r["provenance"]["date"])

    def kinds(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir())
