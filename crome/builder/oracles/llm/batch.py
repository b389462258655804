"""Provider batch APIs (OpenAI Batch, Gemini Batch): submit one job, find it again, poll it, read its answers.

A backend knows one provider's job API and nothing of the run: `crome.builder.run.batch` decides what
to submit, keeps the jobs in the run store and ingests answers into the call cache. Request bodies
and response parsing come from the oracle itself (`batch_body` / `batch_request`,
`batch_completion`, `batch_response`), so a batch item is sent and validated as the online call is.

Job-management requests are sent once, never retried by the SDK: a create that timed out may
still have made the job, and a blind retry would pay for it twice. Every job carries its intent
id (OpenAI: metadata and file name; Gemini: display name), by which the next pass finds it.
"""

from __future__ import annotations

import abc
import json
import logging
from dataclasses import dataclass, field
from typing import Any, ClassVar

from crome.builder.oracles.base import Oracle, OracleRequest, OracleResponse
from crome.builder.oracles.llm.client import LLMOracle
from crome.builder.oracles.llm.retry import redact

log = logging.getLogger("crome.batch")

# How far back the provider's job list is searched for a job this run may have made.
MAX_LISTED = 2000


def tag(intent: str) -> str:
    """The short name a job carries at the provider: `crome-` and 128 bits of the intent id."""
    return "crome-" + intent.split(":")[-1][:32]


@dataclass
class JobStatus:
    state: str  # running | completed | failed | expired | cancelled
    provider_state: str  # the provider's own word for it
    counts: dict[str, int] = field(default_factory=dict)  # as the provider reports them (may be empty)
    error: str | None = None  # why a job failed as a whole

    @property
    def finished(self) -> bool:
        return self.state != "running"


class BatchBackend(abc.ABC):
    provider: ClassVar[str]
    # Per-job limits of the provider; a pass with more requests is split into several jobs.
    max_items: ClassVar[int]
    max_bytes: ClassVar[int]

    def __init__(self, oracle: LLMOracle) -> None:
        self.oracle = oracle

    def item_size(self, request: OracleRequest) -> int:
        """Bytes an item adds to a job (its messages plus room for settings and schema)."""
        return sum(len(m["content"].encode()) for m in request.messages) + 4096

    @abc.abstractmethod
    def submit(self, items: list[tuple[str, OracleRequest]], intent: str) -> str:
        """Create one job for `items` (cache key, request) carrying `intent`; return the provider's job id."""

    @abc.abstractmethod
    def find(self, intent: str) -> str | None:
        """The id of the job that carries `intent`, if the provider has one."""

    @abc.abstractmethod
    def poll(self, job_id: str) -> JobStatus: ...

    @abc.abstractmethod
    def results(self, job_id: str, keys: list[str], requests: dict[str, OracleRequest], attempts: dict[str, int]) -> dict[str, OracleResponse]:
        """The answers a finished job holds, by cache key; items without one are absent."""

    def close(self) -> None:
        return None


