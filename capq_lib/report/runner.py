"""The batch runner: execute every chapter with papermill into a staging copy, then build.

Sources in book/ stay output-free: papermill writes executed copies into
``<output>/_build/stage`` (same relative paths as the table of contents), the assets the
pages need offline (plotly.js, MathJax) are copied beside them, and Jupyter Book renders
the stage into ``<output>/_build/html`` without executing anything itself. A failing
notebook keeps its error in the page, the others still run, and the build reports it.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path

import jupyter_server_mathjax
import nbformat
import papermill
import plotly
import yaml

from capq_lib.core import validate
from capq_lib.core.devices import describe, resolve_device
from capq_lib.core.paths import BOOK_ROOT, CHECKOUT, PROJECT_ROOT, absolute_environment
from capq_lib.core.validate import ConfigError
from capq_lib.experiments import records
from capq_lib.report import about, profiles
from capq_lib.report.chapters import CONFIGURE, configure, notebook_defaults

#: files and folders of the book that are copied to the stage as they are
BOOK_FILES = ("_config.yml", "_toc.yml", "book")
VENDOR = "_vendor"
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(32 * 2**20), "MALLOC_TRIM_THRESHOLD_": str(2**30)}


@dataclass
class NotebookRun:
    chapter: str
    status: str  # "ok" | "failed" | "skipped"
    seconds: float
    error: str = ""
    started: float = 0.0  # wall-clock times (epoch seconds), to see what ran side by side
    finished: float = 0.0


@dataclass
class BuildReport:
    profile: str
    device: str
    profile_identity: str
    html_index: str
    notebooks: list[NotebookRun] = field(default_factory=list)
    book_seconds: float = 0.0
    #: device in words, versions, commit, date (the "About this build" page shows them)
    provenance: dict = field(default_factory=dict)

    @property
    def failed(self) -> list[str]:
        return [n.chapter for n in self.notebooks if n.status == "failed"]


def toc_notebooks(root: Path = BOOK_ROOT) -> list[Path]:
    """Notebooks of the table of contents, root first, as paths relative to ``root``."""
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    files = [toc["root"]]

    def walk(entries: list) -> None:
        for entry in entries or []:
            if "file" in entry:
                files.append(entry["file"])
            walk(entry.get("sections", []))
            for part in entry.get("chapters", []) if "chapters" in entry else []:
                files.append(part["file"])

    walk(toc.get("chapters", []))
    for part in toc.get("parts", []):
        walk(part.get("chapters", []))
    return [Path(f).with_suffix(".ipynb") for f in files if (root / f).with_suffix(".ipynb")
            .is_file()]


def contents(root: Path = BOOK_ROOT) -> str:
    """The book's chapters as a Markdown list, from the table of contents: each notebook's
    title (its first heading) linked, with the summary in its metadata (``capq.summary``)."""
    lines = []
    for nb_path in toc_notebooks(root)[1:]:
        nb = nbformat.read(root / nb_path, as_version=4)
        title = next((line[2:].strip() for c in nb.cells if c.cell_type == "markdown"
                      for line in c.source.splitlines() if line.startswith("# ")), nb_path.stem)
        summary = nb.metadata.get("capq", {}).get("summary", "")
        lines.append(f"- [{title}]({nb_path.name})" + (f": {summary}" if summary else ""))
    return "\n".join(lines)


def notebook_parameters(path: Path) -> set[str]:
    """Names defined in the notebook's cell tagged ``parameters``."""
    return set(notebook_defaults(path))


def check_values(prof: profiles.Profile, chapters: dict[str, Path], device: str) -> None:
    """Build every chapter's configuration from the profile over the notebook's defaults,
    so that a bad value stops the build before any notebook runs."""
    for chapter, nb in chapters.items():
        if chapter in CONFIGURE:
            ns = {**notebook_defaults(BOOK_ROOT / nb), **prof.parameters(chapter, device)}
            try:
                configure(chapter, ns)
            except ConfigError as err:
                raise ConfigError(f"profile {prof.name} ({prof.path}): {err}") from None


