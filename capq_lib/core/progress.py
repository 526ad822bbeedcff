"""Progress bars that suit where the code runs.

In Jupyter, tqdm.auto draws a widget. Under the batch runner (papermill, ``CAPQ_BATCH=1``)
a plain text bar on stderr is streamed to the terminal by the runner and kept out of the
built pages, so the book carries no widget state for a progress bar.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import Any

from tqdm import auto, std


def bar(iterable: Iterable | None = None, **kwargs: Any):
    """A tqdm bar over ``iterable``; text on stderr in batch runs, tqdm.auto otherwise."""
    if os.environ.get("CAPQ_BATCH"):
        kwargs.setdefault("mininterval", 5.0)
        kwargs.setdefault("file", sys.stderr)
        kwargs.setdefault("ascii", True)
        return std.tqdm(iterable, **kwargs)
    return auto.tqdm(iterable, **kwargs)
