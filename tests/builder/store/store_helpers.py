"""What the store's tests share: call records, dataset rows, child processes, rows read back with SQL, and tables
replaced whole (sources, quarantine, rows, rejections) as the store's tests set them up, through the store's connection."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from crome.builder.store import STORE_FILE, CallRecord, RunStore, tables
from crome.prompts import load_template
from crome.schemas.calls import OracleResponse
from crome.schemas.messages import user
from crome.schemas.oracle import Counterfactual
from crome.schemas.rows import DatasetRow, Provenance, Quality, Rejection
from crome.schemas.source import Quarantined, SourcePair

RUBRIC = {"name": "factuality", "definition": "States that Mars has two moons."}
OTHERS = [{"name": "completeness", "definition": "Names both moons."}]


def request(answer: str = "Mars has two moons: Phobos and Deimos.", task_template: str = "degrade@v1"):
    return load_template(task_template).request(
        context={"side": "chosen"}, prompt="user: How many moons does Mars have?", answer=answer,
        rubric=RUBRIC, other_rubrics=OTHERS,
    )


def record(key: str, status: str = "ok", *, rewrite: str = "Mars has three moons.", tokens: int = 10, task: str | None = None) -> CallRecord:
    req = request()
    parsed = Counterfactual(rewrite=rewrite, change="wrong count") if status == "ok" else None
    resp = OracleResponse(
        status=status, parsed=parsed, raw=parsed.model_dump_json() if parsed else "", input_tokens=tokens,
        output_tokens=tokens // 2, latency_s=0.25, attempts=2 if status == "error" else 1,
        error=None if status == "ok" else f"{status} happened",
    )
    rec = CallRecord.from_response(key, req, resp, "gemini", "gemini-2.0-flash")
    if task:
        rec.task = task
    return rec


def row(i: int, kind: str = "original") -> DatasetRow:
    return DatasetRow.make(
        prompt=[user(f"question {i}?")], chosen=f"good answer {i}", rejected=f"bad answer {i}",
        preference=0.5 if kind == "neutral" else 1.0, kind=kind,
        augmentation={"original": "original", "causal": "degrade", "neutral": "irrelevant_query"}[kind],
        attribute="factuality" if kind == "causal" else None, source_id=f"sha256:{i:064x}",
        provenance=Provenance(oracle="rules", template="degrade" if kind == "causal" else None, builder_version="0.1.0", seed=0),
        quality=Quality(checks=["edit_ratio"], edit_ratio=0.2) if kind == "causal" else None,
    )


def query(run_dir: Path, sql: str) -> list[tuple]:
    """`sql` on a closed run's store file, read-only."""
    con = duckdb.connect(str(run_dir / STORE_FILE), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def stored_rows(run_dir: Path) -> list[DatasetRow]:
    """The dataset rows of a closed run, in stored order: the store only writes them, so SQL reads them back."""
    return [DatasetRow.model_validate_json(data) for (data,) in query(run_dir, "SELECT data FROM rows ORDER BY ord")]


def run_child(code: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=timeout)


# --- whole tables replaced, as a test sets a store up --------------------------------------------

ROW_SCHEMA = pa.schema(
    [
        ("ord", pa.int64()), ("id", pa.string()), ("source_id", pa.string()), ("kind", pa.string()),
        ("augmentation", pa.string()), ("attribute", pa.string()), ("data", pa.string()),
    ]
)
_REJECTION_SELECT = (
    f"SELECT {', '.join(c for c in tables.REJECTION_SCHEMA.names if c != 'ord')} FROM rejections ORDER BY ord"
)


def _replace_table(store: RunStore, name: str, records: list[dict[str, Any]], schema: pa.Schema) -> int:
    """Replace every record of table `name` in one transaction."""
    table = pa.Table.from_pylist(records, schema=schema)

    def body(con: duckdb.DuckDBPyConnection) -> None:
        con.execute(f"DELETE FROM {name}")
        if records:
            tables.insert_arrow(con, f"INSERT INTO {name} BY NAME SELECT * FROM {{batch}}", table)

    store._transaction(body)
    return len(records)


def replace_sources(store: RunStore, pairs: Iterable[SourcePair]) -> int:
    """Replace the source pairs with `pairs`, in the order given."""
    return _replace_table(store, "source_pairs", tables.source_records(pairs), tables.SOURCE_SCHEMA)


def replace_quarantined(store: RunStore, items: Iterable[Quarantined]) -> int:
    """Replace the quarantined source rows with `items`, in the order given."""
    records = [{"ord": i, **q.model_dump()} for i, q in enumerate(items)]
    return _replace_table(store, "quarantined", records, tables.QUARANTINE_SCHEMA)


def _row_table(chunk: list[DatasetRow], start: int, seen: dict[str, int]) -> pa.Table:
    """Rows `start`, `start + 1`, ... as an Arrow batch; `seen` (id -> position) refuses a repeated id across chunks."""
    out = []
    for i, r in enumerate(chunk, start):
        if r.id in seen:
            raise ValueError(
                f"row {i} has the same id as row {seen[r.id]} ({r.id}, source {r.source_id}): "
                "duplicates must be rejected by dedup before the rows are stored"
            )
        seen[r.id] = i
        out.append(
            {
                "ord": i, "id": r.id, "source_id": r.source_id, "kind": r.kind,
                "augmentation": r.augmentation, "attribute": r.attribute, "data": r.model_dump_json(),
            }
        )
    return pa.Table.from_pylist(out, schema=ROW_SCHEMA)


def replace_rows(store: RunStore, rows: Iterable[DatasetRow]) -> int:
    """Replace all dataset rows with `rows`, kept in the order given (ids must be unique), a chunk at a time in one transaction."""
    seen: dict[str, int] = {}
    count = 0
    insert = "INSERT INTO rows BY NAME SELECT * FROM {batch}"

    def body(con: duckdb.DuckDBPyConnection) -> None:
        nonlocal count
        con.execute("DELETE FROM rows")
        chunk: list[DatasetRow] = []
        for r in rows:
            chunk.append(r)
            if len(chunk) == tables.INSERT_CHUNK:
                tables.insert_arrow(con, insert, _row_table(chunk, count, seen))
                count += len(chunk)
                chunk = []
        if chunk:
            tables.insert_arrow(con, insert, _row_table(chunk, count, seen))
            count += len(chunk)

    store._transaction(body)
    return count


def replace_rejections(store: RunStore, items: Iterable[Rejection]) -> int:
    """Replace all rejections with `items`, kept in the order given."""
    return _replace_table(store, "rejections", tables.rejection_records(items), tables.REJECTION_SCHEMA)


def iter_rejections(store: RunStore) -> Iterator[Rejection]:
    """The rejections in the order they were stored."""
    for values in store._stream(_REJECTION_SELECT):
        yield tables.rejection_from_row(values)
