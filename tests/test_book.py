"""End to end: the smoke profile builds a book whose pages hold their figures; failures are loud."""

import json
import re
import subprocess

import nbformat
import pytest

from .conftest import ROOT, run_capq

CHAPTERS = {"intro": 1, "mutual-information": 3, "fcdnn-capacity": 5, "cnn-capacity": 3,
            "rnn-capacity": 2, "quantization": 6, "bits-needed": 1, "real-tasks": 5,
            "loss-surfaces": 3}


def git_status() -> str:
    return subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True,
                          text=True).stdout


@pytest.mark.slow
@pytest.mark.parametrize("chapter,figures", CHAPTERS.items())
def test_each_chapter_page_exists_with_its_figures(smoke_book, chapter, figures):
    html = (smoke_book / "_build" / "html" / "book" / f"{chapter}.html").read_text()
    assert len(re.findall(r'class="plotly-graph-div"', html)) >= figures
    assert "Traceback" not in html
    assert "https://cdn.plot.ly" not in html
    report = json.loads((smoke_book / "_build" / "build-report.json").read_text())
    assert {n["chapter"]: n["status"] for n in report["notebooks"]}[chapter] == "ok"


@pytest.mark.slow
def test_chapters_start_after_the_chapters_they_read(smoke_book):
    runs = {n["chapter"]: n for n in json.loads(
        (smoke_book / "_build" / "build-report.json").read_text())["notebooks"]}
    for chapter, needs in (("quantization", ("fcdnn-capacity", "cnn-capacity", "rnn-capacity")),
                           ("loss-surfaces", ("real-tasks",)),
                           ("intro", tuple(c for c in runs if c != "intro"))):
        assert runs[chapter]["started"] >= max(runs[n]["finished"] for n in needs), chapter
    # and some chapters did run side by side
    spans = sorted((r["started"], r["finished"]) for r in runs.values())
    assert any(b[0] < a[1] for a, b in zip(spans, spans[1:], strict=False))


@pytest.mark.slow
def test_sources_stay_output_free_and_plotly_is_served_locally(smoke_book):
    for nb in (ROOT / "book").glob("*.ipynb"):
        cells = nbformat.read(nb, as_version=4).cells
        assert all(not c.get("outputs") for c in cells if c.cell_type == "code"), nb
    static = smoke_book / "_build" / "html" / "_static"
    assert (static / "plotly.min.js").stat().st_size > 1_000_000
    assert (static / "mathjax" / "MathJax.js").is_file()


@pytest.mark.slow
def test_scorecard_reports_the_smoke_results(smoke_book):
    html = (smoke_book / "_build" / "html" / "book" / "intro.html").read_text()
    assert "bits per parameter, mean over architectures" in html
    assert "Eq. (1) gives the bits" in html


@pytest.mark.slow
def test_a_failing_notebook_shows_its_error_and_the_others_still_run(tmp_path):
    before = git_status()
    bad = tmp_path / "bad.yaml"
    smoke = (ROOT / "book" / "profiles" / "smoke.yaml").read_text()
    bad.write_text(smoke.replace("widths: [10, 12]", "widths: [0, 12]"))
    proc = run_capq("build", "--profile", str(bad), "--device", "cpu", "--output",
                    str(tmp_path), "--execute-only", results=tmp_path / "results")
    assert proc.returncode == 1
    assert "notebook(s) failed: fcdnn-capacity" in proc.stderr
    report = {n["chapter"]: n["status"] for n in json.loads(
        (tmp_path / "_build" / "build-report.json").read_text())["notebooks"]}
    assert report == {"mutual-information": "ok", "fcdnn-capacity": "failed", "intro": "ok",
                      "cnn-capacity": "ok", "rnn-capacity": "ok",
                      # it quantizes nets at the capacity the failed chapter did not measure
                      "quantization": "failed", "bits-needed": "ok", "real-tasks": "ok",
                      "loss-surfaces": "ok"}
    executed = nbformat.read(tmp_path / "_build" / "stage" / "book" / "fcdnn-capacity.ipynb", 4)
    errors = [o for c in executed.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.output_type == "error"]
    assert errors and "widths must be an integer in [1, 65536], got 0" in errors[0]["evalue"]
    assert not (tmp_path / "results" / "fcdnn-capacity").exists()  # nothing half-written
    assert git_status() == before
