"""The page "About this build": what produced the numbers on every other page.

Written by the runner into the staged book from the build report (profile and its content
hash, device, versions, commit, per-chapter wall time, date) and added to the table of
contents there; every page's footer links to it.
"""

from __future__ import annotations

import datetime as dt
import platform
from collections import Counter
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from capq_lib import __version__
from capq_lib.experiments import records
from capq_lib.experiments.results import ResultsCache, git_commit

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
             "| what | value |", "| --- | --- |",
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
             "its page keeps the output of an earlier one.", "",
             *origins(report["profile_identity"], prov["git_commit"])]
    return "\n".join(lines) + "\n"


def _clean(commit: str | None) -> str:
    return (commit or "").removesuffix("+dirty")


def origins(identity: str, build_commit: str | None,
            cache: ResultsCache | None = None) -> list[str]:
    """The section "Where the numbers came from": records are reused across builds by
    configuration, so the pages can show numbers computed by earlier code (a restored
    cache, a checkout that moved on). Per kind of record: which commit and capq version
    computed how many of the records this build's pages read, those of another commit
    flagged."""
    cache = cache or ResultsCache()
    rows = []
    for kind in cache.kinds():
        counts = Counter((r["provenance"].get("git_commit"), r["provenance"].get("capq_version"))
                         for r in records.of_profile(kind, identity, cache))
        for (commit, version), n in sorted(counts.items(), key=lambda kv: -kv[1]):
            same = bool(build_commit) and _clean(commit) == _clean(build_commit)
            flag = "this build's code" if same else (
                "**other code than this build's**" if commit else "**unknown code**")
            rows.append(f"| {kind} | `{(commit or 'none')[:12]}` | {version} | {n} | {flag} |")
    if not rows:
        return []
    others = sum("other code" in r or "unknown code" in r for r in rows)
    head = ("Every record this build's pages read was computed by this build's commit."
            if not others else
            f"{others} group(s) of records below were computed by other code than this "
            f"build's commit (reused from the cache by configuration): their numbers may "
            f"differ from what this code would compute now; rebuilding with an empty results "
            f"folder (or `CAPQ_RESULTS_DIR` elsewhere) recomputes them.")
    return ["## Where the numbers came from", "", head, "",
            "| records of | git commit | capq | records | code |",
            "| --- | --- | --- | --- | --- |", *rows, ""]


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
