"""RM-Bench rows: a ``prompt`` with three chosen and three rejected style variants, expanded to nine pairs."""

from __future__ import annotations

from collections.abc import Iterator

from crome.builder.sources.errors import _Reject
from crome.builder.sources.fields import _MISSING, Item, _answer, _extras, _kind, _pair, _prompt, _subset, _text
from crome.schemas.source import Quarantined

# RM-Bench orders each prompt's three answers by style.
RMBENCH_STYLES = ("concise", "detailed_plain", "detailed_markdown")


def _rmbench(row: dict, index: int) -> Iterator[Item]:
    """All chosen_i x rejected_j combinations; a bad combination is quarantined on its own."""
    prompt = _prompt(row.get("prompt", _MISSING), "prompt")
    variants = {}
    for side in ("chosen", "rejected"):
        value = row.get(side, _MISSING)
        if value is _MISSING or value is None:
            _text(value, side)  # raises missing_field
        if not isinstance(value, list):
            raise _Reject("non_string_content", f"{side} is {_kind(value)}, expected a list of answers")
        if not value:
            raise _Reject("empty_field", f"{side} is an empty list")
        variants[side] = value
    subset = _subset(row.get("subset"))
    extras = _extras(row, ("prompt", "chosen", "rejected", "subset"))
    styles = RMBENCH_STYLES if len(variants["chosen"]) == len(variants["rejected"]) == len(RMBENCH_STYLES) else None
    for i, c in enumerate(variants["chosen"]):
        for j, r in enumerate(variants["rejected"]):
            meta = {**extras, "chosen_style": i, "rejected_style": j}
            if styles:
                meta["chosen_style_name"] = styles[i]
                meta["rejected_style_name"] = styles[j]
            try:
                chosen = _answer(c, f"chosen[{i}]", prompt)
                rejected = _answer(r, f"rejected[{j}]", prompt)
                yield _pair(prompt, chosen, rejected, row=index, subset=subset, metadata=meta)
            except _Reject as e:
                yield Quarantined(row=index, reason=e.reason, detail=f"chosen[{i}] x rejected[{j}]: {e.detail}")
