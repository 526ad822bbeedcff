"""The results cache: one JSON file per computed config, written atomically, with provenance.

The key is a hash of the config, so the same config twice is computed once and an
interrupted sweep resumes where it stopped. A record is written only after its
computation succeeded (temp file + rename), so a failure never leaves half an entry. Reading
trusts nothing: temporary files are never read, a record that does not parse or does not
match its file name is moved aside to ``quarantine/`` (kept, with a one-line warning) and
counts as a miss, so its computation is redone; a record with saved nets (a ``.pt`` file) is
complete only while that file is there with the digest the record names.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from capq_lib import __version__
from capq_lib.core.digests import file_digest
from capq_lib.core.paths import CHECKOUT, PROJECT_ROOT, workspace
from capq_lib.core.validate import ConfigError

#: bump when a change in the code makes earlier records wrong
SCHEMA = 1


class CacheWarning(UserWarning):
    """A cache file was unreadable and has been moved aside."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: records are made readable as any other file the user creates (mkstemp makes them 0600)
FILE_MODE = 0o666 & ~_umask()
REQUIRED = ("kind", "key", "config", "result", "provenance")
#: the folder of the notes saying which profiles use a record they did not make
LABELS = "labels"


def sha256(path: Path) -> str:
    return file_digest(path, "sha256")


