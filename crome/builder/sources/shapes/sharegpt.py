"""ShareGPT / LLaMA-Factory rows: ``conversations`` of ``{from, value}`` plus chosen/rejected message objects."""

from __future__ import annotations

from collections.abc import Iterator

from crome.builder.sources.fields import _MISSING, Item, _answer, _extras, _messages, _pair, _subset
from crome.schemas.messages import Message


def _sharegpt(row: dict, index: int) -> Iterator[Item]:
    prompt = _messages(row.get("conversations", _MISSING), "conversations")
    system = row.get("system")
    # LLaMA-Factory keeps an optional system prompt in its own column.
    if isinstance(system, str) and system.strip() and not (prompt and prompt[0].role == "system"):
        prompt = [Message(role="system", content=system), *prompt]
    chosen = _answer(row.get("chosen", _MISSING), "chosen", prompt)
    rejected = _answer(row.get("rejected", _MISSING), "rejected", prompt)
    meta = _extras(row, ("conversations", "chosen", "rejected", "system", "subset"))
    yield _pair(prompt, chosen, rejected, row=index, subset=_subset(row.get("subset")), metadata=meta)
