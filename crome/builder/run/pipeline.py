"""`crome build`: source pairs -> the stages below -> export, every oracle call through the run store's cache.

Per source pair the per-pair stages run as one coroutine (no barrier between stages, so a slow
call holds up only its own pair); the ordered stages (neutrals, dedup) run after them, over the
pairs in source order. A re-run replays what the store holds and a killed run resumes. With
`batch`, a pass sends nothing itself: its cache misses become one provider batch job
(crome.builder.run.batch) and the pairs that wait on it stay pending until a re-run collects it.

How a run stops: a stop (budget, --max-failures, internal errors) or the first Ctrl-C / SIGTERM
halts the oracle: no new request goes out, the requests on the wire are awaited and recorded,
and the pairs left unfinished are pending (a re-run picks them up). A stop still exports what
is done; an interrupt exports nothing and ends with `BuildInterrupted` (exit 130). A pair that
raises an unexpected exception is an `internal` rejection; those count toward --max-failures,
and a run whose every finished pair failed that way stops with `internal_errors`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import duckdb

from crome.builder.oracles import get_oracle
from crome.builder.oracles.base import Oracle
from crome.builder.run.config import BuildConfig, display_source
from crome.builder.run.export import RUN_LAYOUT, export
from crome.builder.run.generate import BuildStopped, CachedGenerate
from crome.builder.run.interrupt import GracefulInterrupt
from crome.builder.run.progress import ProgressFile
from crome.builder.run.flow import Flow
from crome.builder.run.pool import MinePairs, StoreDedup, StoreGroups, StorePool, documents
from crome.builder.run.summary import build_summary
from crome.builder.sources import SourceError, SourceStream, iter_source
from crome.builder.stages.base import Stage, StageEnv
from crome.builder.stages.causal import CausalStage
from crome.builder.stages.dedup import DedupStage, Deduper
from crome.builder.stages.neutral import CrossPromptStage, NeutralStage, conversation_document
from crome.builder.stages.rate import RateStage
from crome.builder.stages.records import PairContext, original_candidate
from crome.builder.stages.rubrics import RubricsStage
from crome.builder.stages.shortcut import ShortcutStage
from crome.builder.stages.validate import ValidateStage
from crome.builder.stages.verify import VerifyStage
from crome.builder.store import RunStore
from crome.builder.store.work import BuildTables, Fingerprint
from crome.outputs import Folder, atomic_write, claim, recover
from crome.prompts import UnknownTemplateError, load_template
from crome.schemas import SourcePair
from crome.schemas.hashing import short_id, stable_hash

log = logging.getLogger(__name__)

# The method, in order. A new stage is a new module in crome/builder/stages and one line here.
STAGES: tuple[type[Stage], ...] = (
    RubricsStage,  # the prompt's causal rubrics
    RateStage,  # each answer strong or weak on each rubric
    CausalStage,  # degrade / upgrade one rubric
    VerifyStage,  # the oracle checks only that rubric moved
    ValidateStage,  # edit, length, surface, language checks
    DedupStage,  # exact and near duplicates, first in source order wins (ordered: after the pair's own stages)
    NeutralStage,  # IQN ties, from the pairs dedup kept
    CrossPromptStage,  # RRM baseline pairs, with --cross-prompt
    ShortcutStage,  # ties differing only in a found phrase shortcut, with --neutralize-shortcuts
    DedupStage,  # the same index again, for the ties, cross-prompt and shortcut pairs just made
)
TASKS: tuple[str, ...] = tuple(t for s in STAGES for t in s.tasks)  # every template a build renders


# DuckDB's own memory in a build: its sorts and joins (the export's row order, the groups) spill to disk
# beyond it. Its indexes (ART) cannot spill: they stay in memory. The call cache has none (store migration
# m007: its index over `k64` cost ~40 bytes per call, ~80 MB at 300k pairs); what is left are the source's two
# integer keys, ~25 bytes per pair. So the limit is a base for the working set plus 64 bytes per source pair
# (18 MB more at 300k pairs than at none). The export reopens the store first, which releases the indexes, and runs within
# EXPORT_MEMORY_MB: it sorts ranges of ~65k rows (`work.SORT_RANGE_ROWS`) and spills the rest. At 192 MB DuckDB
# filled its cache with the 300k build's blocks (~166 MB, against ~92 MB at 10k); at 128 MB the 300k store's
# whole export ran in 246 s, and a 10k build's export never used more (benchmarks/RESULTS.md).
MEMORY_MB = 192
INDEX_BYTES_PER_PAIR = 64
EXPORT_MEMORY_MB = 128


def duckdb_memory_mb(pairs: int) -> int:
    """DuckDB's memory limit for a build or merge over `pairs` source pairs (see MEMORY_MB)."""
    return MEMORY_MB + (max(0, int(pairs)) * INDEX_BYTES_PER_PAIR) // 2**20


