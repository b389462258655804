"""`crome audit --sql`: one read-only statement over the `pairs` (and `rejections`) views, with a time and memory limit.

The statement is parsed by DuckDB first and refused unless it is one SELECT (or EXPLAIN); it runs
in the audit's sandbox (no file outside the dataset, configuration locked, a memory limit), is
interrupted after `timeout` seconds, and returns at most `max_rows` rows (DuckDB's memory limit
does not cover the rows handed to Python).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from crome.builder.hub.audit import DEFAULT_MEMORY_LIMIT, AuditError, AuditSource, check_unchanged, resolve, session

READ_STATEMENTS = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}
DEFAULT_TIMEOUT = 60.0  # seconds
DEFAULT_MAX_ROWS = 10_000


@dataclass
class QueryResult:
    columns: list[str]
    rows: list[tuple[Any, ...]]
    truncated: bool  # more rows than max_rows: only the first max_rows are here
    source: AuditSource


def check_read_only(sql: str) -> None:
    """Refuse anything but one SELECT (or EXPLAIN): the audit never writes, whatever the query says."""
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as e:
        raise AuditError(f"--sql does not parse: {str(e).splitlines()[0]}") from None
    if not statements:
        raise AuditError("--sql is empty")
    for i, st in enumerate(statements, 1):
        if st.type not in READ_STATEMENTS:
            # The user's own keyword: DuckDB files INSTALL under LOAD, PIVOT under MULTI.
            words = st.query.split()
            keyword = words[0].upper() if words else st.type.name
            raise AuditError(
                f"--sql refused: statement {i} is {keyword}, and crome audit only reads. Statements that write or change "
                "the session (INSERT, UPDATE, DELETE, DROP, CREATE, COPY ... TO, ATTACH, INSTALL, SET) are refused; "
                "query the `pairs` view with SELECT."
            )
    if len(statements) > 1:
        raise AuditError(f"--sql holds {len(statements)} statements: give one SELECT")


def run_query(
    path: str | Path, sql: str, *, timeout: float = DEFAULT_TIMEOUT, memory_limit: str = DEFAULT_MEMORY_LIMIT,
    max_rows: int = DEFAULT_MAX_ROWS, source: AuditSource | None = None,
) -> QueryResult:
    """The columns and (at most max_rows) rows of a read-only query against the views of PATH."""
    if timeout <= 0:
        raise AuditError(f"--timeout must be a positive number of seconds, got {timeout:g}")
    if max_rows < 1:
        raise AuditError(f"--max-rows must be at least 1, got {max_rows}")
    check_read_only(sql)
    source = source or resolve(path)
    with session(source, memory_limit=memory_limit) as con:
        expired = threading.Event()

        def stop() -> None:
            expired.set()
            con.interrupt()

        timer = threading.Timer(timeout, stop)
        timer.daemon = True
        timer.start()
        try:
            cur = con.execute(sql)
            columns = [d[0] for d in cur.description]
            rows = cur.fetchmany(max_rows + 1)
        except duckdb.Error as e:
            if expired.is_set():
                raise AuditError(f"--sql stopped after {timeout:g} s (--timeout {timeout:g}): narrow the query or raise --timeout") from None
            message = " ".join(str(e).split())
            if "Out of Memory" in message:  # DuckDB's advice names SET, which the sandbox refuses: ours instead
                message = message.split(" Possible solutions")[0] + f" (--memory-limit {memory_limit}: narrow the query or raise the limit)"
            raise AuditError(f"--sql failed: {message}") from None
        finally:
            timer.cancel()
    check_unchanged(source)
    return QueryResult(columns=columns, rows=rows[:max_rows], truncated=len(rows) > max_rows, source=source)


__all__ = ["DEFAULT_MAX_ROWS", "DEFAULT_TIMEOUT", "QueryResult", "check_read_only", "run_query"]
