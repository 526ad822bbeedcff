"""The page "About this build": what produced the numbers on every other page.

Written by the runner into the staged book from the build report (profile and its content
hash, device, versions, commit, per-chapter wall time, date) and added to the table of
contents there; every page's footer links to it.
"""

from __future__ import annotations

import datetime as dt
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from capq_lib import __version__
from capq_lib.experiments.results import git_commit

PAGE = "book/about-this-build"
#: the packages whose versions decide the numbers and the pages
PACKAGES = ("torch", "numpy", "scipy", "pandas", "optuna", "plotly", "papermill",
            "jupyter-book")


def versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "capq": __version__}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def provenance(device: str) -> dict[str, Any]:
    """Everything the page reports besides the chapters' times."""
    return {"device": device, "versions": versions(), "git_commit": git_commit(),
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "machine": f"{platform.system()} {platform.machine()}"}


def markdown(report: dict[str, Any]) -> str:
    """The page, from a build report (``runner.BuildReport`` as a dict)."""
    prov = report["provenance"]
    lines = ["# About this build", "",
             "Every number in this book was computed by the build described here; a rebuild "
             "with another profile or on another machine gives its own page.", "",
             "| | |", "| --- | --- |",
             f"| profile | `{report['profile']}` |",
             f"| profile identity (name@content hash) | `{report['profile_identity']}` |",
             f"| device | {prov['device']} |",
             f"| machine | {prov['machine']} |",
             f"| git commit | `{prov['git_commit'] or 'not a git checkout'}` |",
             f"| date (UTC) | {prov['date']} |", "",
             "## Versions", "", "| package | version |", "| --- | --- |",
             *[f"| {k} | {v} |" for k, v in prov["versions"].items()], "",
             "## Chapters", "",
             "| chapter | status | wall time (s) |", "| --- | --- | --- |",
             *[f"| {n['chapter']} | {n['status']} | {n['seconds']:.1f} |"
               for n in report["notebooks"]], "",
             "A chapter marked *skipped* was not executed in this build (`capq build --only`): "
             "its page keeps the output of an earlier one."]
    return "\n".join(lines) + "\n"


def write(stage: Path, report: dict[str, Any]) -> Path:
    """Write the page into the staged book and list it last in the staged table of contents."""
    page = stage / f"{PAGE}.md"
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(markdown(report))
    toc_path = stage / "_toc.yml"
    toc = yaml.safe_load(toc_path.read_text())
    chapters = toc.setdefault("chapters", [])
    if not any(c.get("file") == PAGE for c in chapters):
        chapters.append({"file": PAGE})
    toc_path.write_text(yaml.safe_dump(toc, sort_keys=False))
    return page
