"""`crome build SOURCE --out RUN --executor ray --shards N`: the N shard builds as Ray tasks, then `crome merge` into RUN.

Each task is `build()` with `shard=(i, N)` and its own run directory `RUN/shards/shard-i-of-N`,
exactly what `crome build --shard i/N --out RUN/shards/shard-i-of-N` does (so a Slurm array, or any
scheduler, can run the same shards without Ray, and `crome merge` the same way). RUN must be on
storage every node sees. What Ray adds:

- **Retries.** A task whose worker dies (killed, node lost, out of memory) is run again by Ray, up
  to `max_retries` times; so is one that fails with an I/O error (`OSError`, a store that could not
  write). The retry is a re-run of the shard's build: it resumes from that shard's run store, so
  calls recorded before the loss are replayed, not paid again. Bad input fails at once, unretried.
- **Resume.** A shard whose run directory holds a complete export built with the same options is
  not submitted again; a re-run of the whole command finishes only what is missing, then merges.
- **Progress.** The driver polls the shards' `progress.json` files and reports shards done, pairs,
  and oracle calls and cost summed over the shards; RUN/progress.json says the same.

Ray is imported here only, when a Ray build starts (`pip install "crome[ray]"`). Without
`ray_address` (or `RAY_ADDRESS`), Ray starts locally with one CPU per shard up to the machine's.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from crome.builder.run.config import BuildConfig
from crome.builder.run.export import RUN_LAYOUT
from crome.builder.run.merge import EXECUTION_OPTIONS, merge
from crome.builder.run.pipeline import BuildResult, source_spec
from crome.builder.run.progress import ProgressFile, read_progress
from crome.outputs import claim

SHARDS_DIR = "shards"
MAX_RETRIES = 3  # attempts after the first, per shard
POLL_S = 1.0


class RayUnavailable(RuntimeError):
    """`--executor ray` without Ray installed."""


class ShardFailed(RuntimeError):
    """A shard's build failed on every attempt; `bad_input` when it was refused (a retry would fail the same way)."""

    def __init__(self, message: str, bad_input: bool) -> None:
        super().__init__(message)
        self.bad_input = bad_input


@dataclass
class ShardsProgress:
    """What the CLI shows while the shards run; the executor only calls these hooks."""

    update: Callable[[dict], None] = lambda state: None
    merging: Callable[[], None] = lambda: None


@dataclass
class ShardOutcome:
    index: int
    path: Path
    status: str
    stopped: str | None = None
    resumed: bool = False  # complete before this command: not run again
    pids: list[int] = field(default_factory=list)  # the worker processes that ran it (more than one: retried)


def shard_dir(out: Path, i: int, n: int) -> Path:
    return out / SHARDS_DIR / f"shard-{i:05d}-of-{n:05d}"


def shard_config(cfg: BuildConfig, i: int, n: int) -> BuildConfig:
    """Shard i's options: paths made absolute (a Ray worker runs in a directory of its own, maybe on another node)."""
    out = shard_dir(Path(cfg.out).resolve(), i, n)
    templates = str(Path(cfg.templates_dir).resolve()) if cfg.templates_dir else None
    return cfg.model_copy(update={"shard": (i, n), "out": str(out), "source": source_spec(cfg.source), "templates_dir": templates})


def _method(options: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in options.items() if k not in EXECUTION_OPTIONS and k != "out"}


def complete(cfg: BuildConfig) -> bool:
    """Does the shard's run directory hold a complete export of this very build (same options)?"""
    try:
        summary = json.loads((Path(cfg.out) / "summary.json").read_text())
    except (OSError, ValueError):
        return False
    return summary.get("status") == "complete" and _method(summary.get("options") or {}) == _method(cfg.public_options()) \
        and (summary.get("options") or {}).get("shard") == list(cfg.shard or ())


def run_shard(options: dict[str, Any]) -> dict[str, Any]:
    """One shard's build, in a Ray worker (or anywhere): `build()` with its options; what the driver needs back."""
    from crome.builder.run.pipeline import build

    cfg = BuildConfig(**options)
    result = build(cfg)
    return {"shard": list(cfg.shard or ()), "status": result.summary.get("status", result.stopped), "stopped": result.stopped,
            "pid": os.getpid()}


