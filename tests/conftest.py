"""Shared fixtures: an empty results cache per test, and one smoke-profile book per session."""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from capq_lib.experiments.results import ResultsCache

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ResultsCache:
    """A fresh cache, also the default one (CAPQ_RESULTS_DIR) for code that makes its own."""
    monkeypatch.setenv("CAPQ_RESULTS_DIR", str(tmp_path / "results"))
    return ResultsCache(tmp_path / "results")


#: offline copies of the real datasets next to the project: the whole MNIST and PTB
#: (``data-full``), or the partial one (``data``: MNIST test set, PTB valid/test)
SHARED_FOLDERS = (ROOT.parent / "shared" / "data-full", ROOT.parent / "shared" / "data")


def shared_data() -> Path:
    """``$CAPQ_TEST_DATA_DIR`` if set, else the first offline copy that has MNIST."""
    if os.environ.get("CAPQ_TEST_DATA_DIR"):
        return Path(os.environ["CAPQ_TEST_DATA_DIR"])
    for folder in SHARED_FOLDERS:
        if (folder / "mnist").is_dir():
            return folder
    return SHARED_FOLDERS[-1]


SHARED_DATA = shared_data()


def offline_data() -> Path:
    """Real datasets for the book's real-task chapters: the offline copy when there is one,
    else small files in the real formats (random digits and words; no MNIST training set
    and no PTB training split, so the stand-ins are exercised) so the smoke book builds."""
    if (SHARED_DATA / "mnist").is_dir():
        return SHARED_DATA
    from capq_lib.nets.realdata import TRUSTED_ENV

    root, listing = _stand_in_data()
    os.environ[TRUSTED_ENV] = str(listing)
    return root


@functools.cache
def _stand_in_data() -> tuple[Path, Path]:
    """The stand-in files and their checksum list, made once per test session and removed
    when it ends."""
    import gzip
    import tempfile

    import numpy as np

    root = Path(tempfile.mkdtemp(prefix="capq-data-"))
    listing = root.with_name(root.name + "-checksums.txt")
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    atexit.register(listing.unlink, missing_ok=True)
    rng = np.random.default_rng(0)
    (root / "mnist").mkdir()
    for name, arr in (("t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (600, 28, 28))),
                      ("t10k-labels-idx1-ubyte.gz", rng.integers(0, 10, 600))):
        head = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big")
                                                    for d in arr.shape)
        with gzip.open(root / "mnist" / name, "wb") as fh:
            fh.write(head + arr.astype(np.uint8).tobytes())
    (root / "ptb").mkdir()
    words = [f"w{i}" for i in range(50)]
    for split in ("valid", "test"):
        lines = [" " + " ".join(rng.choice(words, 12)) + " " for _ in range(400)]
        (root / "ptb" / f"ptb.{split}.txt").write_text("\n".join(lines) + "\n")
    from capq_lib.nets.realdata import md5

    # their digests are not the real datasets': the tests name them explicitly, as a user
    # with a private mirror would, in a checksum file outside the data folder
    files = [p for p in root.rglob("*") if p.is_file()]
    listing.write_text("".join(f"{md5(p)}  {p.relative_to(root)}\n" for p in files))
    return root, listing


def run_capq(*args: str, results: Path, cwd: Path = ROOT, timeout: int = 900):
    """Run the installed ``capq`` command with its own results folder."""
    data = os.environ.get("CAPQ_DATA_DIR") or str(offline_data())  # may name its checksums
    env = {**os.environ, "CAPQ_RESULTS_DIR": str(results), "CAPQ_DATA_DIR": data}
    exe = Path(sys.executable).parent / "capq"
    return subprocess.run([str(exe), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="session")
def smoke_book(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The smoke-profile book, built once into a temporary folder; returns that folder."""
    out = tmp_path_factory.mktemp("book")
    # two chapters at a time: the parallel runner is what the whole test book goes through
    proc = run_capq("build", "--profile", "smoke", "--device", "cpu", "--output", str(out),
                    "--jobs", "2", results=out / "results")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out
