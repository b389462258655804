"""Oracle calls as the store keeps them in `oracle_calls`: the call cache, every LLM call a replayable record.

A call's status decides what a re-run does with it:
- final outcomes, replayed from the cache and never sent again: ok, refused, blocked,
  unsupported, truncated (the same request would get the same answer);
- failures, sent again by the next run: error (transport, rate limit, server) and invalid
  (structured output that did not validate after the re-asks).

Billing: `sent` lists every request sent to the provider under this key, over every run, with
the usage it reported (`outcome`, `input_tokens`, `output_tokens`, `reported`, `batch`): retries,
re-asks, refusals, and the sends of a call that failed and was made again on a re-run (the store
adds a new record's requests to those of the record it replaces). The spend is their sum; the
record's own `input_tokens`/`output_tokens` are what the call that made its answer cost.

Secrets: a call record keeps the rendered messages, generation settings, output schema name and
context, never request headers or API keys; `CallRecord` refuses any other request field and
redacts keys from error text.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import typing
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, Iterable

import pyarrow as pa
from pydantic import BaseModel

from crome.builder.store.columns import from_json, to_json
from crome.schemas.calls import Attempt, OracleRequest, OracleResponse, Status
from crome.schemas.hashing import canonical_json

STATUSES: frozenset[str] = frozenset(typing.get_args(Status))
# Final outcomes: the same request would get the same answer, so a re-run replays them.
FINAL_STATUSES: frozenset[str] = frozenset({"ok", "refused", "blocked", "unsupported", "truncated"})
# Failures: a re-run sends the request again.
RETRY_STATUSES: frozenset[str] = frozenset({"error", "invalid"})
# What a stored request may hold. Headers and keys have no place here, by construction.
REQUEST_FIELDS: frozenset[str] = frozenset({"messages", "settings", "schema", "context", "validation"})

# Error text comes from provider SDK exceptions, which may quote a key: such text is redacted
# before it is stored, by the values of these variables and by the shapes of common keys.
SECRET_ENV_VARS = ("OPENAI_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
_KEY_SHAPES = re.compile(r"\b(?:sk-[A-Za-z0-9_\-]{16,}|AIza[0-9A-Za-z_\-]{30,}|hf_[A-Za-z0-9]{30,})")


def redact(text: str | None) -> str | None:
    """`text` with API keys and tokens (from the environment or by shape) replaced by `***`."""
    if not text:
        return text
    for var in SECRET_ENV_VARS:
        secret = os.environ.get(var, "")
        if len(secret) >= 8:
            text = text.replace(secret, "***")
    return _KEY_SHAPES.sub("***", text)


# The JSON shape of `sent` for DuckDB's from_json (spend queries unnest it).
SENT_SHAPE = '[{"outcome": "VARCHAR", "input_tokens": "BIGINT", "output_tokens": "BIGINT", "reported": "BOOLEAN", "batch": "BOOLEAN"}]'


def sent_entry(attempt: Attempt, *, batch: bool = False) -> dict[str, Any]:
    """One request sent, as a record's `sent` list holds it."""
    return {"outcome": attempt.outcome, "input_tokens": attempt.input_tokens, "output_tokens": attempt.output_tokens,
            "reported": attempt.reported, "batch": batch}


def request_payload(request: OracleRequest, context_keys: Iterable[str] | None = None) -> dict[str, Any]:
    """What the store keeps of a request: messages, settings, output schema name, context and validation context.

    With `context_keys` (the oracle's `Capabilities.context_keys`) only the context the oracle
    reads is kept: what the cache key holds. A shared call's record then names no donor or
    seed of whichever pair asked first, and an LLM call's record is not weighed down by them.
    The validation context is kept so that a request rebuilt from the store (a batch job's
    answers) is checked exactly as the one a stage sent.
    """
    context = request.context if context_keys is None else {k: request.context[k] for k in context_keys if k in request.context}
    payload = {
        "messages": [dict(m) for m in request.messages],
        "settings": {"temperature": request.temperature, "max_output_tokens": request.max_output_tokens},
        "schema": request.output_model.__name__,
        # Round-trip through canonical JSON: the same conversion the cache key makes.
        "context": json.loads(canonical_json(context)) if context else {},
    }
    if request.validation:  # only requests checked beyond their schema carry it (verdicts)
        payload["validation"] = json.loads(canonical_json(request.validation))
    return payload


