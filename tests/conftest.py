"""Shared fixtures: an empty results cache per test, and one smoke-profile book per session."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from capq_lib.results import ResultsCache

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ResultsCache:
    """A fresh cache, also the default one (CAPQ_RESULTS_DIR) for code that makes its own."""
    monkeypatch.setenv("CAPQ_RESULTS_DIR", str(tmp_path / "results"))
    return ResultsCache(tmp_path / "results")


def run_capq(*args: str, results: Path, cwd: Path = ROOT, timeout: int = 900):
    """Run the installed ``capq`` command with its own results folder."""
    env = {**os.environ, "CAPQ_RESULTS_DIR": str(results)}
    exe = Path(sys.executable).parent / "capq"
    return subprocess.run([str(exe), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="session")
def smoke_book(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The smoke-profile book, built once into a temporary folder; returns that folder."""
    out = tmp_path_factory.mktemp("book")
    proc = run_capq("build", "--profile", "smoke", "--device", "cpu", "--output", str(out),
                    results=out / "results")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out