def execution_order(notebooks: list[Path]) -> list[Path]:
    """Chapters in toc order, the root page last: it summarizes the others' results."""
    return notebooks[1:] + notebooks[:1]


def chapter_needs(notebooks: list[Path], root: Path = BOOK_ROOT,
                  prof: profiles.Profile | None = None) -> dict[str, set[str]]:
    """Which chapters must finish before each one starts: those named in its metadata
    (``capq.needs``, results it reads), and for the root page every other chapter. A need
    listed in ``capq.needs_if`` (chapter -> parameter) holds only when that parameter of the
    chapter, under ``prof`` (else the notebook's default), is not empty: quantization waits
    for the CNN chapter only if it quantizes CNNs."""
    names = [nb.stem for nb in notebooks]
    needs = {}
    for nb in notebooks:
        meta = nbformat.read(root / nb, as_version=4).metadata.get("capq", {})
        wanted = set(meta.get("needs", []))
        for other, param in meta.get("needs_if", {}).items():
            value = (prof.chapters.get(nb.stem, {}) if prof else {}).get(param)
            if value is None:
                value = notebook_defaults(root / nb).get(param)
            if not value:
                wanted.discard(other)
        needs[nb.stem] = wanted & set(names)
    needs[names[0]] = set(names[1:])
    return needs


def chapter_costs(notebooks: list[Path], root: Path = BOOK_ROOT) -> dict[str, float]:
    """Each chapter's rough cost (``capq.cost`` in its metadata: minutes on one core under
    the quick profile; 1 when unstated), used only to order what runs first."""
    return {nb.stem: float(nbformat.read(root / nb, as_version=4).metadata.get("capq", {})
                           .get("cost", 1.0)) for nb in notebooks}


def critical_paths(needs: dict[str, set[str]], costs: dict[str, float]) -> dict[str, float]:
    """Per chapter: its cost plus the longest chain of chapters that wait for it. Starting
    the longest chains first keeps the chapter that others wait on (the CNN search before
    quantization) off the end of the build."""
    waiting_on = {c: {d for d, n in needs.items() if c in n} for c in needs}
    memo: dict[str, float] = {}

    def path(c: str) -> float:
        if c not in memo:
            memo[c] = costs.get(c, 1.0) + max((path(d) for d in waiting_on[c]), default=0.0)
        return memo[c]

    return {c: path(c) for c in needs}


def vendor_assets(dest: Path) -> None:
    """Copy plotly.js (from the plotly package) and MathJax (jupyter-server-mathjax) to dest."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy2(Path(plotly.__file__).parent / "package_data" / "plotly.min.js", dest)
    src = Path(jupyter_server_mathjax.__file__).parent / "static"
    mj = dest / "mathjax"
    if not (mj / "MathJax.js").is_file():
        for part in ("MathJax.js", "config", "extensions", "jax/input", "jax/element",
                     "jax/output/HTML-CSS", "fonts"):
            s, d = src / part, mj / part
            if s.is_dir():
                shutil.copytree(s, d, dirs_exist_ok=True)
            else:
                d.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(s, d)


def stage_sources(stage: Path) -> None:
    """Mirror the book's sources into the stage (executed notebooks are overwritten later)."""
    stage.mkdir(parents=True, exist_ok=True)
    for name in BOOK_FILES:
        src, dst = BOOK_ROOT / name, stage / name
        if src.is_dir():
            shutil.copytree(src, dst, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("*.ipynb", ".ipynb_checkpoints"))
        else:
            shutil.copy2(src, dst)
    for nb in (BOOK_ROOT / "book").rglob("*.ipynb"):
        target = stage / nb.relative_to(BOOK_ROOT)
        if not target.exists():  # a chapter not executed in this run keeps its last output
            shutil.copy2(nb, target)
    url = os.environ.get("CAPQ_REPOSITORY_URL")
    if url:  # a fork's own address for its launch and repository buttons
        config = yaml.safe_load((stage / "_config.yml").read_text())
        config.setdefault("repository", {})["url"] = url
        (stage / "_config.yml").write_text(yaml.safe_dump(config, sort_keys=False))