@dataclass
class CallRecord:
    """One oracle call as stored in `oracle_calls`; `created_at`/`updated_at` are set by the store."""

    key: str
    provider: str
    model: str
    task: str
    template: str  # name@version
    template_sha256: str
    request: dict[str, Any]
    status: str
    raw_response: str = ""
    parsed: dict[str, Any] | None = None  # the output model's model_dump(mode="json")
    input_tokens: int = 0
    output_tokens: int = 0
    latency_s: float = 0.0
    error: str | None = None
    attempts: int = 1
    batch_job_id: str | None = None
    sent: list[dict[str, Any]] = field(default_factory=list)  # every request billed under this key (see the module docstring)
    created_at: datetime | None = None
    updated_at: datetime | None = None

    def __post_init__(self) -> None:
        self.error = redact(self.error)
        if self.status not in STATUSES:
            raise ValueError(f"call {self.key}: unknown status {self.status!r}; expected one of {', '.join(sorted(STATUSES))}")
        extra = sorted(set(self.request) - REQUEST_FIELDS)
        if extra:
            raise ValueError(
                f"call {self.key}: request field(s) {', '.join(extra)} are not stored; "
                f"a stored request holds only {', '.join(sorted(REQUEST_FIELDS))} (never headers or keys)"
            )

    @property
    def replayable(self) -> bool:
        """A final outcome a re-run replays; False for failures (error, invalid) that it sends again."""
        return self.status in FINAL_STATUSES

    @classmethod
    def from_response(
        cls,
        key: str,
        request: OracleRequest,
        response: OracleResponse,
        provider: str,
        model: str,
        *,
        batch_job_id: str | None = None,
        context_keys: Iterable[str] | None = None,
    ) -> "CallRecord":
        return cls(
            key=key,
            provider=provider,
            model=model,
            task=request.task,
            template=request.template,
            template_sha256=request.template_sha256,
            request=request_payload(request, context_keys),
            status=response.status,
            raw_response=response.raw or "",
            parsed=None if response.parsed is None else response.parsed.model_dump(mode="json"),
            input_tokens=response.input_tokens,
            output_tokens=response.output_tokens,
            latency_s=response.latency_s,
            error=response.error,
            attempts=response.attempts,
            batch_job_id=batch_job_id,
            sent=[sent_entry(a, batch=batch_job_id is not None) for a in response.billed()],
        )

    def to_response(self, output_model: type[BaseModel], validation: dict[str, Any] | None = None) -> OracleResponse:
        """The stored call as an `OracleResponse` (cached=True), its output validated into `output_model`.

        With the request's `validation` context: a stored answer that today's checks refuse raises
        pydantic's ValidationError, and the caller treats the call as not made.
        """
        return OracleResponse(
            status=self.status,  # type: ignore[arg-type]
            parsed=None if self.parsed is None else output_model.model_validate(self.parsed, context=validation or None),
            raw=self.raw_response,
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            latency_s=self.latency_s,
            attempts=self.attempts,
            error=self.error,
            cached=True,
        )


