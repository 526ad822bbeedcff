"""End to end: the smoke profile builds a book whose pages hold their figures; failures are loud."""

import json
import re
import subprocess

import nbformat
import pytest

from .conftest import ROOT, offline_data, run_capq

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
    """A failure no check can foresee (the surfaces of a net the real-task chapter did not
    train): that page keeps its error, the other chapters still run, the build says so. A
    bad value is refused before any notebook runs (tests/test_faults.py)."""
    before = git_status()
    bad = tmp_path / "bad.yaml"
    smoke = (ROOT / "book" / "profiles" / "smoke.yaml").read_text()
    head, tail = smoke.split("  loss-surfaces:\n")
    bad.write_text(head + "  loss-surfaces:\n" + tail.replace('cnn_models: ["tiny"]',
                                                                'cnn_models: ["small"]'))
    proc = run_capq("build", "--profile", str(bad), "--device", "cpu", "--output",
                    str(tmp_path), "--execute-only", "--jobs", "2",
                    results=tmp_path / "results")
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "notebook(s) failed: loss-surfaces" in proc.stderr
    report = {n["chapter"]: n["status"] for n in json.loads(
        (tmp_path / "_build" / "build-report.json").read_text())["notebooks"]}
    assert report == {"mutual-information": "ok", "fcdnn-capacity": "ok", "intro": "ok",
                      "cnn-capacity": "ok", "rnn-capacity": "ok", "quantization": "ok",
                      "bits-needed": "ok", "real-tasks": "ok", "loss-surfaces": "failed",
                      "transformer-capacity": "ok"}
    executed = nbformat.read(tmp_path / "_build" / "stage" / "book" / "loss-surfaces.ipynb", 4)
    errors = [o for c in executed.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.output_type == "error"]
    assert errors and "no trained cifar net of size small" in errors[0]["evalue"]
    assert not (tmp_path / "results" / "loss-surfaces").exists()  # nothing half-written
    assert git_status() == before


def test_the_readme_and_the_intro_show_the_same_rerun_commands():
    """One list (report/commands.py) is the intro's "Rerunning it" block (rendered from it)
    and the README's (compared here)."""
    from capq_lib.report.commands import block

    assert block() in (ROOT / "README.md").read_text()
    intro = nbformat.read(ROOT / "book" / "intro.ipynb", as_version=4)
    assert any("Markdown(block())" in c.source for c in intro.cells)
    assert not any("```bash" in c.source for c in intro.cells if c.cell_type == "markdown")


