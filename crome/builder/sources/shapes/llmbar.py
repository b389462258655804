"""LLMBar rows: ``input``/``output_1``/``output_2`` with a ``label`` (1 or 2) naming the better output."""

from __future__ import annotations

from collections.abc import Iterator

from crome.builder.sources.fields import _MISSING, Item, _extras, _label, _pair, _subset
from crome.builder.sources.shapes.generic import _resolve


def _llmbar(row: dict, index: int) -> Iterator[Item]:
    prompt, out1, out2 = _resolve(
        row.get("input", _MISSING), row.get("output_1", _MISSING), row.get("output_2", _MISSING),
        ("input", "output_1", "output_2"), True,
    )
    better = _label(row.get("label", _MISSING), "label")
    chosen, rejected = (out1, out2) if better in ("a", "tie") else (out2, out1)
    preference = 0.5 if better == "tie" else 1.0
    meta = _extras(row, ("input", "output_1", "output_2", "subset"))
    yield _pair(
        prompt, chosen, rejected, row=index, preference=preference, subset=_subset(row.get("subset")), metadata=meta,
        names=("output_1", "output_2"),
    )