def _live(paths: list[Path]) -> dict[str, Any]:
    """Pairs, calls and cost summed over the shards' progress files."""
    total = {"pairs_done": 0, "pairs_total": 0, "calls": 0, "new_calls": 0, "cost_usd": 0.0}
    for p in paths:
        state = read_progress(p) or {}
        for k in total:
            total[k] += state.get(k) or 0
    total["cost_usd"] = round(total["cost_usd"], 6)
    return total


def build_on_ray(cfg: BuildConfig, shards: int, *, address: str | None = None, max_retries: int = MAX_RETRIES,
                 progress: ShardsProgress | None = None, init: dict[str, Any] | None = None) -> tuple[BuildResult | None, list[ShardOutcome]]:
    """Build `shards` shards as Ray tasks and merge them into cfg.out; (the merged result or None if a shard stopped, the shards)."""
    if shards < 1:
        raise ValueError(f"--shards must be at least 1, got {shards}")
    if cfg.shard is not None:
        raise ValueError("--shard and --shards do not go together: --shards N runs every shard i/N itself")
    if cfg.dry_run:
        raise ValueError("--dry-run estimates one build: run it without --executor ray")
    try:
        import ray
    except ImportError:
        raise RayUnavailable('--executor ray needs Ray: pip install "crome[ray]"') from None
    out = Path(cfg.out)
    progress = progress or ShardsProgress()
    claim(out, RUN_LAYOUT, "crome build", create=False)
    claim(out, RUN_LAYOUT, "crome build")  # RUN/shards is part of a run folder's layout
    configs = [shard_config(cfg, i, shards) for i in range(shards)]
    outcomes = [ShardOutcome(i, Path(c.out), "complete" if complete(c) else "pending", resumed=complete(c)) for i, c in enumerate(configs)]
    todo = [o.index for o in outcomes if not o.resumed]
    run_progress = ProgressFile(out)
    if todo:
        if not ray.is_initialized():
            kwargs = dict(init or {})
            if address or os.environ.get("RAY_ADDRESS"):
                kwargs["address"] = address or os.environ["RAY_ADDRESS"]
            else:
                kwargs.setdefault("num_cpus", min(len(todo), os.cpu_count() or 1))
            ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False, **kwargs)
        task = ray.remote(num_cpus=1, max_retries=max_retries, retry_exceptions=[OSError])(run_shard)
        refs = {task.remote(configs[i].model_dump()): i for i in todo}
        waiting = dict(refs)
        while waiting:
            ready, _ = ray.wait(list(waiting), num_returns=len(waiting), timeout=POLL_S)
            for ref in ready:
                i = waiting.pop(ref)
                try:
                    answer = ray.get(ref)  # a task that failed every attempt raises here
                except Exception as exc:  # RayTaskError (its cause: the build's exception) or a worker lost too often
                    cause = getattr(exc, "cause", None) or exc
                    first = (str(cause).strip().splitlines() or [""])[0][:300]
                    raise ShardFailed(f"shard {i}/{shards} ({configs[i].out}) failed: {type(cause).__name__}: {first}",
                                      bad_input=isinstance(cause, ValueError)) from None
                outcomes[i].status, outcomes[i].stopped = answer["status"], answer["stopped"]
                outcomes[i].pids.append(answer["pid"])
            state = {"stage": "shards", "shards_total": shards, "shards_done": sum(o.status == "complete" for o in outcomes),
                     "shards_stopped": sum(o.stopped is not None for o in outcomes),
                     **_live([Path(c.out) for c in configs])}
            run_progress.update(force=True, **state)
            progress.update(state)
    if any(o.status != "complete" for o in outcomes):
        return None, outcomes
    progress.merging()
    run_progress.stage("merging shards")
    result = merge([o.path for o in outcomes], out, templates_dir=cfg.templates_dir)
    return result, outcomes


__all__ = ["MAX_RETRIES", "RayUnavailable", "ShardFailed", "ShardOutcome", "ShardsProgress", "build_on_ray", "complete", "run_shard", "shard_config", "shard_dir"]