# Beyond the client timeout, what an interrupted run waits for its calls in flight to come back.
INTERRUPT_GRACE_S = 5.0


class BuildInterrupted(RuntimeError):
    """Ctrl-C or SIGTERM: the calls in flight were awaited and recorded; nothing was exported. Re-run to resume."""


@dataclass
class BuildResult:
    run_dir: Path
    summary: dict[str, Any]
    rows: int
    stopped: str | None = None


@dataclass
class Progress:
    """What the CLI shows while a build runs; the pipeline only calls these hooks."""

    start: Callable[[int], None] = lambda total: None
    advance: Callable[[dict], None] = lambda stats: None
    stage: Callable[[str], None] = lambda name: None
    notice: Callable[[str], None] = lambda message: None  # something the user must read now (an interrupt)
    estimate: Callable[[dict], None] = lambda summary: None  # a paid build's estimate, before its first call


def make_oracle(cfg: BuildConfig) -> Oracle:
    options = {"base_url": cfg.base_url, "concurrency": cfg.concurrency, "rpm": cfg.rpm, "tpm": cfg.tpm,
               "timeout": cfg.timeout, "schema_mode": cfg.schema_mode}
    return get_oracle(cfg.oracle, **options)


def in_shard(source_id: str, shard: tuple[int, int] | None) -> bool:
    if shard is None:
        return True
    i, n = shard
    return int(short_id(source_id), 16) % n == i


def open_source(cfg: BuildConfig) -> SourceStream:
    """The source as a stream of pairs and quarantined rows; raises `SourceError` at once if it cannot be read."""
    return iter_source(cfg.source, split=cfg.split, config=cfg.config_name, revision=cfg.revision, mapping=cfg.mapping, limit=cfg.limit,
                       max_answer_chars=cfg.max_answer_chars)


def source_info(cfg: BuildConfig, stream: SourceStream) -> dict[str, Any]:
    """What the summary says of the source, once the stream has been read to its end."""
    return {"name": display_source(cfg.source), "shape": stream.shape, "hub_id": stream.hub_id,
            "license": stream.license, "rows": stream.rows_read}


def source_fingerprint(cfg: BuildConfig) -> tuple[str, dict[str, Any]]:
    """The source's fingerprint (every pair's id, in order, and the row count: shards of one build share it), read as a stream."""
    fp = Fingerprint()
    with open_source(cfg) as stream:
        for item in stream:
            if isinstance(item, SourcePair):
                fp.add(item.source_id)
    info = source_info(cfg, stream)
    return fp.value(info["rows"]), info


def store_source(cfg: BuildConfig, store: RunStore, stream: SourceStream) -> tuple[int, int, dict[str, Any], str]:
    """Stream the whole source into the run store (the pool) and deal its IQN draw groups; (pool, mine, info, fingerprint)."""
    tables = BuildTables(store)
    shard = cfg.shard
    pool, mine, fp = tables.write_source(
        stream, mine=lambda p: in_shard(p.source_id, shard), mine_quarantined=lambda q: shard is None or q.row % shard[1] == shard[0],
        rank=lambda p: stable_hash([cfg.seed, "iqn-group", p.source_id]),
    )
    tables.assign_groups(cfg.neutral_group_size)
    info = source_info(cfg, stream)
    return pool, mine, info, fp.value(info["rows"])