CALL_COLUMNS = [f.name for f in fields(CallRecord)]
_CALL_JSON = {"request", "parsed", "sent"}
_CALL_TYPES = {
    "key": pa.string(), "provider": pa.string(), "model": pa.string(), "task": pa.string(),
    "template": pa.string(), "template_sha256": pa.string(), "request": pa.string(), "status": pa.string(),
    "raw_response": pa.string(), "parsed": pa.string(), "input_tokens": pa.int64(), "output_tokens": pa.int64(),
    "latency_s": pa.float64(), "error": pa.string(), "attempts": pa.int32(), "batch_job_id": pa.string(), "sent": pa.string(),
    "created_at": pa.timestamp("us"), "updated_at": pa.timestamp("us"),
}
# `oracle_calls` files each call under `k64` too (`key_k64`), the only column it indexes: an index of the
# 64-character keys costs DuckDB ~120 bytes of memory per call and cannot spill, one of 64-bit integers ~40.
CALL_STORED = [*CALL_COLUMNS, "k64"]
CALL_SCHEMA = pa.schema([(c, _CALL_TYPES[c]) for c in CALL_COLUMNS] + [("k64", pa.int64())])
CALL_SELECT = ", ".join(CALL_COLUMNS)
# What a cache lookup needs: everything but the billing history (a replay never reads it).
CALL_SELECT_REPLAY = ", ".join("'[]'" if c == "sent" else c for c in CALL_COLUMNS)
CALL_INSERT_ROW = f"INSERT INTO oracle_calls ({', '.join(CALL_STORED)}) VALUES ({', '.join('?' for _ in CALL_STORED)})"
CALL_INSERT_BATCH = f"INSERT INTO oracle_calls ({', '.join(CALL_STORED)}) SELECT {', '.join(CALL_STORED)} FROM {{batch}}"
# Below this many records, binding parameters beats registering an arrow table (a few ms each, measured).
SMALL_BATCH = 8


def key_k64(key: str) -> int:
    """A call key's 64-bit index value (blake2b of the key, signed): what lookups find a call by, then compare keys."""
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest(), "little", signed=True)


def call_values(record: CallRecord, created_at: datetime, updated_at: datetime) -> list[Any]:
    """The record's stored values (`CALL_STORED`: its columns, then `k64`), JSON columns as text."""
    values = []
    for c in CALL_COLUMNS:
        v = getattr(record, c)
        if c in _CALL_JSON:
            v = None if v is None else to_json(v)
        values.append(v)
    values[CALL_COLUMNS.index("created_at")] = created_at
    values[CALL_COLUMNS.index("updated_at")] = updated_at
    values.append(key_k64(record.key))
    return values


def call_from_row(row: tuple) -> CallRecord:
    """A row selected with `CALL_SELECT` as a `CallRecord`."""
    data = dict(zip(CALL_COLUMNS, row))
    for name in ("request", "parsed"):
        data[name] = from_json(data[name])
    sent = data["sent"]
    data["sent"] = [] if sent is None or sent == "[]" else from_json(sent)  # a replay selects it as '[]'
    return CallRecord(**data)


def call_stats(rows: list[tuple]) -> dict[str, Any]:
    """Fold (task, status, calls, input tokens, output tokens, latency) groups into the totals `RunStore.call_stats` reports."""
    stats: dict[str, Any] = {
        "total": 0, "failed": 0, "by_status": {}, "by_task": {}, "by_task_status": {},
        "input_tokens": 0, "output_tokens": 0, "latency_s": 0.0, "tokens_by_task": {},
    }
    for task, status, n, tin, tout, lat in rows:
        stats["total"] += n
        stats["failed"] += n if status in RETRY_STATUSES else 0
        stats["by_status"][status] = stats["by_status"].get(status, 0) + n
        stats["by_task"][task] = stats["by_task"].get(task, 0) + n
        stats["by_task_status"].setdefault(task, {})[status] = n
        tokens = stats["tokens_by_task"].setdefault(task, {"input": 0, "output": 0})
        tokens["input"] += int(tin)
        tokens["output"] += int(tout)
        stats["input_tokens"] += int(tin)
        stats["output_tokens"] += int(tout)
        stats["latency_s"] += float(lat)
    return stats
