"""`crome build --batch`: each pass's cache misses go out as one provider batch job; re-runs collect them.

One invocation is one pass (with --wait, passes until the build completes):

1. reconcile: a job recorded as `submitting` (the process died after recording its intent and
   before recording the provider's job id) is looked up at the provider by its intent id and
   adopted; only when the provider has none is it dropped, and its requests become pending again;
2. poll every submitted job and ingest the finished ones into the call cache, each call marked
   with its job id: answers are validated as online calls are; failed, expired and missing items
   are recorded as errors, which the next pass sends again (up to `BATCH_ATTEMPTS` in all);
3. the pipeline runs over every pair as far as the cache allows; a miss stops its pair for this
   pass and joins the pass's queue, unless a job in flight already carries it;
4. the queue is submitted: requests and intent recorded first, then the upload and the job, then
   the job id (a pass with more than one job's worth is split at the provider's limits).

Never paid twice: a request is in at most one live job (the queue holds each cache key once, so
pairs that share an answer share its request: single flight), and a job's intent is in the store
before the job exists at the provider, so a crash anywhere leaves either no job or one the next
pass adopts. Every item collected is recorded as a billed attempt, failures included.

Keys: a job lists the cache keys its requests had when it was submitted (they are the items'
`custom_id`s). A job submitted by a crome whose keys held the whole request context
(`key_version` absent) is collected under today's keys, recomputed from its stored requests,
so upgrading crome while a job is in flight neither loses its answers nor sends them again.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

from crome.builder.run.generate import BatchQueue, CachedGenerate
from crome.builder.oracles.base import SystematicOracleError
from crome.schemas.calls import Attempt, OracleRequest, OracleResponse
from crome.builder.oracles.base import BatchJobs, BatchOracle, JobStatus, Oracle
from crome.builder.oracles.llm.batch import tag
from crome.builder.store import CallRecord, RunStore, request_payload
from crome.schemas.hashing import stable_hash
from crome.schemas.oracle import OUTPUT_MODELS

log = logging.getLogger("crome.batch")

JOB_KIND = "batch_job"  # artifact per job, keyed by its intent id
REQUEST_KIND = "batch_request"  # artifact per request in a live job, keyed by cache key
RUN_ID_META = "batch_run_id"

LIVE = ("submitting", "submitted")  # a job whose requests must not be sent again
KEY_VERSION = 2  # jobs list keys of what the provider sees (crome.builder.oracles.base.cache_key)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def stored_request(key: str, request: OracleRequest) -> dict[str, Any]:
    """What a live job keeps of a request, enough to rebuild it when the answer comes back."""
    return {"task": request.task, "template": request.template, "template_sha256": request.template_sha256, "request": request_payload(request)}


def rebuild_request(value: dict[str, Any]) -> OracleRequest:
    payload = value["request"]
    return OracleRequest(
        task=value["task"],
        template=value["template"],
        template_sha256=value["template_sha256"],
        messages=tuple(payload["messages"]),
        output_model=OUTPUT_MODELS[payload["schema"]],
        temperature=payload["settings"]["temperature"],
        max_output_tokens=payload["settings"]["max_output_tokens"],
        context=payload["context"],
        # Stored since requests carry it; a job recorded before that is checked by the stages alone.
        validation=payload.get("validation") or {},
    )


@dataclass
class BatchRun:
    """The batch jobs of one run directory, as one build invocation sees and changes them."""

    store: RunStore
    backend: BatchJobs
    generate: CachedGenerate
    price: Callable[[int, int], float | None] | None = None  # batch prices
    queue: BatchQueue = field(default_factory=BatchQueue)
    submitted_now: list[str] = field(default_factory=list)  # intents submitted by this invocation
    ingested_now: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def provider(self) -> str:
        return self.backend.provider

    @property
    def model(self) -> str:
        return self.backend.model

    def run_id(self) -> str:
        """A random id per run directory: two runs with the same requests never adopt each other's jobs."""
        rid = self.store.get_meta(RUN_ID_META)
        if rid is None:
            rid = secrets.token_hex(16)
            self.store.set_meta(RUN_ID_META, rid)
        return rid

    def jobs(self) -> dict[str, dict[str, Any]]:
        return dict(self.store.iter_artifacts(JOB_KIND))

    def _save(self, job: dict[str, Any]) -> None:
        job["updated_at"] = _now()
        self.store.put_artifact(JOB_KIND, job["intent"], job)

    def _failed(self, what: str, job: dict[str, Any] | None, exc: Exception) -> None:
        """A provider call failed: systematic errors stop the build, others leave the job as it was for the next pass."""
        mapped = self.backend.classify(exc)
        if isinstance(mapped, SystematicOracleError):
            raise mapped from None
        message = f"{what}: {mapped}"
        log.warning("batch: %s", message)
        self.errors.append(message)
        if job is not None:
            job["last_error"] = message[:500]
            self._save(job)

    # -- 1 + 2: before the pass ---------------------------------------------------------------

    def prepare(self) -> None:
        """Adopt or drop half-submitted jobs, poll the rest, ingest the finished; fill the queue's in-flight keys."""
        self.generate.batch = self.queue
        spent_before = 0.0
        for intent, job in self.jobs().items():
            if (job.get("provider"), job.get("model")) != (self.provider, self.model):
                continue  # another oracle's job: its requests have other cache keys
            if job["state"] == "submitting":
                self._reconcile(job)
            if job["state"] == "submitted":
                self._poll(job)
            if job["state"] in LIVE:
                self.queue.in_flight.update(self._current_keys(job).values())
            if job["state"] == "ingested" and intent not in self.ingested_now:
                spent_before += job.get("cost_usd") or 0.0
        committed = sum(j.get("estimated_cost_usd") or 0.0 for j in self.jobs().values() if j["state"] in LIVE)
        self.generate.committed_cost = spent_before + committed

    def _reconcile(self, job: dict[str, Any]) -> None:
        try:
            job_id = self.backend.find(job["intent"])
        except Exception as exc:  # noqa: BLE001 - unknown whether the job exists: keep its requests out of new jobs
            self._failed(f"looking up job {tag(job['intent'])} at the provider", job, exc)
            return
        if job_id is None:
            log.info("batch: intent %s never became a job; its requests go out again", tag(job["intent"]))
            job.update(state="abandoned", note="the provider has no job with this intent: never submitted")
            self._save(job)
            self.store.delete_artifacts(REQUEST_KIND, job["keys"])
        else:
            log.info("batch: adopted job %s of intent %s", job_id, tag(job["intent"]))
            job.update(state="submitted", job_id=job_id, adopted=True, submitted_at=job.get("submitted_at") or _now())
            self._save(job)

    def _poll(self, job: dict[str, Any]) -> None:
        try:
            status = self.backend.poll(job["job_id"])
        except Exception as exc:  # noqa: BLE001 - a poll that fails is tried again next pass
            self._failed(f"polling job {job['job_id']}", job, exc)
            return
        job.update(provider_state=status.provider_state, provider_counts=status.counts, job_error=status.error)
        if not status.finished:
            self._save(job)
            return
        try:
            self._ingest(job, status)
        except SystematicOracleError:
            raise
        except Exception as exc:  # noqa: BLE001 - results that cannot be read now are read next pass
            self._failed(f"reading the results of job {job['job_id']}", job, exc)

    def _current_keys(self, job: dict[str, Any], requests: dict[str, OracleRequest] | None = None) -> dict[str, str]:
        """Each item's custom_id (the key it was submitted under) -> the key its call is filed under now."""
        if job.get("key_version") == KEY_VERSION:
            return {k: k for k in job["keys"]}
        if requests is None:
            requests = {k: rebuild_request(v) for k, v in self.store.get_artifacts(REQUEST_KIND, job["keys"]).items()}
        return {k: self.generate.key(requests[k]) if k in requests else k for k in job["keys"]}

    def _ingest(self, job: dict[str, Any], status: JobStatus) -> None:
        keys: list[str] = job["keys"]
        stored = self.store.get_artifacts(REQUEST_KIND, keys)
        requests = {k: rebuild_request(v) for k, v in stored.items()}
        current = self._current_keys(job, requests)
        previous = self.store.get_calls(list(current.values()))
        # Batch attempts add up across jobs; a re-read of the same job (a crash mid-ingest) does not add one.
        attempts = {}
        for k in keys:
            prev = previous.get(current[k])
            earlier = prev.attempts if prev is not None and prev.batch_job_id is not None and prev.batch_job_id != job["job_id"] else 0
            attempts[k] = earlier + 1
        answers = self.backend.results(job["job_id"], keys, requests, attempts)
        why = {"expired": "the batch job expired before this item ran", "failed": f"the batch job failed: {status.error or 'no reason given'}",
               "cancelled": "the batch job was cancelled before this item ran"}.get(status.state, "the finished batch job has no result for this item")
        records: dict[str, CallRecord] = {}
        counts = {"items": len(keys), "ok": 0, "failed": 0, "missing": 0, "final": 0}
        tokens_in = tokens_out = 0
        for k in keys:
            request = requests.get(k)
            if request is None:  # never expected: the requests are recorded before the job exists
                log.warning("batch: job %s: no stored request for %s; skipped", job["job_id"], k)
                continue
            resp = answers.get(k)
            if resp is None:
                counts["missing"] += 1
                resp = OracleResponse(status="error", error=f"{why} (batch attempt {attempts[k]})", attempts=attempts[k],
                                      sent=[Attempt("error", 0, 0, reported=False)])
            elif resp.status in ("error", "invalid"):
                counts["failed"] += 1
            elif resp.status == "ok":
                counts["ok"] += 1
            else:
                counts["final"] += 1  # refused, blocked, truncated: final outcomes, as online
            tokens_in += resp.input_tokens
            tokens_out += resp.output_tokens
            self.generate.account(resp)
            key = current[k]
            record = CallRecord.from_response(key, request, resp, self.provider, self.model, batch_job_id=job["job_id"],
                                              context_keys=self.generate.oracle.capabilities.context_keys)
            # Two items of an old job may now share a key: one record (a final answer over a failure), both billed.
            held = records.get(key)
            if held is not None:
                keep = record if record.replayable and not held.replayable else held
                record = dataclasses.replace(keep, sent=[*held.sent, *record.sent])
            records[key] = record
        self.store.record_calls(list(records.values()))
        cost = self.price(tokens_in, tokens_out) if self.price is not None else 0.0
        job.update(state="ingested", counts=counts, input_tokens=tokens_in, output_tokens=tokens_out, cost_usd=cost,
                   outcome=status.state, ingested_at=_now())
        self._save(job)
        self.ingested_now.append(job["intent"])
        self.store.delete_artifacts(REQUEST_KIND, keys)

    # -- 4: after the pass --------------------------------------------------------------------

    def _chunks(self, items: list[tuple[str, OracleRequest]]) -> list[list[tuple[str, OracleRequest]]]:
        chunks: list[list[tuple[str, OracleRequest]]] = [[]]
        size = 0
        for key, request in items:
            n = self.backend.item_size(request)
            if chunks[-1] and (len(chunks[-1]) >= self.backend.max_items or size + n > self.backend.max_bytes):
                chunks.append([])
                size = 0
            chunks[-1].append((key, request))
            size += n
        return [c for c in chunks if c]

    def submit(self) -> None:
        """Submit the pass's queue as one job (more only where the provider's limits require)."""
        items = sorted(self.queue.requests.items())
        if not items:
            return
        run_id = self.run_id()
        first = sum(1 for _ in self.store.iter_artifacts(JOB_KIND))
        for seq, chunk in enumerate(self._chunks(items), start=first):
            keys = [k for k, _ in chunk]
            # Unique per submission (the same requests may go out again after a failure), never reused.
            intent = stable_hash({"run": run_id, "seq": seq, "keys": keys})
            estimate = sum(self.generate.estimate_call_cost(r) for _, r in chunk)
            job = {"intent": intent, "seq": seq, "provider": self.provider, "model": self.model, "state": "submitting", "job_id": None,
                   "keys": keys, "key_version": KEY_VERSION, "tasks": _tasks(chunk), "estimated_cost_usd": estimate, "created_at": _now()}
            # Requests, then the intent, then the provider: a crash at any point leaves a state the next pass resolves.
            self.store.put_artifacts(REQUEST_KIND, {k: stored_request(k, r) for k, r in chunk})
            self._save(job)
            try:
                job_id = self.backend.submit(chunk, intent)
            except Exception as exc:  # noqa: BLE001 - the job may exist: the next pass looks for it before sending again
                self._failed(f"submitting {len(chunk)} requests", job, exc)
                break
            job.update(state="submitted", job_id=job_id, submitted_at=_now())
            self._save(job)
            self.submitted_now.append(intent)
            log.info("batch: submitted job %s with %d requests", job_id, len(chunk))

    # -- waiting and reporting ------------------------------------------------------------------

    def live(self) -> list[dict[str, Any]]:
        return [j for j in live_jobs(self.store) if (j.get("provider"), j.get("model")) == (self.provider, self.model)]

    def wait(self, interval: float, sleep: Callable[[float], None] = time.sleep) -> None:
        """Poll the live jobs every `interval` seconds until one has finished (or can be adopted)."""
        while True:
            live = self.live()
            if not live or any(j["state"] == "submitting" for j in live):
                return
            sleep(interval)
            for job in live:
                try:
                    status = self.backend.poll(job["job_id"])
                except Exception as exc:  # noqa: BLE001
                    self._failed(f"polling job {job['job_id']}", job, exc)
                    continue
                if status.finished:
                    return

    def report(self) -> dict[str, Any]:
        return batch_report(self.jobs(), submitted_now=self.submitted_now, ingested_now=self.ingested_now,
                            queued=len(self.queue.requests), waiting=self.queue.waiting, errors=self.errors)