class Builder:
    def __init__(self, cfg: BuildConfig, store: RunStore, progress: Progress | None = None, oracle: Oracle | None = None):
        self.cfg = cfg
        self.store = store
        self.tables = BuildTables(store)
        self.progress = progress or Progress()
        self.progress_file = ProgressFile(Path(cfg.out))
        self.oracle = oracle if oracle is not None else make_oracle(cfg)
        if cfg.verify is None:  # the default follows the oracle actually used: judges verify, rules cannot
            self.cfg = cfg = cfg.model_copy(update={"verify": self.oracle.capabilities.verify})
        self.templates = {task: self._template(cfg.templates.get(task, task)) for task in TASKS}
        self.generate = CachedGenerate(store, self.oracle, max_cost=cfg.max_cost, max_failures=cfg.max_failures, price=self._price())
        self.batch = None
        if cfg.batch:
            from crome.builder.run.batch import BatchRun, batch_jobs

            self.batch = BatchRun(store, batch_jobs(self.oracle), self.generate, price=self._price())
        self.interrupted: str | None = None  # the signal that interrupted the run
        self.first_internal_error: str | None = None
        self.stages: list[Stage] = []
        self.mine = 0  # the pairs this run builds (its shard)

    def _template(self, spec: str):
        if self.cfg.templates_dir:
            try:
                return load_template(spec, self.cfg.templates_dir)
            except UnknownTemplateError:
                pass  # not overridden there: the packaged version
        return load_template(spec)

    def _price(self):
        if not self.oracle.capabilities.priced:
            return None
        from crome.builder.oracles.llm.pricing import estimate_cost

        model = self.oracle.model
        return lambda i, o: estimate_cost(model, i, o, batch=self.cfg.batch)

    def setup(self, pool: int, mine: int) -> None:
        """The run's stages over the source stored in the run store (`pool` pairs, `mine` of them this shard's)."""
        cfg, tables = self.cfg, self.tables
        self.mine = mine
        self.groups = StoreGroups(tables)
        env = StageEnv(options=cfg, generate=self.generate, templates=self.templates, capabilities=self.oracle.capabilities,
                       pool=StorePool(tables, pool))
        backend, t, capacity = StoreDedup(tables), cfg.dedup_threshold, 8 * mine
        env.shared["dedup"] = (Deduper(t, backend=backend, name="pairs", capacity=capacity),
                               Deduper(t, backend=backend, name="answers", capacity=capacity))
        env.shared["groups"] = self.groups
        env.shared["documents"] = lambda: documents(tables, conversation_document)
        self.stages = [stage(env) for stage in STAGES]  # a stage listed twice shares its run-wide state via env.shared
        self.flow = Flow(self)

    # -- per pair -------------------------------------------------------------------------
    async def process_pair(self, ctx: PairContext) -> None:
        ctx.candidates = [original_candidate(ctx.pair)]
        for stage in self.stages:
            if not stage.ordered and not await stage(ctx):
                return

    def _advance(self) -> None:
        stats = self.generate.stats
        self.progress.advance(stats.__dict__)
        self.progress_file.update(pairs_done=self.progress_file.state["pairs_done"] + 1, calls=stats.total, new_calls=stats.new,
                                  failed_calls=stats.failed, cost_usd=round(stats.cost_usd, 6))

    def _grace(self) -> float:
        """How long calls in flight may take to come back: the client timeout, and a little for the answer to land."""
        timeout = getattr(self.oracle, "timeout", None)
        return (float(timeout) if timeout else 0.0) + INTERRUPT_GRACE_S

    def _interrupt(self, signal_name: str) -> None:
        self.interrupted = signal_name
        in_flight = self.generate.sending
        self.generate.stop(BuildStopped("interrupted", f"interrupted by {signal_name}"))
        message = (f"{signal_name}: no new oracle calls are sent; waiting up to {self._grace():g}s (the client timeout) for the "
                   f"{in_flight} call(s) in flight to answer and be recorded. Press Ctrl-C again to exit at once: "
                   "their answers are then lost, and a re-run sends (and pays for) them again.")
        log.warning(message)
        self.progress.notice(message)
        self.progress_file.update(stage=f"interrupted: waiting for {in_flight} call(s) in flight", force=True)

    def _internal_error(self, ctx: PairContext, exc: BaseException) -> None:
        # A bug must not lose the run: the pair is recorded with the error, the rest goes on, up to --max-failures.
        detail = f"{type(exc).__name__}: {exc}"[:500]
        if self.first_internal_error is None:
            self.first_internal_error = detail
            log.error("pair %s failed with an internal error (the first; later ones are logged in one line)",
                      ctx.pair.source_id, exc_info=exc)
        else:
            log.warning("pair %s failed with an internal error: %s", ctx.pair.source_id, detail)
        ctx.reject_pair("internal", "exception", detail)
        self.generate.count_failure(internal=True, detail=detail)

    async def run_pairs(self) -> str | None:
        """Every pair through the stages (crome.builder.run.flow); returns why the run stopped, if it did."""
        self.progress.start(self.mine)
        self.progress_file.update(pairs_total=self.mine, force=True)
        with GracefulInterrupt(self._interrupt):
            finished, deadline = await self.flow.run()
            if self.batch is not None:
                # A stage's gather fails at its first pending call; let its siblings queue theirs too.
                others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
                if others:
                    await asyncio.wait(others)
            # Calls whose pair is done (a sibling raised) still finish and are recorded.
            loop = asyncio.get_running_loop()
            lost = await self.generate.drain(self._grace() if deadline is None else max(deadline - loop.time(), 0.0))
        if lost:
            log.warning("%d oracle call(s) did not answer within %gs and were abandoned; they may have been billed", lost, self._grace())
        await self.oracle.aclose()
        fatal = self.flow.fatal or self.generate.fatal
        if fatal is not None:
            raise fatal
        if self.interrupted:
            self.progress_file.update(stage="interrupted", force=True)
            stats = self.generate.stats
            raise BuildInterrupted(
                f"interrupted ({self.interrupted}): {stats.new} oracle call(s) made in this run are recorded"
                + (f", {lost} abandoned after {self._grace():g}s" if lost else "")
                + "; nothing was exported. Re-run the same command to resume: recorded calls are not sent again."
            )
        if self.generate.stopped is None and finished and self.generate.stats.internal == finished:
            self.generate.stop(BuildStopped("internal_errors", f"every pair ({finished}) failed with an internal error"))
        return self.generate.stopped.reason if self.generate.stopped else None

    async def run_all(self) -> str | None:
        self.progress.stage("oracle stages")
        self.progress_file.stage("oracle stages")
        stopped = await self.run_pairs()
        if self.batch is not None:
            self.progress.stage("batch: submitting")
            self.progress_file.stage("batch: submitting")
            self.batch.submit()
            if stopped is None and self.batch.live():
                stopped = "batch_pending"
        return stopped

    # -- the whole build ------------------------------------------------------------------
    def run(self, pool: int, mine: int, source_info: dict[str, Any], started: float, owned: Folder, writer: str = "crome build",
            finish: Callable[[dict, "Builder"], None] | None = None) -> BuildResult:
        """Build this shard's pairs from the stored source and export into `owned`; `finish` may add to the summary first (merge)."""
        cfg = self.cfg
        self.setup(pool, mine)
        if self.batch is not None:
            self.progress.stage("batch: polling jobs")
            self.progress_file.stage("batch: polling jobs")
            self.batch.prepare()
        self.tables.clear()
        stopped = asyncio.run(self.run_all())
        summary = build_summary(
            cfg, oracle=self.oracle.name, templates=self.templates, tables=self.tables, source_info=source_info, stopped=stopped,
            seconds=time.perf_counter() - started, stats=self.generate.stats, store=self.store,
            batch=self.batch.report() if self.batch is not None else None, first_internal_error=self.first_internal_error,
        )
        if finish is not None:
            finish(summary, self)
        # DuckDB's indexes stay in memory once used (the source's grow with it); the export uses
        # none of them, so the store is reopened to release them and the export gets its own limit, under the base.
        limit = self.store.memory_mb
        self.store.reopen()
        self.store.limit_memory(EXPORT_MEMORY_MB)
        try:
            try:
                export(self.store, owned, self.tables, summary, writer=writer, progress=self.progress_file)
            except duckdb.OutOfMemoryException as e:
                # EXPORT_MEMORY_MB was measured up to 300k pairs. An export is all or nothing (a failed one leaves the
                # previous files), so one that outgrows it runs again at the build's own limit instead of failing the run.
                again = max(limit or MEMORY_MB, MEMORY_MB)
                log.warning("the export ran out of DuckDB's %d MB (%s); exporting again within %d MB",
                            EXPORT_MEMORY_MB, str(e).splitlines()[0], again)
                self.store.limit_memory(again)
                export(self.store, owned, self.tables, summary, writer=writer, progress=self.progress_file)
        finally:
            if limit is not None:
                self.store.limit_memory(limit)  # a batch build's next pass works within the build's limit again
        self.progress_file.update(stage="done", status=summary["status"], force=True)
        return BuildResult(Path(cfg.out), summary, summary["counts"]["rows"], stopped)


