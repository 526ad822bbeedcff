"""Where the project's own files are: one definition, for every module that needs them.

In a checkout (or an editable install) the book's sources, its profiles and the paper's
values are the checkout's; a regular ``pip install`` puts the same files under
``<prefix>/share/capq`` (pyproject's data files), where they are found the same way.
Results and downloaded datasets go to the checkout's ``data/``, or for an installed package
to the user's data folder (``$XDG_DATA_HOME/capq``, else ``~/.local/share/capq``);
``$CAPQ_RESULTS_DIR`` and ``$CAPQ_DATA_DIR`` choose other places.
"""

from __future__ import annotations

import os
import site
import sys
import sysconfig
from pathlib import Path

#: the folder above the package: a checkout's root, or site-packages when installed
PROJECT_ROOT = Path(__file__).resolve().parents[2]
#: whether the package runs from a checkout of the project
CHECKOUT = (PROJECT_ROOT / "pyproject.toml").is_file() and (PROJECT_ROOT / "_toc.yml").is_file()


def _installed_book() -> Path | None:
    for base in (sysconfig.get_path("data"), sys.prefix, site.getuserbase()):
        folder = Path(base) / "share" / "capq"
        if (folder / "_toc.yml").is_file():
            return folder
    return None


#: where _config.yml, _toc.yml, book/ (notebooks, profiles) and data/paper/ are
BOOK_ROOT = PROJECT_ROOT if CHECKOUT else (_installed_book() or PROJECT_ROOT)


def workspace() -> Path:
    """The default home of results and datasets."""
    if CHECKOUT:
        return PROJECT_ROOT / "data"
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "capq"


#: environment variables that name files or folders, made absolute once at start
PATH_VARIABLES = ("CAPQ_RESULTS_DIR", "CAPQ_DATA_DIR", "CAPQ_TRUSTED_CHECKSUMS")
JOURNAL = "journal://"


def absolute_environment() -> None:
    """Make every path the environment names absolute, once, at start: chapters run in
    kernels whose working folder is the stage, so a relative ``CAPQ_RESULTS_DIR`` would
    split the cache between what a chapter writes and what ``capq results`` reads. A
    ``journal://`` storage with a relative path is made absolute the same way."""
    for var in PATH_VARIABLES:
        if os.environ.get(var):
            os.environ[var] = str(Path(os.environ[var]).expanduser().absolute())
    storage = os.environ.get("CAPQ_STORAGE", "")
    if storage.startswith(JOURNAL) and storage[len(JOURNAL):]:
        os.environ["CAPQ_STORAGE"] = JOURNAL + str(
            Path(storage[len(JOURNAL):]).expanduser().absolute())
