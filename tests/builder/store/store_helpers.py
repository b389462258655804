"""What the store's tests share: call records, dataset rows, child processes, rows read back with SQL."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb

from crome.builder.store import STORE_FILE, CallRecord
from crome.prompts import load_template
from crome.schemas.calls import OracleResponse
from crome.schemas.messages import user
from crome.schemas.oracle import Counterfactual
from crome.schemas.rows import DatasetRow, Provenance, Quality

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