def source_spec(spec: str) -> str:
    """The source as a later `crome merge` on this machine can read it again: local paths made absolute."""
    p = Path(spec)
    return str(p.resolve()) if p.exists() else spec


def build(
    cfg: BuildConfig,
    progress: Progress | None = None,
    oracle: Oracle | None = None,
    *,
    sleep: Callable[[float], None] = time.sleep,
    writer: str = "crome build",
    finish: Callable[[dict, Builder], None] | None = None,
) -> BuildResult:
    """Run (or resume) a build; `oracle` replaces the one named by cfg.oracle (tests, custom backends).

    The output folder must be new, empty or a run folder (crome.outputs); it is checked before
    anything is read, and created only once the source opens and its first rows are understood
    (shape, mapping). The source then streams into the run store; a source that fails further on
    (a corrupt file, a lost connection) removes a folder this build created, so it leaves nothing.
    """
    started = time.perf_counter()
    out = Path(cfg.out)
    claim(out, RUN_LAYOUT, writer, create=False)
    oracle = oracle if oracle is not None else make_oracle(cfg)  # an unknown oracle or a missing key: nothing created yet
    stream = open_source(cfg)
    created = not out.exists()
    try:
        claim(out, RUN_LAYOUT, writer)
        with RunStore.open(out) as store:
            store.limit_memory(MEMORY_MB)
            owned = claim(out, RUN_LAYOUT, writer)  # read again under the run lock: another writer may have exported
            recover(owned)
            with stream:
                pool, mine, source_info_, fingerprint = store_source(cfg, store, stream)
            stream = None
            store.limit_memory(duckdb_memory_mb(pool))
            return _build_stored(cfg, store, owned, progress, oracle, pool, mine, source_info_, fingerprint, started, sleep, writer, finish)
    except SourceError:
        if stream is not None and created and out.is_dir():
            shutil.rmtree(out)  # the source failed while it streamed into the folder this build made
        raise


