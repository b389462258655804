"""How pairs flow through a build in bounded memory: read a batch, run it, finish it in source order, write it, forget it.

Pairs are read from the run store `BATCH` at a time, in source order. Each pair's per-pair stages
run as one coroutine, at most `window` of them at once (no barrier between batches: a slow call
holds up only its own pair). A pair is *finished* when its coroutine ends (done, rejected, pending
or failed). The finished pairs at the head of the source order go through the ordered stages
(dedup, neutrals) in source order, a batch at a time, exactly as one pass over the whole source
would take them: dedup's "first in source order wins" and the neutrals' draws see the same
history. Their rows, rejections and outcome then go to the run store (`build_*` tables) with the
dedup index entries they added, and leave memory.

What memory holds at any time: the pairs started but not yet written, at most `buffer` (a slow
pair at the head makes the others wait for it before more are read), and the caches the store
views keep (bounded). A kill at any moment loses nothing that a re-run does not rebuild: every
oracle call of a written pair is in the store (a free oracle's answers wait in a buffer of up to a
second; see `generate.WRITE_BATCH`), and the `build_*` tables are cleared and re-derived by each build.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from crome.builder.oracles.base import SystematicOracleError
from crome.builder.run.generate import BatchPending, BuildStopped, StoreWriteError
from crome.builder.run.pool import StoreDedup
from crome.builder.stages.dedup import KIND_ORDER
from crome.builder.stages.records import PairContext

BATCH = 256  # pairs read, prepared, finished and written together


class Flow:
    """One build's pass over its pairs (see the module docstring)."""

    def __init__(self, builder: Any, batch: int | None = None) -> None:
        """`builder`: the `crome.builder.run.pipeline.Builder` whose stages, generate, store views and progress it drives."""
        self.b = builder
        self.batch = batch or BATCH
        self.window = max(64, 4 * builder.cfg.concurrency)
        self.buffer = max(2 * self.batch, 2 * self.window)
        self.fatal: BaseException | None = None
        self.finished = 0  # pairs that ended done or rejected (not pending)
        self.pending: dict[asyncio.Task, PairContext] = {}
        self.order: deque[PairContext] = deque()  # started or skipped, not yet written: source order
        self.ended: set[int] = set()  # id() of the pairs in `order` whose coroutine has ended
        self.rows = 0
        self.rejections = 0
        self.written = 0

    def _stopped(self) -> bool:
        g = self.b.generate
        return bool(self.fatal or g.fatal or g.stopped)

    def _reap(self, done: set[asyncio.Task]) -> None:
        b = self.b
        for t in done:
            ctx = self.pending.pop(t)
            exc = None if t.cancelled() else t.exception()
            if t.cancelled() or isinstance(exc, (BatchPending, BuildStopped)):
                ctx.set_pending()  # waits on a batch job, or the run stopped: neither done nor rejected
            elif isinstance(exc, (SystematicOracleError, StoreWriteError)) or (exc is not None and exc is b.generate.fatal):
                self.fatal = self.fatal or exc
                ctx.set_pending()
            else:
                self.finished += 1
                if exc is not None:
                    b._internal_error(ctx, exc)
            self.ended.add(id(ctx))
            b._advance()

    async def _wait(self, timeout: float | None = None) -> bool:
        done, _ = await asyncio.wait(self.pending, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        self._reap(done)
        return bool(done)

    async def run(self) -> tuple[int, float | None]:
        """Every pair of the shard; returns (pairs finished, the deadline calls in flight were given once stopped)."""
        b = self.b
        per_pair = [s for s in b.stages if not s.ordered]
        for chunk in b.tables.mine_chunks(self.batch):
            contexts = []
            for _, pair, grp in chunk:
                b.groups.track(pair.source_id, grp)
                contexts.append(PairContext(pair=pair))
            if not self._stopped():
                for stage in per_pair:
                    stage.prepare(contexts)
            for ctx in contexts:
                self.order.append(ctx)
                if self._stopped():
                    ctx.pending = True
                    self.ended.add(id(ctx))
                    continue
                self.pending[asyncio.ensure_future(b.process_pair(ctx))] = ctx
                while len(self.pending) >= self.window:
                    await self._wait()
            await self._finish_ready()
            while len(self.order) >= self.buffer and self.pending:
                await self._wait()
                await self._finish_ready()
        loop = asyncio.get_running_loop()
        deadline: float | None = None
        while self.pending:
            # Once stopped, what is left is calls in flight: together they get the client timeout to come back.
            if deadline is None and self._stopped():
                deadline = loop.time() + b._grace()
            timeout = None if deadline is None else max(deadline - loop.time(), 0.0)
            if not await self._wait(timeout):
                for t in self.pending:
                    t.cancel()
                done, _ = await asyncio.wait(self.pending)
                self._reap(done)
            await self._finish_ready()
        await self._finish_ready(force=True)
        return self.finished, deadline

    async def _finish_ready(self, force: bool = False) -> None:
        """Finish and write the ended pairs at the head of the source order, a batch at a time."""
        while True:
            ready = 0
            for ctx in self.order:
                if id(ctx) not in self.ended or ready == self.batch:
                    break
                ready += 1
            if not ready or (ready < self.batch and not force):
                return
            batch = [self.order.popleft() for _ in range(ready)]
            for ctx in batch:
                self.ended.discard(id(ctx))
            await self._finish(batch)

    async def _finish(self, batch: list[PairContext]) -> None:
        """The ordered stages over `batch` in source order, then its rows, rejections and outcomes to the store."""
        b = self.b
        ordered = [s for s in b.stages if s.ordered]
        live = [c for c in batch if not c.pending]  # a pending pair has nothing to add yet
        for stage in ordered:
            stage.prepare(live)
        for ctx in live:
            for stage in ordered:
                await stage(ctx)
        rows: list[dict[str, Any]] = []
        rejections = []
        outcomes = []
        for ctx in batch:
            has_rows = False
            for c in ctx.candidates:
                try:
                    row = c.to_row(b.oracle.name, b.cfg.seed)
                except ValueError as exc:  # a candidate that breaks the contract is a recorded rejection
                    ctx.rejections.append(c.reject("export", "invalid_row", str(exc).splitlines()[0][:300]))
                    continue
                has_rows = True
                rows.append({"seq": self.rows + len(rows), "id": row.id, "source_id": row.source_id, "kind_ord": KIND_ORDER[row.kind],
                             "kind": row.kind, "augmentation": row.augmentation, "attribute": row.attribute, "data": row.model_dump_json()})
            outcome = "pending" if ctx.pending else "rows" if has_rows else "rejected" if ctx.rejections else "none"
            outcomes.append({"ord": self.written + len(outcomes), "source_id": ctx.pair.source_id, "outcome": outcome})
            rejections.extend(ctx.rejections)
            b.groups.forget(ctx.pair.source_id)
        b.generate.flush()  # the calls of every pair written are committed first (a free oracle's wait in a buffer)
        pairs_index, answers_index = b.stages[[s.name for s in b.stages].index("dedup")].env.shared["dedup"]
        index = StoreDedup.entries("pairs", pairs_index.drain()) + StoreDedup.entries("answers", answers_index.drain())
        b.tables.append(rows, rejections, self.rejections, outcomes, index)
        self.rows += len(rows)
        self.rejections += len(rejections)
        self.written += len(batch)
        b.progress_file.update(pairs_written=self.written, rows_stored=self.rows)


__all__ = ["BATCH", "Flow"]
