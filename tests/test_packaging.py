"""Installing and launching the book as its readers do: a regular pip install, the Colab
cell, the dependency lists, the dataset fetcher."""

import hashlib
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import tomllib
import yaml

from capq_lib.nets import realdata

from .conftest import ROOT, offline_data, run_capq

#: conda package names that differ from PyPI's
CONDA_TO_PYPI = {"pytorch": "torch"}


def requirement_name(req: str) -> str:
    return re.split(r"[\s<>=!\[;@]", req.strip(), maxsplit=1)[0].lower()


def test_environment_yml_lists_what_pyproject_lists():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {requirement_name(r) for r in project["dependencies"] +
              project["optional-dependencies"]["dev"]}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())["dependencies"]
    names = set()
    for dep in env:
        for item in (dep["pip"] if isinstance(dep, dict) else [dep]):
            name = requirement_name(item)
            if name not in ("python", "pip", "-e"):
                names.add(CONDA_TO_PYPI.get(name, name))
    assert names == wanted, (sorted(wanted - names), sorted(names - wanted))


def colab_cell() -> str:
    import nbformat

    nb = nbformat.read(ROOT / "book" / "fcdnn-capacity.ipynb", as_version=4)
    cells = [c for c in nb.cells if "capq-install" in c.metadata.get("tags", [])]
    assert len(cells) == 1
    return cells[0].source


def test_every_notebook_starts_with_the_same_install_cell():
    import nbformat

    src = colab_cell()
    for nb_path in (ROOT / "book").glob("*.ipynb"):
        nb = nbformat.read(nb_path, as_version=4)
        first = next(c for c in nb.cells if c.cell_type == "code")
        assert first.source == src and "remove-cell" in first.metadata["tags"], nb_path


def test_the_colab_cell_does_nothing_inside_a_capq_environment(monkeypatch):
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: calls.append(a))
    exec(colab_cell(), {})
    assert calls == []
    # outside one (capq not importable) it installs capq from the repository
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    exec(colab_cell(), {})
    url = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"]
    assert len(calls) == 1 and calls[0][0][-1] == f"capq @ git+{url}"


def test_license_citation_and_project_metadata():
    assert "MIT License" in (ROOT / "LICENSE").read_text()
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] and cff["license"] == "MIT"
    assert "openreview.net" in cff["references"][0]["url"]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "MIT" and project["classifiers"] and project["urls"]


def test_data_fetch_help_and_a_wrong_digest_from_a_mirror_leaves_nothing(tmp_path):
    proc = run_capq("data", "fetch", "--help", results=tmp_path / "r")
    assert proc.returncode == 0 and "mirror" in proc.stdout
    mirror = tmp_path / "mirror" / "ptb"
    mirror.mkdir(parents=True)
    for split in ("train", "valid", "test"):
        (mirror / f"ptb.{split}.txt").write_text("not the treebank\n")
    root = tmp_path / "data"
    env = {**os.environ, "CAPQ_DATA_DIR": str(root)}
    env.pop(realdata.TRUSTED_ENV, None)
    exe = Path(sys.executable).parent / "capq"
    proc = subprocess.run([str(exe), "data", "fetch", "ptb", "--mirror",
                           (tmp_path / "mirror").as_uri()], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2
    assert "ptb/ptb.train.txt failed its checksum" in proc.stderr
    assert not [p for p in root.rglob("*") if p.is_file()]  # nothing, not even a .part
    # the right files from the same mirror: fetched and verified
    src = offline_data() / "ptb"
    if not (src / "ptb.train.txt").is_file():
        pytest.skip("no offline PTB training split here")
    for split in ("train", "valid", "test"):
        (mirror / f"ptb.{split}.txt").write_bytes((src / f"ptb.{split}.txt").read_bytes())
    proc = subprocess.run([str(exe), "data", "fetch", "ptb", "--mirror",
                           (tmp_path / "mirror").as_uri()], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    got = hashlib.md5((root / "ptb" / "ptb.train.txt").read_bytes()).hexdigest()
    assert got in realdata.FILES["ptb/ptb.train.txt"].md5


@pytest.mark.slow
def test_a_regular_install_builds_the_smoke_book_from_another_folder(tmp_path):
    """pip install . (not editable) into a new environment, then capq build from elsewhere:
    the book's sources, profiles and the paper's values come with the install. The new
    environment borrows this one's dependencies (a path line, so that this environment's
    editable capq is not visible) to keep the test offline and quick."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = Path(sysconfig.get_path("purelib", vars={"base": str(venv),
                                                     "platbase": str(venv)}))
    site.mkdir(parents=True, exist_ok=True)
    (site / "borrowed.pth").write_text(sysconfig.get_path("purelib") + "\n")
    py = venv / "bin" / "python"
    # from a copy of the tracked files: a build leaves build/ behind in its source tree
    src = tmp_path / "src"
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                             check=True).stdout.decode().split("\0")
    for rel in filter(None, tracked):
        if (ROOT / rel).is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, src / rel)
    # --ignore-installed: without it pip would first uninstall this environment's capq
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index",
                          "--no-build-isolation", "--ignore-installed", "--prefix", str(venv),
                          str(src)],
                         capture_output=True, text=True, timeout=600)
    assert pip.returncode == 0, pip.stdout[-2000:] + pip.stderr[-2000:]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    probe = subprocess.run([str(py), "-c", "import capq_lib.core.paths as p; "
                            "print(p.CHECKOUT, p.BOOK_ROOT)"], cwd=elsewhere,
                           capture_output=True, text=True)
    assert probe.stdout.split()[0] == "False", probe.stdout + probe.stderr
    assert str(venv) in probe.stdout  # the book came with the install
    data = os.environ.get("CAPQ_DATA_DIR") or str(offline_data())  # may name its checksums
    env = {**os.environ, "PATH": f"{venv / 'bin'}{os.pathsep}{Path(sys.executable).parent}"
           f"{os.pathsep}{os.environ['PATH']}", "CAPQ_RESULTS_DIR": str(tmp_path / "results"),
           "CAPQ_DATA_DIR": data}
    out = tmp_path / "out"
    # the capq script pip wrote would run this environment's python; the module is the same
    proc = subprocess.run([str(py), "-m", "capq_lib.report.cli", "build", "--profile", "smoke",
                           "--device", "cpu", "--output", str(out), "--jobs", "2"],
                          cwd=elsewhere, env=env, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (out / "_build" / "html" / "book" / "fcdnn-capacity.html").is_file()
    assert (out / "_build" / "html" / "book" / "about-this-build.html").is_file()