def write_atomic(path: Path, write: Callable[[Any], None], binary: bool = False) -> Path:
    """Write ``path`` through a temporary file in its folder and a rename, so that a reader
    (or a crash) never sees half a file; ``write(fh)`` fills the open file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb" if binary else "w") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def results_dir() -> Path:
    """``$CAPQ_RESULTS_DIR`` if set, else ``data/results`` in the project."""
    return Path(os.environ.get("CAPQ_RESULTS_DIR") or workspace() / "results").absolute()


def config_key(kind: str, config: dict[str, Any]) -> str:
    """A stable hash of (kind, config, schema)."""
    blob = json.dumps({"kind": kind, "config": config, "schema": SCHEMA}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


@functools.cache
def git_commit() -> str | None:
    """The commit of the project checkout, with '+dirty' when tracked files changed (None
    for an installed package: its version says what it is)."""
    if not CHECKOUT:
        return None
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


def well_formed(record: Any, path: Path) -> bool:
    """Whether ``record`` (read from ``path``) has a record's shape: the required keys, kind
    and key from its place, a key that is the hash of its own configuration, a result that
    is a mapping whose ``rows`` (when there) are a list of mappings."""
    if not isinstance(record, dict) or any(k not in record for k in REQUIRED):
        return False
    result, config = record["result"], record["config"]
    if (record["kind"] != path.parent.name or record["key"] != path.stem
            or not isinstance(result, dict) or not isinstance(record["provenance"], dict)
            or not isinstance(config, dict)):
        return False
    if config_key(record["kind"], config) != record["key"]:
        return False
    rows = result.get("rows")
    if rows is not None and not (isinstance(rows, list)
                                 and all(isinstance(r, dict) for r in rows)):
        return False
    label = result.get("profile")
    return label is None or isinstance(label, str)


def refuse_link_out(path: Path, root: Path) -> None:
    """Refuse to write into ``path`` (or a folder above it, up to ``root``) when it is a
    symbolic link that leads out of ``root``: a link planted in the results folder must not
    send records, nets or moved files elsewhere."""
    root, path = Path(root).absolute(), Path(path).absolute()
    if not path.is_relative_to(root):
        return
    root_real = root.resolve()
    probe = path
    while probe != root and probe.parent != probe:
        if probe.is_symlink() and not probe.resolve().is_relative_to(root_real):
            raise CacheError(f"{probe} is a symbolic link to {probe.resolve()}, outside the "
                             f"results folder {root}; refusing to write through it (remove "
                             f"the link)")
        probe = probe.parent


class CacheError(ConfigError):
    """The cache cannot be written where it should be (a link out of it, a full disk)."""


class ResultsCache:
    """Records of kind K live in ``root/K/<key>.json``; saved nets in ``root/nets/<key>.pt``;
    which profiles use a record they did not make, in ``root/labels/K/``."""

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root).absolute() if root is not None else results_dir()
        self._skipped: set[Path] = set()

    def path(self, kind: str, config: dict[str, Any]) -> Path:
        return self.root / kind / f"{config_key(kind, config)}.json"

    def artifact_path(self, key: str) -> Path:
        return self.root / "nets" / f"{key}.pt"

    def quarantine(self, path: Path, why: str) -> None:
        """Move an unreadable file to ``root/quarantine/`` (never delete it) and say so; where
        it cannot be moved (a read-only folder, ``quarantine`` not a folder), leave it and say
        that it is skipped. Either way it counts as a miss."""
        dest = self.root / "quarantine" / path.parent.name / (
            f"{path.name}.{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%S%f}")
        try:
            refuse_link_out(dest.parent, self.root)
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, dest)
        except FileNotFoundError:  # another reader moved it first
            return
        except (OSError, ValueError) as err:
            if path in self._skipped:
                return
            self._skipped.add(path)
            warnings.warn(f"capq: {path} {why}; it could not be moved aside ({err}), so it is "
                          f"skipped (and computed again where it is needed)",
                          CacheWarning, stacklevel=3)
            return
        warnings.warn(f"capq: {path} {why}; moved to {dest} and computed again",
                      CacheWarning, stacklevel=3)

    def _read(self, path: Path) -> dict[str, Any] | None:
        """The record in ``path``, or None (missing, or unreadable and moved aside). Whatever
        is found is untrusted until it has a record's shape: the keys, a name that is the
        hash of its own configuration, a result whose rows are a list of mappings."""
        try:
            if path.is_symlink():
                raise ValueError("is a symbolic link")
            record = json.loads(path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError, RecursionError) as err:  # a folder, a link, bad JSON
            self.quarantine(path, f"is not a complete record ({type(err).__name__}: "
                                  f"{str(err)[:120]})")
            return None
        if not well_formed(record, path):
            self.quarantine(path, "is not a record of this cache (keys, name or shape do not "
                                  "match)")
            return None
        return record

    def artifact_ok(self, record: dict[str, Any]) -> bool:
        """Whether the saved nets a record points to are there, unchanged."""
        art = record.get("artifact")
        if art is None:
            return True
        path = self.artifact_path(record["key"])
        return path.is_file() and (art.get("sha256") is None or sha256(path) == art["sha256"])

    def get(self, kind: str, config: dict[str, Any]) -> dict[str, Any] | None:
        record = self._read(self.path(kind, config))
        if record is not None and not self.artifact_ok(record):
            return None  # its nets are lost: a miss, recomputed (and the nets saved again)
        return record

    def put(self, kind: str, config: dict[str, Any], result: dict[str, Any],
            device: str, wall_time_s: float, artifact: Any = None) -> dict[str, Any]:
        """Store a record; ``artifact`` (e.g. state dicts) is saved first, beside it."""
        key = config_key(kind, config)
        record = {"kind": kind, "key": key, "config": config,
                  "result": result, "provenance": provenance(device, wall_time_s)}
        if artifact is not None:
            saved = self._write(self.artifact_path(key),
                                lambda fh: torch.save(artifact, fh), binary=True)
            record["artifact"] = {"file": f"nets/{key}.pt", "sha256": sha256(saved)}
        self._write(self.path(kind, config),
                    lambda fh: json.dump(record, fh, indent=1, sort_keys=True))
        return record

    def _write(self, path: Path, write: Callable[[Any], None], binary: bool = False) -> Path:
        """``write_atomic`` inside the results folder: never through a link that leads out
        of it, and a failed write (a full disk) is one clear error naming the file."""
        refuse_link_out(path, self.root)
        try:
            return write_atomic(path, write, binary)
        except (OSError, RuntimeError) as err:  # torch reports a short write as RuntimeError
            try:
                free = f"{shutil.disk_usage(path.parent).free / 2**20:,.0f} MiB free there"
            except OSError:
                free = "its folder cannot be read"
            raise CacheError(f"could not write {path} ({type(err).__name__}: "
                             f"{str(err).strip()[:100]}; {free}): nothing was kept; free some "
                             f"space or set CAPQ_RESULTS_DIR to another folder, then run "
                             f"again") from None

    def compute(self, kind: str, config: dict[str, Any], fn: Callable[[], Any],
                device: str, artifact: bool = False, label: str | None = None
                ) -> tuple[dict[str, Any], bool]:
        """The cached record for ``config``, computing it with ``fn`` on a miss; (record, hit).
        With ``artifact``, ``fn`` returns (result, nets) and the nets are part of the record.
        ``label`` (a profile identity) is noted as a user of the record, so that a profile
        that reuses a record another profile made finds it as its own."""
        record = self.get(kind, config)
        hit = record is not None
        if record is None:
            start = time.perf_counter()
            out = fn()
            result, nets = out if artifact else (out, None)
            record = self.put(kind, config, result, device, time.perf_counter() - start, nets)
        if label is not None:
            self.label(record, label)
        return record, hit

    def label(self, record: dict[str, Any], label: str) -> None:
        """Note that profile ``label`` uses ``record`` (nothing to note when it made it):
        one small file per (record, profile), made once, never rewritten."""
        if record["result"].get("profile") == label:
            return
        path = self._label_path(record["kind"], record["key"], label)
        if not path.is_file():
            self._write(path, lambda fh: fh.write(label))

    def _label_path(self, kind: str, key: str, label: str) -> Path:
        digest = hashlib.sha256(label.encode()).hexdigest()[:12]
        return self.root / LABELS / kind / f"{key}.{digest}"

    def uses(self, kind: str) -> dict[str, set[str]]:
        """Per record key of ``kind``: the profiles that use it without having made it.
        A label file that is not what ``label`` writes is ignored."""
        folder = self.root / LABELS / kind
        out: dict[str, set[str]] = {}
        if not folder.is_dir() or folder.is_symlink():
            return out
        for path in folder.iterdir():
            key = path.name.split(".", 1)[0]
            try:
                if path.is_symlink() or path.stat().st_size > 512:
                    continue
                label = path.read_text()
            except (OSError, UnicodeDecodeError):
                continue
            if path == self._label_path(kind, key, label):
                out.setdefault(key, set()).add(label)
        return out

    def load_artifact(self, kind: str, key: str, rebuild_hint: str) -> Any:
        """The saved nets of record ``key`` of ``kind``, verified against the digest the
        record names before they are loaded."""
        path = self.artifact_path(key)
        record = self._read(self.root / kind / f"{key}.json")
        if record is None or not path.is_file():
            raise FileNotFoundError(f"no saved nets for {kind} record {key}: {rebuild_hint}")
        if not self.artifact_ok(record):
            raise ValueError(f"{path} does not match the digest its record names: "
                             f"{rebuild_hint}")
        try:
            return torch.load(path, weights_only=True)
        except Exception as err:  # noqa: BLE001 - torch raises many kinds for a bad file
            raise ValueError(f"{path} (the saved nets of {kind} record {key}) cannot be "
                             f"loaded ({type(err).__name__}: {str(err).strip()[:100]}): "
                             f"{rebuild_hint}") from None

    def records(self, kind: str) -> list[dict[str, Any]]:
        """Every complete record of ``kind``, oldest first (temporary files are skipped,
        unreadable ones moved aside)."""
        folder = self.root / kind
        if not folder.is_dir():
            return []
        out = [r for p in sorted(folder.glob("*.json")) if not p.name.startswith(".")
               if (r := self._read(p)) is not None]
        return sorted(out, key=lambda r: str(r["provenance"].get("date", "")))

    def kinds(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir()
                      if p.is_dir() and p.name not in ("nets", "quarantine", LABELS))
