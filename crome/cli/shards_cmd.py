"""`crome build ... --executor ray --shards N`: the shard builds on Ray, progress by shard, then the merged summary."""

from __future__ import annotations

from typing import Callable

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from crome.cli.errors import fail, os_error

err = Console(stderr=True)


def build_sharded(cfg, *, executor: str, shards: int | None, address: str | None, quiet: bool, print_summary: Callable) -> None:
    """Run the shards as Ray tasks and merge them into cfg.out; every failure is one line (exit 2 bad input, 1 a shard failed)."""
    from crome.builder.run.executor import RayUnavailable, ShardFailed, ShardsProgress, build_on_ray
    from crome.builder.run.merge import MergeError
    from crome.builder.sources import SourceError
    from crome.builder.store import RunStoreError

    if executor != "ray":
        fail(f"--executor {executor!r}: expected local or ray" if executor != "local" else
             "--shards and --ray-address go with --executor ray (or build one shard yourself with --shard i/N)")
    if shards is None:
        fail("--executor ray needs --shards N")
    bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[live]}"),
                   TimeElapsedColumn(), console=err, disable=quiet, transient=False)
    task = bar.add_task("shards", total=shards, live="")

    def update(state: dict) -> None:
        cost = f", ${state['cost_usd']:.4f}" if state.get("cost_usd") else ""
        bar.update(task, completed=state["shards_done"],
                   live=f"pairs {state['pairs_done']}/{state['pairs_total']}, calls {state['calls']} ({state['new_calls']} new){cost}")

    bar.start()
    try:
        result, outcomes = build_on_ray(cfg, shards, address=address,
                                        progress=ShardsProgress(update=update, merging=lambda: bar.update(task, description="merging")))
    except RayUnavailable as exc:
        fail(str(exc))
    except ShardFailed as exc:
        fail(str(exc), 2 if exc.bad_input else 1)
    except (MergeError, SourceError, RunStoreError, ValueError) as exc:
        fail(str(exc))
    except OSError as exc:
        fail(os_error(exc))
    finally:
        bar.stop()
    resumed = sum(o.resumed for o in outcomes)
    if result is None:
        stopped = [o for o in outcomes if o.status != "complete"]
        for o in stopped:
            err.print(f"shard {o.index}/{shards}: {o.status} ({o.path})", style="yellow", markup=False)
        pending = any(o.stopped == "batch_pending" for o in stopped)
        err.print(f"{len(stopped)} of {shards} shard(s) not complete: re-run the same command to "
                  + ("collect their batch jobs and go on" if pending else "resume them") + "; the finished ones are kept", markup=False)
        raise typer.Exit(5 if pending else 4)
    if not quiet:
        print_summary(result.summary, err)
        totals = result.summary["shards"]["totals"]
        cost = "unknown model price" if totals["cost_usd"] is None else f"${totals['cost_usd']:.4f}"
        err.print(f"{shards} shards on Ray ({resumed} already complete): {totals['requests']} oracle requests, billed {cost} in the shards; "
                  f"merged into {cfg.out}", markup=False)
