"""Streaming: rows come out lazily, with the shape and counters on the stream."""

from __future__ import annotations

import gzip
import json

import pytest
from sources_helpers import write_jsonl

from crome.builder.sources import SourceError, iter_source


def test_streaming_yields_rows_before_a_corrupt_tail(tmp_path):
    # A truncated gzip fails only where it breaks: rows before it were already streamed out.
    rows = [{"prompt": f"P{i}", "chosen": f"a{i} " * 50, "rejected": f"b{i} " * 50} for i in range(2000)]
    data = gzip.compress("".join(json.dumps(r) + "\n" for r in rows).encode())
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(data[: len(data) // 2])
    stream = iter_source(path)
    seen = []
    with pytest.raises(SourceError, match=r"^cannot read .*cut\.jsonl\.gz: "):
        for item in stream:
            seen.append(item)
    assert len(seen) > 100
    assert [p.row for p in seen] == list(range(len(seen)))


def test_iter_source_exposes_shape_and_counts(tmp_path):
    path = write_jsonl(tmp_path / "s.jsonl", [{"prompt": "P", "chosen": "a", "rejected": "b"}, {"prompt": "P", "chosen": "a", "rejected": "a"}])
    with iter_source(path) as stream:
        assert (stream.shape, stream.columns) == ("plain", ["prompt", "chosen", "rejected"])
        items = list(stream)
    assert [type(i).__name__ for i in items] == ["SourcePair", "Quarantined"]
    assert (stream.rows_read, stream.pairs, stream.quarantined, dict(stream.reasons)) == (2, 1, 1, {"identical_answers": 1})


def test_limit_must_be_positive(tmp_path):
    with pytest.raises(SourceError, match="limit must be at least 1, got 0"):
        iter_source(write_jsonl(tmp_path / "s.jsonl", [{"prompt": "P", "chosen": "a", "rejected": "b"}]), limit=0)