def execute(src: Path, dst: Path, parameters: dict, timeout_s: int,
            threads: int | None = None) -> None:
    """Run one notebook headlessly; its text progress bars stream to this terminal.
    ``threads`` caps the kernel's compute threads (set when chapters run side by side)."""
    if threads:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(threads)
    # glibc keeps the memory a training step frees for the next step instead of returning it
    # and faulting fresh pages in again (population.retain_freed_memory, for every chapter's
    # kernel from its start); a user's own setting wins
    for var, value in MALLOC_ENV.items():
        os.environ.setdefault(var, value)
    env_before = os.environ.get("CAPQ_BATCH")
    os.environ["CAPQ_BATCH"] = "1"
    try:
        papermill.execute_notebook(
            str(src), str(dst), parameters=parameters, kernel_name="python3",
            execution_timeout=timeout_s, start_timeout=120, progress_bar=False,
            stderr_file=sys.stderr, cwd=str(dst.parent))
    finally:
        if env_before is None:
            os.environ.pop("CAPQ_BATCH", None)
        else:
            os.environ["CAPQ_BATCH"] = env_before


def _scrub(value: object, paths: list[tuple[str, str]]) -> object:
    """``value`` with every absolute path in ``paths`` replaced by its stand-in."""
    if isinstance(value, str):
        for path, stand_in in paths:
            value = value.replace(path, stand_in)
        return value
    if isinstance(value, list):
        return [_scrub(v, paths) for v in value]
    if isinstance(value, dict):
        return {k: _scrub(v, paths) for k, v in value.items()}
    return value


def machine_paths(stage: Path) -> list[tuple[str, str]]:
    """Paths of this machine that may appear in an executed notebook, longest first, with
    what a published page says instead."""
    out = stage.parent.parent
    found = {str(stage.resolve()): ".", str(stage): ".", str(out.resolve()): "<output>",
             str(out): "<output>", str(PROJECT_ROOT): "<project>", str(BOOK_ROOT): "<book>",
             sys.prefix: "<python>",
             sys.base_prefix: "<python>", str(Path.home()): "~"}
    for var in ("CAPQ_RESULTS_DIR", "CAPQ_DATA_DIR", "TMPDIR"):
        if os.environ.get(var):
            found[os.environ[var]] = f"${var}"
    return sorted(((p, s) for p, s in found.items() if len(p) > 1),
                  key=lambda ps: -len(ps[0]))


def tidy_parameters(path: Path, profile: profiles.Profile, stage: Path | None = None) -> None:
    """In the executed copy, hide the defaults cell and label the injected one, and take out
    every absolute path of the building machine (papermill's input and output paths,
    paths in warnings), so a published notebook says nothing about where it was built.

    Readers of the page then see the parameters the page was computed with, once.
    """
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        tags = cell.get("metadata", {}).get("tags", [])
        if "parameters" in tags:
            cell.metadata["tags"] = [*tags, "remove-cell"]
        elif "injected-parameters" in tags:
            cell.source = cell.source.replace(
                "# Parameters", f"# Parameters of this page (profile {profile.name!r})", 1)
    if stage is not None:
        rel = str(path.relative_to(stage)) if path.is_relative_to(stage) else path.name
        meta = nb.metadata.get("papermill", {})
        for key in ("input_path", "output_path"):
            if key in meta:
                meta[key] = rel
        paths = machine_paths(stage)
        for cell in nb.cells:
            if cell.cell_type == "code":
                cell.outputs = nbformat.from_dict(_scrub(cell.get("outputs", []), paths))
        nb.metadata = nbformat.from_dict(_scrub(dict(nb.metadata), paths))
    nbformat.write(nb, path)


