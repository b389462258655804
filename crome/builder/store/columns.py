"""How values are held in the store's columns: timestamps as naive UTC, JSON as canonical text."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from crome.schemas.hashing import canonical_json


def utc_now() -> datetime:
    """UTC wall time, naive, as DuckDB TIMESTAMP columns hold it."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def to_json(value: Any) -> str:
    return canonical_json(value)


def from_json(text: str | None) -> Any:
    return None if text is None else json.loads(text)
