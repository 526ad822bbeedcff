"""Seeds derived from names: the same in every process and on every machine, so a trial
planned by one worker and trained by another sees the same data and initialization."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def seed_from_text(text: str) -> int:
    """A 31-bit seed from the SHA-256 of ``text``."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big") >> 1


def derived_seed(*parts: Any) -> int:
    """A seed from any JSON-able parts (their order matters, dict key order does not)."""
    return seed_from_text(json.dumps(parts, sort_keys=True, default=str))
