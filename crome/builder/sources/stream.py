"""Open a source, detect its shape from the first rows, and stream every row normalised: the public API."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from itertools import chain, islice
from typing import Any

from pydantic import ValidationError

from crome.builder.sources.detect import NORMALISERS, _detect_row
from crome.builder.sources.errors import SourceError, _first_line, _Reject, _Unreadable
from crome.builder.sources.fields import Item, Normaliser, _kind
from crome.builder.sources.readers import _hub_license, _open
from crome.builder.sources.shapes.generic import _mapped
from crome.schemas.source import Quarantined, SourcePair

MAPPING_KEYS = ("prompt", "chosen", "rejected", "label", "subset")
# Enough rows to see past a few null or malformed leading rows, few enough to buffer cheaply.
DETECT_ROWS = 20


def parse_mapping(mapping: str | Mapping[str, str]) -> dict[str, str]:
    """`prompt=question,chosen=good,rejected=bad` (or a dict) -> {key: column}, keys checked."""
    if isinstance(mapping, str):
        pairs: dict[str, str] = {}
        for part in (p.strip() for p in mapping.split(",")):
            if not part:
                continue
            key, sep, column = (s.strip() for s in part.partition("="))
            if not sep or not key or not column:
                raise SourceError(f"bad column mapping {part!r}: expected KEY=COLUMN pairs separated by commas, e.g. prompt=question,chosen=good,rejected=bad")
            if key in pairs:
                raise SourceError(f"bad column mapping: {key!r} is mapped twice")
            pairs[key] = column
        mapping = pairs
    out = {}
    for key, column in mapping.items():
        if key not in MAPPING_KEYS:
            raise SourceError(f"unknown mapping key {key!r}: expected {', '.join(MAPPING_KEYS)}")
        if not isinstance(column, str) or not column:
            raise SourceError(f"bad column mapping: {key!r} must name a column")
        out[key] = column
    if not out:
        raise SourceError("empty column mapping: expected KEY=COLUMN pairs, e.g. prompt=question,chosen=good,rejected=bad")
    return out


def _columns(rows: Iterable[Any]) -> list[str]:
    seen: dict[str, None] = {}
    for row in rows:
        if isinstance(row, dict):
            seen.update((str(k), None) for k in row)
    return list(seen)


class SourceStream(Iterator[Item]):
    """A streaming reader: iterate it for `SourcePair | Quarantined`; `shape`, `name`, counters as attributes.

    Opening reads and detects from the first rows only, so a bad path or mapping fails before any
    work starts; the rest is read lazily (JSONL line by line, Parquet by batches, Hub streamed).
    """

    def __init__(
        self,
        spec: str | os.PathLike,
        *,
        split: str | None = None,
        config: str | None = None,
        revision: str | None = None,
        mapping: str | Mapping[str, str] | None = None,
        limit: int | None = None,
        max_answer_chars: int | None = None,
    ) -> None:
        if limit is not None and limit < 1:
            raise SourceError(f"limit must be at least 1, got {limit}")
        if max_answer_chars is not None and max_answer_chars < 1:
            raise SourceError(f"max_answer_chars must be at least 1, got {max_answer_chars}")
        self.max_answer_chars = max_answer_chars
        self.spec = str(spec)
        self.split, self.config, self.revision = split, config, revision
        columns = parse_mapping(mapping) if mapping is not None else None
        self.mapping: dict[str, str] | None = None
        self.name, self.hub_id, reader = _open(self.spec, split, config, revision)
        self._reader = reader
        rows: Iterator[tuple[int, Any]] = islice(reader, limit) if limit is not None else reader
        try:
            head = list(islice(rows, DETECT_ROWS))
            if not head:
                raise SourceError(f"cannot read {self.name}: it holds no rows")
            self.columns = _columns(row for _, row in head)
            if columns is not None:
                self.shape = "mapped"
                self._normalise = self._check_mapping(columns)
            else:
                self.shape = self._detect([row for _, row in head])
                self._normalise = NORMALISERS[self.shape]
        except BaseException:
            reader.close()
            raise
        # Read after load_dataset ran: that is what puts the card in the local cache.
        self.license = _hub_license(self.hub_id, revision) if self.hub_id else None
        self.rows_read = 0
        self.pairs = 0
        self.quarantined = 0
        self.reasons: Counter[str] = Counter()
        self._items = self._generate(chain(head, rows))

    def _detect(self, rows: list[Any]) -> str:
        votes = Counter(s for s in map(_detect_row, rows) if s is not None)
        if votes:
            return votes.most_common(1)[0][0]
        if not any(isinstance(r, dict) for r in rows):
            first = next((r for r in rows if isinstance(r, _Unreadable)), None)
            raise SourceError(f"cannot read {self.name}: {first.detail if first else 'the rows are not objects'}")
        raise SourceError(
            f"cannot detect the shape of {self.name}: columns are: {', '.join(self.columns) or '(none)'}; expected "
            "prompt/chosen/rejected, chosen/rejected (transcripts or message lists), conversations/chosen/rejected, "
            "input/output_1/output_2/label, evaluation_sample, or a column mapping such as prompt=COL,chosen=COL,rejected=COL"
        )

    def _check_mapping(self, columns: dict[str, str]) -> Normaliser:
        """Check the mapping against the real columns, fill unmapped keys whose default column exists."""
        found = ", ".join(self.columns) or "(none)"
        for key, column in columns.items():
            if column not in self.columns:
                raise SourceError(f"column {column!r} not found (mapped to {key}); columns are: {found}")
        for key in ("chosen", "rejected"):
            if key not in columns:
                if key not in self.columns:
                    raise SourceError(f"column {key!r} not found (map it with {key}=COLUMN); columns are: {found}")
                columns[key] = key
        has_prompt = "prompt" in columns or "prompt" in self.columns
        if has_prompt:
            columns.setdefault("prompt", "prompt")
        if "subset" not in columns and "subset" in self.columns:
            columns["subset"] = "subset"
        self.mapping = dict(columns)
        return _mapped(columns, has_prompt)

    def _generate(self, rows: Iterator[tuple[int, Any]]) -> Iterator[Item]:
        for index, row in rows:
            self.rows_read += 1
            if isinstance(row, _Unreadable):
                items: list[Item] = [Quarantined(row=index, reason=row.reason, detail=row.detail)]
            elif not isinstance(row, dict):
                items = [Quarantined(row=index, reason="bad_row", detail=f"row is {_kind(row)}, expected an object")]
            else:
                try:
                    items = [self._size_guard(item) for item in self._normalise(row, index)]
                except _Reject as e:
                    items = [Quarantined(row=index, reason=e.reason, detail=e.detail)]
                except ValidationError as e:  # a check above missed a schema rule: record it, keep going
                    items = [Quarantined(row=index, reason="invalid_pair", detail=_first_line(e))]
                except RecursionError:
                    items = [Quarantined(row=index, reason="bad_row", detail="the row nests lists or objects too deeply to read")]
            for item in items:
                if isinstance(item, Quarantined):
                    self.quarantined += 1
                    self.reasons[item.reason] += 1
                else:
                    self.pairs += 1
                yield item

    def _size_guard(self, item: Item) -> Item:
        """A pair with an answer over max_answer_chars becomes a quarantine: one outsized answer can cost more than a whole build."""
        limit = self.max_answer_chars
        if limit is None or not isinstance(item, SourcePair):
            return item
        for side in ("chosen", "rejected"):
            n = len(getattr(item, side).content)
            if n > limit:
                return Quarantined(row=item.row, reason="answer_too_long",
                                   detail=f"the {side} answer has {n:,} characters, over the limit of {limit:,} (--max-answer-chars)")
        return item

    def __iter__(self) -> "SourceStream":
        return self

    def __next__(self) -> Item:
        return next(self._items)

    def close(self) -> None:
        """Release the open file (also happens when the stream is exhausted)."""
        self._items.close()
        self._reader.close()

    def __enter__(self) -> "SourceStream":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def iter_source(
    spec: str | os.PathLike,
    *,
    split: str | None = None,
    config: str | None = None,
    revision: str | None = None,
    mapping: str | Mapping[str, str] | None = None,
    limit: int | None = None,
    max_answer_chars: int | None = None,
) -> SourceStream:
    """Stream a source as `SourcePair | Quarantined`, in source order; raises `SourceError` at once if unreadable."""
    return SourceStream(spec, split=split, config=config, revision=revision, mapping=mapping, limit=limit,
                        max_answer_chars=max_answer_chars)


@dataclass
class LoadResult:
    """A whole source, normalised: pairs, quarantined rows and what was read."""

    pairs: list[SourcePair]
    quarantined: list[Quarantined]
    shape: str
    total_rows: int
    name: str
    hub_id: str | None = None
    license: str | None = None
    quarantine_reasons: dict[str, int] = field(default_factory=dict)


def load_source(
    spec: str | os.PathLike,
    *,
    split: str | None = None,
    config: str | None = None,
    revision: str | None = None,
    mapping: str | Mapping[str, str] | None = None,
    limit: int | None = None,
    max_answer_chars: int | None = None,
) -> LoadResult:
    """`iter_source` collected into a `LoadResult`."""
    pairs: list[SourcePair] = []
    quarantined: list[Quarantined] = []
    with iter_source(spec, split=split, config=config, revision=revision, mapping=mapping, limit=limit,
                     max_answer_chars=max_answer_chars) as stream:
        for item in stream:
            (quarantined if isinstance(item, Quarantined) else pairs).append(item)
    return LoadResult(
        pairs=pairs,
        quarantined=quarantined,
        shape=stream.shape,
        total_rows=stream.rows_read,
        name=stream.name,
        hub_id=stream.hub_id,
        license=stream.license,
        quarantine_reasons=dict(sorted(stream.reasons.items())),
    )