def _build_stored(cfg: BuildConfig, store: RunStore, owned: Folder, progress: Progress | None, oracle: Oracle, pool: int, mine: int,
                  info: dict[str, Any], fingerprint: str, started: float, sleep: Callable[[float], None], writer: str,
                  finish: Callable[[dict, Builder], None] | None) -> BuildResult:
    out = Path(cfg.out)
    # The local store (never published) remembers where the source was, for `crome merge`.
    store.set_meta("source", {"spec": source_spec(cfg.source), "fingerprint": fingerprint})
    atomic_write(out / "config.json", lambda p: p.write_text(json.dumps(cfg.public_options(), indent=2) + "\n"))
    if not cfg.batch and not cfg.dry_run:
        from crome.builder.run.batch import live_jobs

        live = live_jobs(store)
        if live:
            # An online run would send (and pay for) the requests those jobs already carry.
            raise ValueError(
                f"{out} has {len(live)} batch job(s) in flight with {sum(len(j['keys']) for j in live)} requests: "
                "re-run with --batch to collect them first (`crome status` shows them)"
            )
    builder = Builder(cfg, store, progress, oracle)
    if cfg.dry_run or builder.oracle.capabilities.priced:
        from crome.builder.run.estimate import estimate

        builder.setup(pool, mine)
        summary = estimate(builder.stages, MinePairs(builder.tables, mine), store, builder.oracle, batch=cfg.batch, max_cost=cfg.max_cost)
        (quarantined,) = store._query("SELECT count(*) FROM quarantined")[0]
        summary.update(source=info, quarantined=quarantined)
        if cfg.dry_run:
            return BuildResult(out, summary, 0, "dry_run")
        builder.progress.estimate(summary)
        if summary["over_budget"] and next(store.iter_artifacts("batch_job"), None) is None:
            # Before the first call (a batch build: before its first job): nothing is spent.
            return BuildResult(out, summary, 0, "estimate_over_budget")
    try:
        result = builder.run(pool, mine, info, started, owned, writer, finish)
        while cfg.batch_wait and result.stopped == "batch_pending" and builder.batch is not None:
            builder.progress.stage(f"batch: waiting for {len(builder.batch.live())} job(s)")
            builder.batch.wait(cfg.poll_interval, sleep)
            builder.batch.backend.close()
            # A fresh builder per pass: the rubric memo and the call counts belong to one pass.
            builder = Builder(cfg, store, progress, builder.oracle)
            result = builder.run(pool, mine, info, started, owned, writer, finish)
    finally:
        if builder.batch is not None:
            builder.batch.backend.close()
    return result
