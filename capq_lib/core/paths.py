"""Where the project's own files are: one definition, for every module that needs them."""

from __future__ import annotations

from pathlib import Path

#: the checkout (or source tree) that holds book/, data/ and capq_lib/
PROJECT_ROOT = Path(__file__).resolve().parents[2]
