"""The run store: one DuckDB file per run (RUN_DIR/crome.duckdb) holding everything a build derives.

Tables: `source_pairs` and `quarantined` (the normalised source), `oracle_calls` (the call cache:
every LLM call as a replayable record, with every request sent for it and the usage it reported:
what was billed; one record per key, found through an index of `k64`, a 64-bit value of the key),
`artifacts` (rubrics per prompt, batch jobs, run state),
`rows` and `rejections` (re-derived by each build), `meta`.

Modules:
- `run_store`: `RunStore`, the one API: open/close, transactions, and every table's reads and writes;
- `migrations`: the schema, an ordered list of named migrations, each applied once and recorded in `_migrations`;
- `calls`: `CallRecord`, what a call stores (never headers or keys), which statuses a re-run replays;
- `tables`: Arrow schemas and record conversion of sources, quarantine, rejections, artifacts;
- `lock`: one writer per run (an flock naming its pid), and `RunInUseError` naming the holder;
- `columns`, `errors`: column conventions (naive UTC, canonical JSON) and the exceptions.

Callers import from this package, not from its modules.
"""

from crome.builder.store.calls import FINAL_STATUSES, RETRY_STATUSES, CallRecord, redact, request_payload, sent_entry
from crome.builder.store.errors import RunInUseError, RunStoreError
from crome.builder.store.lock import LOCK_FILE
from crome.builder.store.migrations import MIGRATIONS, Migration, apply_migrations, migration
from crome.builder.store.run_store import STORE_FILE, RunStore

__all__ = [
    "CallRecord", "FINAL_STATUSES", "LOCK_FILE", "MIGRATIONS", "Migration", "RETRY_STATUSES", "RunInUseError", "RunStore",
    "RunStoreError", "STORE_FILE", "apply_migrations", "migration", "redact", "request_payload", "sent_entry",
]