class OpenAIBatch(BatchBackend):
    """Files API upload (JSONL, purpose `batch`) and the Batches API, `custom_id` = the call's cache key."""

    provider: ClassVar[str] = "openai"
    max_items: ClassVar[int] = 50_000
    max_bytes: ClassVar[int] = 190_000_000  # the API takes input files up to 200 MB
    endpoint: ClassVar[str] = "/v1/chat/completions"
    _STATES: ClassVar[dict[str, str]] = {"completed": "completed", "failed": "failed", "expired": "expired", "cancelled": "cancelled"}

    def __init__(self, oracle: LLMOracle) -> None:
        import openai

        super().__init__(oracle)
        # Uploads of 100+ MB take longer than one chat call: at least ten minutes.
        self.client = openai.OpenAI(api_key=oracle._api_key, base_url=oracle.base_url, max_retries=0, timeout=max(oracle.timeout, 600.0))
        self._jobs: dict[str, Any] = {}

    def _line(self, key: str, request: OracleRequest) -> bytes:
        body = self.oracle.batch_body(request)  # type: ignore[attr-defined]
        return json.dumps({"custom_id": key, "method": "POST", "url": self.endpoint, "body": body}, ensure_ascii=False).encode() + b"\n"

    def submit(self, items: list[tuple[str, OracleRequest]], intent: str) -> str:
        data = b"".join(self._line(key, request) for key, request in items)
        uploaded = self.client.files.create(file=(f"{tag(intent)}.jsonl", data, "application/jsonl"), purpose="batch")
        job = self.client.batches.create(
            input_file_id=uploaded.id,
            endpoint=self.endpoint,
            completion_window="24h",
            metadata={"crome_intent": intent, "crome_items": str(len(items))},
        )
        return job.id

    def find(self, intent: str) -> str | None:
        for i, job in enumerate(self.client.batches.list(limit=100)):
            if (job.metadata or {}).get("crome_intent") == intent:
                return job.id
            if i >= MAX_LISTED:
                break
        return None

    def poll(self, job_id: str) -> JobStatus:
        job = self.client.batches.retrieve(job_id)
        self._jobs[job_id] = job
        counts = job.request_counts.model_dump() if job.request_counts is not None else {}
        error = None
        if job.errors is not None and job.errors.data:
            error = "; ".join(f"{e.code}: {e.message}" + (f" (line {e.line})" if e.line else "") for e in job.errors.data[:5])
        return JobStatus(self._STATES.get(job.status, "running"), job.status, counts, redact(error) if error else None)

    def results(self, job_id: str, keys: list[str], requests: dict[str, OracleRequest], attempts: dict[str, int]) -> dict[str, OracleResponse]:
        job = self._jobs.get(job_id) or self.client.batches.retrieve(job_id)
        out: dict[str, OracleResponse] = {}
        # Expired and failed items are in the error file, answers in the output file (in any order).
        for file_id in (job.output_file_id, job.error_file_id):
            if not file_id:
                continue
            text = self.client.files.content(file_id).text
            for line in text.splitlines():
                if not line.strip():
                    continue
                try:
                    item = json.loads(line)
                except json.JSONDecodeError:
                    log.warning("batch %s: a result line is not JSON; skipped", job_id)
                    continue
                key = item.get("custom_id")
                if key in requests and key not in out:
                    out[key] = self._item(requests[key], item, attempts.get(key, 1))
        return out

    def _item(self, request: OracleRequest, item: dict[str, Any], attempts: int) -> OracleResponse:
        error = item.get("error")
        if error:
            return self.oracle.batch_error(f"batch item failed: {error.get('code')}: {error.get('message')}", attempts=attempts)
        response = item.get("response") or {}
        body = response.get("body") or {}
        status = response.get("status_code")
        if status != 200:
            message = (body.get("error") or {}).get("message") if isinstance(body, dict) else None
            return self.oracle.batch_error(f"batch item failed ({status}): {message or 'no message'}", attempts=attempts)
        try:
            completion = self.oracle.batch_completion(body)  # type: ignore[attr-defined]
        except Exception as exc:  # noqa: BLE001 - a body that is not a chat completion is this item's failure
            return self.oracle.batch_error(f"batch item body is not a chat completion: {type(exc).__name__}", attempts=attempts)
        return self.oracle.batch_response(request, completion, attempts=attempts)

    def close(self) -> None:
        self.client.close()