def run_chapter(nb: Path, stage: Path, prof: profiles.Profile, device: str,
                threads: int | None = None) -> NotebookRun:
    """Execute one chapter into the stage; a failure is recorded, not raised."""
    chapter = nb.stem
    print(f"[capq] executing {nb} (profile {prof.name}, device {device})", flush=True)
    start, started = time.perf_counter(), time.time()
    try:
        # every parameter, the profile's over the notebook's defaults: the page's parameters
        # cell then lists all that decided what it shows
        params = {**notebook_defaults(BOOK_ROOT / nb), **prof.parameters(chapter, device)}
        execute(BOOK_ROOT / nb, stage / nb, params, prof.timeout_s, threads)
        tidy_parameters(stage / nb, prof, stage)
        run = NotebookRun(chapter, "ok", time.perf_counter() - start)
    except Exception as err:  # the notebook keeps its traceback; go on with the others
        run = NotebookRun(chapter, "failed", time.perf_counter() - start,
                          f"{type(err).__name__}: {str(err).strip().splitlines()[-1:]}")
        if (stage / nb).is_file():
            tidy_parameters(stage / nb, prof, stage)
    run.started, run.finished = started, time.time()
    print(f"[capq] {chapter}: {run.status} in {run.seconds:.1f} s", flush=True)
    return run


def run_parallel(todo: list[Path], needs: dict[str, set[str]], stage: Path,
                 prof: profiles.Profile, device: str, jobs: int,
                 priority: dict[str, float] | None = None) -> dict[str, NotebookRun]:
    """Run chapters ``jobs`` at a time, each in its own process with an equal share of the
    CPU threads, starting a chapter once the chapters it reads from have finished (a
    chapter whose input failed still runs, and says what is missing); of the chapters ready,
    those with the highest ``priority`` (the longest chain behind them) start first."""
    cpus = os.cpu_count() or 1
    names = {nb.stem for nb in todo}
    waiting, running, done = list(todo), {}, {}
    with ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn")) as pool:
        while waiting or running:
            ready = sorted((nb for nb in waiting
                            if not (needs.get(nb.stem, set()) & names) - set(done)),
                           key=lambda nb: -(priority or {}).get(nb.stem, 0.0))
            for nb in ready[:jobs - len(running)]:
                # a chapter that starts alone (nothing else can run) gets every thread
                threads = max(1, cpus // min(jobs, len(running) + len(ready)))
                waiting.remove(nb)
                running[pool.submit(run_chapter, nb, stage, prof, device, threads)] = nb
            if not running:
                raise ConfigError(f"chapters wait on each other: {[n.stem for n in waiting]}")
            finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for f in finished:
                done[running.pop(f).stem] = f.result()
    return done


#: the theme's mode script with no default (Jupyter Book 1 sets none): "" is not a mode
THEME_MODE = (('localStorage.getItem("mode") || ""', 'localStorage.getItem("mode") || "light"'),
              ('localStorage.getItem("theme") || ""', 'localStorage.getItem("theme") || "light"'),
              ('data-default-mode=""', 'data-default-mode="light"'))


def finish_site(html: Path) -> None:
    """Repairs of Jupyter Book 1's output. Its thebe extension writes the same inline
    ``const THEBE_JS_URL ...`` script twice into every page, and the second raises a
    console error ("has already been declared"): the repeat goes. The theme's mode script
    gets a default ("light"; without one it logs "Got invalid theme mode" on every page).
    And the footer's link to
    "About this build" is relative, right for the chapters (in book/) but not for pages at
    the site's root (search, index of terms): a page there forwards to the real one."""
    for page in html.rglob("*.html"):
        text = page.read_text()
        lines, seen, keep = text.split("\n"), set(), []
        for line in lines:
            key = line.strip()
            if key.startswith("<script>const ") and key in seen:
                continue
            seen.add(key)
            keep.append(line)
        fixed = "\n".join(keep)
        for empty, light in THEME_MODE:  # no default mode: the theme logs an error
            fixed = fixed.replace(empty, light)
        if fixed != text:
            page.write_text(fixed)
    target = Path(about.PAGE + ".html")
    if (html / target).is_file() and not (html / target.name).exists():
        url = target.as_posix()
        (html / target.name).write_text(
            '<!DOCTYPE html><html><head><meta charset="utf-8">'
            '<link rel="icon" href="_static/favicon.svg">'
            f'<title>About this build</title><meta http-equiv="refresh" content="0; url={url}">'
            f'</head><body><p><a href="{url}">About this build</a></p></body></html>\n')


def output_folder(output: Path | str | None) -> Path:
    """Where ``_build/`` goes (absolute); a file, or a place this user cannot write, is
    refused before anything runs (nothing is made yet)."""
    out = (Path(output) if output is not None else
           (PROJECT_ROOT if CHECKOUT else Path.cwd())).absolute()
    existing = next(p for p in (out / "_build", *(out / "_build").parents) if p.exists())
    if not existing.is_dir():
        raise ConfigError(f"--output {str(out)!r}: {existing} is a file; give a folder "
                          f"(where _build/ goes)")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"--output {str(out)!r}: {existing} is not writable; give a "
                          f"folder you can write")
    return out