@pytest.mark.slow
def test_every_rerun_command_runs_at_smoke_size(tmp_path, smoke_book):
    """Each command of the README and the intro, in its smoke-sized form (smoke profile, the
    CPU), in a folder of its own on a copy of the smoke book's results (what a reader's
    cache holds after a build); an unknown papermill name is refused before anything is
    computed."""
    import os
    import shlex
    import shutil
    import sys

    from capq_lib.report.commands import RERUN

    shutil.copytree(smoke_book / "results", tmp_path / "results")
    (tmp_path / "book").symlink_to(ROOT / "book")
    (tmp_path / "my-profile.yaml").write_text(
        (ROOT / "book" / "profiles" / "smoke.yaml").read_text())
    bindir = os.path.dirname(sys.executable)
    env = {**os.environ, "PATH": bindir + os.pathsep + os.environ["PATH"],
           "CAPQ_RESULTS_DIR": str(tmp_path / "results"),
           "CAPQ_DATA_DIR": os.environ.get("CAPQ_DATA_DIR") or str(offline_data())}
    for command in RERUN:
        line = command.smoke
        if line.startswith("capq build"):  # the book goes here, not into the checkout
            line += f" --output {tmp_path / 'out'}"
        proc = subprocess.run(line, shell=True, cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=900)
        assert proc.returncode == 0, (line, proc.stdout[-2000:], proc.stderr[-3000:])
    out = nbformat.read(tmp_path / "out.ipynb", as_version=4)
    assert out.metadata.papermill.parameters["widths"] == [32, 64]
    rows = json.loads(run_capq("results", "fcdnn-capacity", "--profile", "wide",
                               results=tmp_path / "results").stdout)
    assert {r["model"] for r in rows} == {"1x32", "1x64", "2x32", "2x64"}
    before = sorted((tmp_path / "results").rglob("*.json"))
    bad = f"papermill book/fcdnn-capacity.ipynb bad.ipynb -p widthz {shlex.quote('[16]')}"
    proc = subprocess.run(bad, shell=True, cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode != 0
    assert "unknown parameter(s) widthz; this notebook's parameters:" in proc.stderr
    assert sorted((tmp_path / "results").rglob("*.json")) == before  # nothing computed


@pytest.mark.slow
def test_published_pages_and_notebooks_name_no_path_of_the_building_machine(smoke_book):
    """Every file of the published book, the downloadable notebooks (_sources) included."""
    html = smoke_book / "_build" / "html"
    paths = {str(smoke_book), str(smoke_book.resolve()), str(ROOT)}
    sources = list(html.rglob("*.ipynb"))
    assert sources, "no downloadable notebooks were published"
    for f in html.rglob("*"):
        if f.is_file() and f.suffix in (".html", ".ipynb", ".txt", ".js", ".json", ".md"):
            text = f.read_text(errors="replace")
            found = [p for p in paths if p in text]
            assert not found, f"{f.relative_to(html)} names {found}"


@pytest.mark.slow
def test_every_chapter_has_working_launch_buttons(smoke_book):
    import yaml

    repo = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"]
    slug = repo.removeprefix("https://github.com/")
    for chapter in CHAPTERS:
        html = (smoke_book / "_build" / "html" / "book" / f"{chapter}.html").read_text()
        binder = f"https://mybinder.org/v2/gh/{slug}/main?urlpath=lab/tree/book/{chapter}.ipynb"
        colab = f"https://colab.research.google.com/github/{slug}/blob/main/book/{chapter}.ipynb"
        assert binder in html, chapter
        assert colab in html, chapter
    assert (ROOT / "binder" / "postBuild").stat().st_mode & 0o111
    assert "pip install" in (ROOT / "binder" / "postBuild").read_text()


@pytest.mark.slow
def test_numbered_references_the_about_page_and_the_chapter_list(smoke_book):
    html_dir = smoke_book / "_build" / "html" / "book"
    mi = (html_dir / "mutual-information.html").read_text()
    assert re.search(r'<span class="eqno">\(1\)', mi)  # the equation is numbered
    intro = (html_dir / "intro.html").read_text()
    assert re.search(r'href="mutual-information.html#equation-eq-mi"', intro)
    fc = (html_dir / "fcdnn-capacity.html").read_text()
    assert re.search(r"Fig\. \d+", fc) and 'href="#fig-fc-width"' in fc
    for chapter in CHAPTERS:
        if chapter != "intro":
            assert f'href="{chapter}.html"' in intro, chapter
        page = (html_dir / f"{chapter}.html").read_text()
        assert 'href="about-this-build.html"' in page, chapter
    import html as html_text

    about = html_text.unescape((html_dir / "about-this-build.html").read_text())
    for field in ("smoke@", "torch", "numpy", "scipy", "optuna", "plotly", "git commit",
                  "fcdnn-capacity", "date (UTC)", "device"):
        assert field in about, field
    assert "openreview.net/forum?id=HylIcj0qFQ" in intro or "openreview.net" in (
        html_dir / "mutual-information.html").read_text()


def test_a_figure_cell_shows_its_figure_alone():
    """myst-nb numbers and captions every output of a cell with figure metadata: a second
    output (a printed line, a Markdown paragraph) gets the caption too and the label twice,
    so the text reads "See fig-..." and a paragraph wears a figure caption."""
    for nb_path in sorted((ROOT / "book").glob("*.ipynb")):
        for cell in nbformat.read(nb_path, as_version=4).cells:
            if cell.cell_type == "code" and "figure" in cell.metadata.get("mystnb", {}):
                assert not any(w in cell.source for w in ("display(", "print(", "Markdown(")), \
                    (nb_path.name, cell.source[:80])


def test_every_chapter_ends_with_what_matches_and_what_does_not():
    for nb_path in sorted((ROOT / "book").glob("*.ipynb")):
        if nb_path.stem == "intro":
            continue
        cells = nbformat.read(nb_path, as_version=4).cells
        headings = [line for c in cells if c.cell_type == "markdown"
                    for line in c.source.splitlines() if line.startswith("## ")]
        assert headings[-1] == "## What matches and what does not", nb_path.name
        assert any("claims.on_page(" in c.source for c in cells), nb_path.name