class GeminiBatch(BatchBackend):
    """google-genai `batches` with inlined requests; each item's metadata carries its cache key."""

    provider: ClassVar[str] = "gemini"
    max_items: ClassVar[int] = 50_000
    max_bytes: ClassVar[int] = 18_000_000  # a create request with inlined items may be up to 20 MB
    _STATES: ClassVar[dict[str, str]] = {
        "JOB_STATE_SUCCEEDED": "completed", "JOB_STATE_FAILED": "failed", "JOB_STATE_EXPIRED": "expired",
        "JOB_STATE_CANCELLED": "cancelled", "JOB_STATE_PARTIALLY_SUCCEEDED": "completed",
    }

    def __init__(self, oracle: LLMOracle) -> None:
        from google import genai
        from google.genai import types

        super().__init__(oracle)
        http_options = types.HttpOptions(
            base_url=oracle.base_url,
            timeout=int(max(oracle.timeout, 600.0) * 1000),  # milliseconds
            retry_options=types.HttpRetryOptions(attempts=1),
        )
        self.client = genai.Client(api_key=oracle._api_key, vertexai=False, http_options=http_options)
        self._jobs: dict[str, Any] = {}

    def submit(self, items: list[tuple[str, OracleRequest]], intent: str) -> str:
        src = [self.oracle.batch_request(key, request) for key, request in items]  # type: ignore[attr-defined]
        job = self.client.batches.create(model=self.oracle.model, src=src, config={"display_name": tag(intent)})
        return job.name

    def find(self, intent: str) -> str | None:
        for i, job in enumerate(self.client.batches.list(config={"page_size": 100})):
            if job.display_name == tag(intent):
                return job.name
            if i >= MAX_LISTED:
                break
        return None

    def poll(self, job_id: str) -> JobStatus:
        job = self.client.batches.get(name=job_id)
        self._jobs[job_id] = job
        state = str(getattr(job.state, "name", None) or job.state or "JOB_STATE_UNSPECIFIED")
        responses = job.dest.inlined_responses if job.dest is not None and job.dest.inlined_responses else []
        counts = {"returned": len(responses)} if responses else {}
        error = f"{job.error.code}: {job.error.message}" if getattr(job, "error", None) else None
        return JobStatus(self._STATES.get(state, "running"), state, counts, redact(error) if error else None)

    def results(self, job_id: str, keys: list[str], requests: dict[str, OracleRequest], attempts: dict[str, int]) -> dict[str, OracleResponse]:
        job = self._jobs.get(job_id) or self.client.batches.get(name=job_id)
        responses = job.dest.inlined_responses if job.dest is not None and job.dest.inlined_responses else []
        out: dict[str, OracleResponse] = {}
        for i, item in enumerate(responses):
            # The key comes back in the item's metadata; responses are also in request order.
            key = (item.metadata or {}).get("crome_key") or (keys[i] if i < len(keys) else None)
            if key not in requests or key in out:
                continue
            n = attempts.get(key, 1)
            if item.error is not None:
                out[key] = self.oracle.batch_error(f"batch item failed ({item.error.code}): {item.error.message}", attempts=n)
            elif item.response is None:
                out[key] = self.oracle.batch_error("batch item has neither a response nor an error", attempts=n)
            else:
                out[key] = self.oracle.batch_response(requests[key], self.oracle.batch_completion(item.response), attempts=n)  # type: ignore[attr-defined]
        return out

    def close(self) -> None:
        self.client.close()


BACKENDS: dict[str, type[BatchBackend]] = {"openai": OpenAIBatch, "gemini": GeminiBatch}


def batch_backend(oracle: Oracle) -> BatchBackend:
    """The batch API of `oracle`'s provider; a clear error where there is none (rules, custom oracles)."""
    backend = BACKENDS.get(oracle.provider)
    if backend is None or not isinstance(oracle, LLMOracle):
        raise ValueError(
            f"--batch needs an LLM oracle with a batch API (openai:MODEL or gemini:MODEL); {oracle.name} has nothing to batch"
            + (": the rules oracle runs offline, at no cost" if oracle.provider == "rules" else "")
        )
    return backend(oracle)


__all__ = ["BACKENDS", "BatchBackend", "GeminiBatch", "JobStatus", "OpenAIBatch", "batch_backend", "tag"]