def build(profile: str = "quick", device: str = "auto", only: list[str] | None = None,
          output: Path | str | None = None, execute_only: bool = False,
          jobs: int = 1) -> BuildReport:
    """Execute the chapters of ``profile`` and build the HTML book into ``output``/_build;
    ``jobs`` > 1 runs independent chapters side by side."""
    absolute_environment()
    prof = profiles.load(profile)
    resolve_device(device)  # fail now, not inside every notebook
    out = output_folder(output)
    stage = out / "_build" / "stage"
    notebooks = toc_notebooks()
    chapters = {nb.stem: nb for nb in notebooks}
    profiles.check_against(prof, {c: notebook_parameters(BOOK_ROOT / nb)
                                  for c, nb in chapters.items()})
    for nb in chapters.values():
        missing = set(profiles.COMMON_PARAMETERS) - notebook_parameters(BOOK_ROOT / nb)
        if missing:
            raise ConfigError(f"notebook {nb} lacks parameter(s) {sorted(missing)} in its "
                              f"cell tagged 'parameters'")
    check_values(prof, chapters, device)
    others = records.other_configurations(prof.identity)
    if others:
        print(f"[capq] note: the cache also holds records of other configurations of profile "
              f"{prof.name} ({', '.join(others)}); these pages use only {prof.identity}'s",
              flush=True)
    if only:
        unknown = [c for c in only if c not in chapters]
        if unknown:
            raise ConfigError(f"only must name chapters of the book ({', '.join(chapters)}); "
                              f"got {', '.join(unknown)}")
    validate.integer("jobs", jobs, lo=1, hi=64)
    try:
        stage_sources(stage)
    except OSError as err:
        raise ConfigError(f"--output {str(out)!r}: cannot write the book there "
                          f"({err.strerror}: {err.filename}); give a folder you can write"
                          ) from None
    report = BuildReport(prof.name, device, prof.identity,
                         str(out / "_build" / "html" / "index.html"),
                         provenance=about.provenance(describe(resolve_device(device))))
    todo = [nb for nb in execution_order(notebooks) if not only or nb.stem in only]
    runs = {nb.stem: NotebookRun(nb.stem, "skipped", 0.0) for nb in notebooks}
    if jobs == 1:
        for nb in todo:
            runs[nb.stem] = run_chapter(nb, stage, prof, device)
    else:
        needs = chapter_needs(notebooks, prof=prof)
        runs.update(run_parallel(todo, needs, stage, prof, device, jobs,
                                 critical_paths(needs, chapter_costs(notebooks))))
    report.notebooks = [runs[nb.stem] for nb in execution_order(notebooks)]
    if not execute_only:
        start = time.perf_counter()
        about.write(stage, asdict(report))
        vendor_assets(stage / VENDOR)
        jb = Path(sys.executable).parent / "jupyter-book"
        cmd = [str(jb) if jb.exists() else "jupyter-book", "build", str(stage),
               "--path-output", str(out), "--builder", "html"]
        print(f"[capq] building the HTML book: {' '.join(cmd)}", flush=True)
        subprocess.run(cmd, check=True)
        finish_site(out / "_build" / "html")
        report.book_seconds = time.perf_counter() - start
    (out / "_build").mkdir(parents=True, exist_ok=True)
    (out / "_build" / "build-report.json").write_text(json.dumps(asdict(report), indent=1))
    return report