def batch_jobs(oracle: Oracle) -> BatchJobs:
    """The batch API of `oracle`; a clear error where it has none (rules, custom oracles)."""
    if not oracle.capabilities.batch or not isinstance(oracle, BatchOracle):
        raise ValueError(
            f"--batch needs an LLM oracle with a batch API (openai:MODEL or gemini:MODEL); {oracle.name} has nothing to batch"
            + (": the rules oracle runs offline, at no cost" if not oracle.capabilities.priced else "")
        )
    return oracle.batch_jobs()


def live_jobs(store: RunStore) -> list[dict[str, Any]]:
    """Jobs that may still answer (submitted, or submitting and not yet resolved)."""
    return [j for _, j in store.iter_artifacts(JOB_KIND) if j["state"] in LIVE]


def _tasks(chunk: list[tuple[str, OracleRequest]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for _, r in chunk:
        out[r.task] = out.get(r.task, 0) + 1
    return dict(sorted(out.items()))


def batch_report(jobs: dict[str, dict[str, Any]], **extra: Any) -> dict[str, Any]:
    """Jobs with their states, item counts, tokens and cost (at batch prices), and totals."""
    rows = []
    for job in sorted(jobs.values(), key=lambda j: j.get("seq", 0)):
        counts = job.get("counts") or {}
        rows.append({
            "seq": job.get("seq"), "job_id": job.get("job_id"), "intent": tag(job["intent"]), "state": job["state"],
            "provider_state": job.get("provider_state"), "adopted": bool(job.get("adopted")),
            "items": len(job["keys"]), "tasks": job.get("tasks", {}),
            "ok": counts.get("ok"), "failed": counts.get("failed"), "missing": counts.get("missing"), "final": counts.get("final"),
            "input_tokens": job.get("input_tokens"), "output_tokens": job.get("output_tokens"),
            "cost_usd": job.get("cost_usd"), "estimated_cost_usd": job.get("estimated_cost_usd"),
            "created_at": job.get("created_at"), "submitted_at": job.get("submitted_at"), "ingested_at": job.get("ingested_at"),
            "last_error": job.get("last_error"),
        })
    live = [r for r in rows if r["state"] in LIVE]
    done = [r for r in rows if r["state"] == "ingested"]
    return {
        "jobs": rows,
        "in_flight": {"jobs": len(live), "items": sum(r["items"] for r in live),
                      "estimated_cost_usd": round(sum(r["estimated_cost_usd"] or 0.0 for r in live), 6)},
        "ingested": {"jobs": len(done), "items": sum(r["items"] for r in done),
                     "ok": sum(r["ok"] or 0 for r in done), "failed": sum((r["failed"] or 0) + (r["missing"] or 0) for r in done),
                     "input_tokens": sum(r["input_tokens"] or 0 for r in done), "output_tokens": sum(r["output_tokens"] or 0 for r in done)},
        # None when the model is not in the price table.
        "cost_usd": None if any(r["cost_usd"] is None for r in done) else round(sum(r["cost_usd"] for r in done), 6),
        **extra,
    }


__all__ = ["BatchRun", "JOB_KIND", "REQUEST_KIND", "batch_report", "live_jobs"]
