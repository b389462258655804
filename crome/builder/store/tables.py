"""The re-derived tables (`source_pairs`, `quarantined`, `rejections`) and `artifacts`:
their Arrow schemas and how records convert to and from their columns (`rows` is filled in SQL,
by `work.BuildTables.publish_rows`).

Each re-derived table keeps an `ord` column: records come back in the order a build stored them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import duckdb
import pyarrow as pa

from crome.builder.store.columns import from_json, to_json
from crome.schemas.messages import AssistantMessage, Message
from crome.schemas.rows import Rejection
from crome.schemas.source import Quarantined, SourcePair

INSERT_CHUNK = 5_000  # rows per Arrow batch when replacing large tables

SOURCE_SCHEMA = pa.schema(
    [
        ("ord", pa.int64()), ("row", pa.int64()), ("source_id", pa.string()), ("prompt", pa.string()), ("chosen", pa.string()),
        ("rejected", pa.string()), ("preference", pa.float64()), ("subset", pa.string()), ("metadata", pa.string()),
    ]
)
QUARANTINE_SCHEMA = pa.schema([("ord", pa.int64()), ("row", pa.int64()), ("reason", pa.string()), ("detail", pa.string())])
ARTIFACT_SCHEMA = pa.schema(
    [
        ("kind", pa.string()), ("key", pa.string()), ("value", pa.string()),
        ("created_at", pa.timestamp("us")), ("updated_at", pa.timestamp("us")),
    ]
)
REJECTION_SCHEMA = pa.schema(
    [("ord", pa.int64())] + [(name, pa.string()) for name in Rejection.model_fields]
)

QUARANTINE_SELECT = 'SELECT "row", reason, detail FROM quarantined ORDER BY ord'
_REJECTION_COLUMNS = [c for c in REJECTION_SCHEMA.names if c != "ord"]


def source_records(pairs: Iterable[SourcePair]) -> list[dict[str, Any]]:
    return [
        {
            "ord": i, "row": p.row, "source_id": p.source_id,
            "prompt": to_json([m.model_dump(mode="json") for m in p.prompt]),
            "chosen": p.chosen.content, "rejected": p.rejected.content, "preference": p.preference,
            "subset": p.subset, "metadata": to_json(p.metadata),
        }
        for i, p in enumerate(pairs)
    ]


def source_from_row(values: tuple) -> SourcePair:
    """The columns of SOURCE_SCHEMA but `ord`, in order, as a `SourcePair`."""
    row, source_id, prompt, chosen, rejected, preference, subset, metadata = values
    return SourcePair(
        source_id=source_id,
        prompt=[Message(**m) for m in json.loads(prompt)],
        chosen=AssistantMessage(content=chosen),
        rejected=AssistantMessage(content=rejected),
        preference=preference,
        row=row,
        subset=subset,
        metadata=json.loads(metadata),
    )


def quarantined_from_row(values: tuple) -> Quarantined:
    row, reason, detail = values
    return Quarantined(row=row, reason=reason, detail=detail)


def artifact_table(kind: str, pairs: dict[str, Any], now: datetime) -> pa.Table:
    return pa.Table.from_pydict(
        {
            "kind": [kind] * len(pairs), "key": list(pairs), "value": [to_json(v) for v in pairs.values()],
            "created_at": [now] * len(pairs), "updated_at": [now] * len(pairs),
        },
        schema=ARTIFACT_SCHEMA,
    )


def rejection_records(items: Iterable[Rejection]) -> list[dict[str, Any]]:
    records = []
    for i, r in enumerate(items):
        data = r.model_dump(mode="json")
        data["candidate"] = None if r.candidate is None else to_json(data["candidate"])
        records.append({"ord": i, **data})
    return records


def rejection_from_row(values: tuple) -> Rejection:
    """The columns of REJECTION_SCHEMA but `ord`, in order, as a `Rejection`."""
    data = dict(zip(_REJECTION_COLUMNS, values))
    data["candidate"] = from_json(data["candidate"])
    return Rejection(**data)


def insert_arrow(con: duckdb.DuckDBPyConnection, sql: str, table: pa.Table) -> None:
    """Run `sql` with `{batch}` naming the arrow table: one statement for the whole batch."""
    name = f"_batch_{id(table):x}"
    con.register(name, table)
    try:
        con.execute(sql.format(batch=name))
    finally:
        con.unregister(name)
