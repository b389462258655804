"""Oracle cost from a small editable price table (USD per million input and output tokens).

The packaged table is `prices.toml` next to this module; a file named by `CROME_PRICES` overrides
it model by model. An unknown model costs `None` (and warns once): a cost cap then cannot be
enforced for it, which the caller should say rather than pretend the run is free.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

log = logging.getLogger(__name__)

PRICES_ENV = "CROME_PRICES"
BATCH_DISCOUNT = 0.5  # OpenAI Batch and Gemini Batch both bill half the synchronous price

# Snapshot and release suffixes that do not change the price family.
_SUFFIXES = (
    re.compile(r"-\d{4}-\d{2}-\d{2}$"),  # gpt-4o-mini-2024-07-18
    re.compile(r"-\d{3,4}$"),  # gemini-2.0-flash-001, gpt-4-0613
    re.compile(r"-(latest|preview|exp)(-[0-9a-z-]+)?$"),  # gemini-2.5-flash-preview-05-20
)

_warned: set[str] = set()


@dataclass(frozen=True)
class Price:
    input: float  # USD per million input tokens
    output: float  # USD per million output tokens
    batch_input: float | None = None
    batch_output: float | None = None

    def cost(self, input_tokens: int, output_tokens: int, batch: bool = False) -> float:
        rate_in, rate_out = self.input, self.output
        if batch:
            rate_in = self.batch_input if self.batch_input is not None else self.input * BATCH_DISCOUNT
            rate_out = self.batch_output if self.batch_output is not None else self.output * BATCH_DISCOUNT
        return (input_tokens * rate_in + output_tokens * rate_out) / 1_000_000


def _parse_table(data: dict[str, Any], source: str) -> dict[str, Price]:
    models = data.get("models")
    if not isinstance(models, dict):
        raise ValueError(f"price table {source}: expected a [models.\"NAME\"] table per model")
    table: dict[str, Price] = {}
    for name, entry in models.items():
        if not isinstance(entry, dict):
            raise ValueError(f"price table {source}: models.{name} must be a table with input and output")
        fields: dict[str, float | None] = {}
        for key in ("input", "output", "batch_input", "batch_output"):
            value = entry.get(key)
            if value is None and key in ("input", "output"):
                raise ValueError(f"price table {source}: models.{name} lacks {key} (USD per million tokens)")
            if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0):
                raise ValueError(f"price table {source}: models.{name}.{key} must be a non-negative number, got {value!r}")
            fields[key] = None if value is None else float(value)
        unknown = set(entry) - {"input", "output", "batch_input", "batch_output"}
        if unknown:
            raise ValueError(f"price table {source}: models.{name} has unknown keys {sorted(unknown)}")
        table[name.lower()] = Price(**fields)  # type: ignore[arg-type]
    return table


@functools.lru_cache(maxsize=8)
def _load(override: str | None) -> dict[str, Price]:
    packaged = resources.files(__package__).joinpath("prices.toml").read_text(encoding="utf-8")
    table = _parse_table(tomllib.loads(packaged), "prices.toml (packaged)")
    if override:
        path = Path(override)
        if not path.is_file():
            raise ValueError(f"{PRICES_ENV}={override}: no such file")
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{PRICES_ENV}={override}: not valid TOML: {exc}") from exc
        table.update(_parse_table(data, str(path)))
    return table


def price_table() -> dict[str, Price]:
    """The packaged table with the `CROME_PRICES` file's entries on top."""
    return dict(_load(os.environ.get(PRICES_ENV) or None))


def _candidates(model: str) -> list[str]:
    name = model.strip().lower()
    for prefix in ("openai:", "gemini:", "models/"):
        if name.startswith(prefix):
            name = name[len(prefix) :]
    names = [name]
    changed = True
    while changed:
        changed = False
        for pattern in _SUFFIXES:
            shorter = pattern.sub("", names[-1])
            if shorter != names[-1] and shorter:
                names.append(shorter)
                changed = True
    return names


def price_for(model: str) -> Price | None:
    table = price_table()
    for name in _candidates(model):
        if name in table:
            return table[name]
    return None


def estimate_cost(model: str, input_tokens: int, output_tokens: int, batch: bool = False) -> float | None:
    """USD for this many tokens on `model`, or None (warned once) if the table does not know it."""
    price = price_for(model)
    if price is None:
        if model not in _warned:
            _warned.add(model)
            log.warning("no price for model %r: add it to a price file named by %s to track cost", model, PRICES_ENV)
        return None
    return price.cost(input_tokens, output_tokens, batch=batch)
