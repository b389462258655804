"""Provider batch APIs (OpenAI Batch, Gemini Batch): submit one job, find it again, poll it, read its answers.

A backend knows one provider's job API and nothing of the run: `crome.builder.run.batch` decides
what to submit, keeps the jobs in the run store and ingests answers into the call cache. This module
holds what the backends share; each provider's backend lives next to its oracle (`openai.py`,
`gemini.py`), which hands it out through `batch_jobs()` (the `BatchOracle` protocol). Request
bodies and response parsing come from the oracle itself, so a batch item is sent and validated as
the online call is.

Job-management requests are sent once, never retried by the SDK: a create that timed out may
still have made the job, and a blind retry would pay for it twice. Every job carries its intent
id (OpenAI: metadata and file name; Gemini: display name), by which the next pass finds it.
"""

from __future__ import annotations

import abc
from typing import ClassVar

from crome.schemas.calls import OracleRequest, OracleResponse
from crome.builder.oracles.base import JobStatus
from crome.builder.oracles.llm.client import LLMOracle

# How far back the provider's job list is searched for a job this run may have made.
MAX_LISTED = 2000


def tag(intent: str) -> str:
    """The short name a job carries at the provider: `crome-` and 128 bits of the intent id."""
    return "crome-" + intent.split(":")[-1][:32]


class BatchBackend(abc.ABC):
    provider: ClassVar[str]
    # Per-job limits of the provider; a pass with more requests is split into several jobs.
    max_items: ClassVar[int]
    max_bytes: ClassVar[int]

    def __init__(self, oracle: LLMOracle) -> None:
        self.oracle = oracle

    @property
    def model(self) -> str:
        return self.oracle.model

    def classify(self, exc: Exception) -> Exception:
        return self.oracle.classify(exc)

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


__all__ = ["MAX_LISTED", "BatchBackend", "JobStatus", "tag"]
