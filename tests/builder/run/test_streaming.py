"""The streaming build: the same rows and the same dedup and rejection decisions as the build that held every pair in memory.

`tests/data/streaming/*.json.gz` were written once by that earlier build (crome before issue 17) on
two small real sources: UltraFeedback (300 pairs, cross-prompt pairs on) and RM-Bench chat (60
rows, 540 pairs: nine per prompt, so hundreds of exact and some near duplicates). Each holds every
row id and every rejection (source, stage, reason, candidate, duplicate_of, augmentation, attribute).
The builds here run with batches of 16 pairs, so the dedup index and the IQN draws go through the
run store many times over, and must still decide exactly as one pass in memory did.
"""

from __future__ import annotations

import gzip
import json
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from crome.builder.run import flow
from crome.builder.run.config import BuildConfig
from crome.builder.run.pipeline import build
from crome.builder.store import RunStore
from paths import REPO, SHARED_DATA

DATA = REPO / "tests" / "data" / "streaming"
UF = SHARED_DATA / "ultrafeedback-binarized-sample" / "train_clean.jsonl"
RMB = SHARED_DATA / "rm-bench" / "chat_filtered.json"
KILLER = Path(__file__).with_name("kill_at_progress.py")
pytestmark = pytest.mark.skipif(not UF.exists() or not RMB.exists(), reason="../shared/data not present")

CASES = [("uf300_cross_prompt", UF, 300), ("rmbench_chat60_cross_prompt", RMB, 60)]


def decisions(run: Path) -> dict:
    rows = pa.concat_tables([pq.read_table(p) for p in sorted((run / "data").glob("*.parquet"))])
    rejections = pq.read_table(run / "rejections.parquet").to_pylist()
    keys = ("source_id", "stage", "reason", "candidate_id", "duplicate_of", "augmentation", "attribute")
    return {"rows": sorted(rows.column("id").to_pylist()),
            "rejections": sorted(([r[k] for k in keys] for r in rejections), key=json.dumps)}


def files(run: Path) -> dict[str, bytes]:
    paths = sorted((run / "data").glob("*.parquet")) + [run / "rejections.parquet"]
    return {p.name: p.read_bytes() for p in paths}


@pytest.mark.parametrize("name,source,limit", CASES)
def test_rows_and_decisions_equal_the_in_memory_build(tmp_path, monkeypatch, name, source, limit):
    monkeypatch.setattr(flow, "BATCH", 16)
    with gzip.open(DATA / f"{name}.json.gz", "rt") as f:
        expected = json.load(f)
    run = tmp_path / "run"
    summary = build(BuildConfig(source=str(source), out=str(run), limit=limit, cross_prompt=True)).summary
    got = decisions(run)
    assert got["rows"] == expected["rows"]
    assert got["rejections"] == expected["rejections"]
    assert summary["counts"]["rows"] == len(expected["rows"]) and summary["accounting"]["balanced"]
    with RunStore.open(run, read_only=True) as store:
        # The dedup index lives in the store, and the rows SQL users read are the exported rows.
        (exact, bands, sigs, rows), = store._query(
            "SELECT (SELECT count(*) FROM dedup_exact), (SELECT count(*) FROM dedup_bands), (SELECT count(*) FROM dedup_sigs), "
            "(SELECT count(*) FROM rows)")
        ordered = [r[0] for r in store._query("SELECT id FROM rows ORDER BY ord")]
    assert exact > 0 and bands == 8 * sigs > 0 and rows == len(expected["rows"])
    exported = pa.concat_tables([pq.read_table(p) for p in sorted((run / "data").glob("*.parquet"))]).column("id").to_pylist()
    assert ordered == exported
    if name.startswith("rmbench"):
        reasons = summary["counts"]["rejections_by_stage"]["dedup"]
        assert reasons["exact_duplicate"] > 100 and reasons["near_duplicate"] > 0  # both kinds decided from the store


def test_the_batch_size_changes_nothing_and_runs_are_byte_identical(tmp_path, monkeypatch):
    """Neither the flow's batch nor the export's sort buckets (rows bucketed by position, rejections read by pages of seq), how many rows
    the bucketing holds, how many rows the order's ranges of source ids hold, nor how many rows a row group is converted from at a
    time change a byte (the files and the `rows` table)."""
    from crome.builder.run import export as export_
    from crome.builder.store import work

    outs = []
    variants = ((7, 10_000, 4096, 65_536, 1000), (16, 7, 4096, 65_536, 3), (256, 5, 3, 9, 1000), (16, 10_000, 4096, 4, 2), (16, 7, 11, 30, 1))
    for i, (batch, part, held, ranges, convert) in enumerate(variants):
        monkeypatch.setattr(export_, "CONVERT_CHUNK", convert)  # a row group built from Arrow tables of this many rows
        monkeypatch.setattr(flow, "BATCH", batch)
        monkeypatch.setattr(work, "SORT_PART_ROWS", part)
        monkeypatch.setattr(work, "HELD_ROWS", held)  # rows held before the buckets are written out
        monkeypatch.setattr(work, "SORT_RANGE_ROWS", ranges)  # the order columns sorted a range of source ids at a time
        run = tmp_path / f"run{i}"
        build(BuildConfig(source=str(RMB), out=str(run), limit=20, cross_prompt=True))
        outs.append(files(run))
        with RunStore.open(run, read_only=True) as store:
            rows = store._query("SELECT count(*) FROM build_rows")[0][0]
            ordered = [r[0] for r in store._query("SELECT id FROM rows ORDER BY ord")]
        assert rows > 5 * 7  # several buckets when a bucket holds 5 or 7 rows
        exported = pa.concat_tables([pq.read_table(p) for p in sorted((run / "data").glob("*.parquet"))]).column("id").to_pylist()
        assert ordered == exported
        assert not list(run.glob(work.SORT_DIR_PREFIX + "*"))  # the buckets are removed
    assert all(o == outs[0] for o in outs[1:])


def crome(args: list[str], **env: str) -> subprocess.CompletedProcess:
    import os

    return subprocess.run([sys.executable, str(KILLER), *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "KILL_STAGE": "never", **env})


@pytest.mark.slow
def test_sigkill_at_three_points_of_the_streaming_export_then_resume(tmp_path):
    args = ["build", str(UF), "--limit", "150", "-q"]
    ref = tmp_path / "ref"
    done = crome([*args, "--out", str(ref)])
    assert done.returncode == 0, done.stderr
    expected = files(ref)
    # Before the first rows are written, with the data file written and the rejections not, and before the renames.
    for point in ("export: writing rows", "export: writing rejections", "export: committing"):
        run = tmp_path / point.replace(":", "").replace(" ", "-")
        killed = crome([*args, "--out", str(run)], KILL_STAGE=point)
        assert killed.returncode == -signal.SIGKILL, (point, killed.stderr)
        assert not (run / "summary.json").exists()  # it died inside its first export
        with RunStore.open(run, read_only=True) as store:
            assert store._query("SELECT count(*) FROM build_rows")[0][0] > 0  # the rows had streamed into the store
        again = crome([*args, "--out", str(run)])
        assert again.returncode == 0, again.stderr
        assert files(run) == expected, point
        summary = json.loads((run / "summary.json").read_text())
        assert summary["oracle_calls"]["new"] == 0  # every call replayed from the store


def test_the_export_runs_with_duckdbs_indexes_released_and_the_base_limit(tmp_path, monkeypatch):
    """The build reopens its store before the export: the call index the loop loaded is released, and the export gets EXPORT_MEMORY_MB."""
    from crome.builder.run import pipeline

    seen = {}
    real = pipeline.export

    def spy(store, *args, **kwargs):
        (seen["art"],) = store._query("SELECT coalesce(sum(memory_usage_bytes), 0) FROM duckdb_memory() WHERE tag = 'ART_INDEX'")[0]
        seen["limit"] = store.memory_mb
        return real(store, *args, **kwargs)

    monkeypatch.setattr(pipeline, "export", spy)
    monkeypatch.setattr(pipeline, "INDEX_BYTES_PER_PAIR", 2**20)  # a limit that grows 1 MB per pair: 192 + 20 MB in the loop
    run = tmp_path / "run"
    build(BuildConfig(source=str(RMB), out=str(run), limit=20))
    assert seen == {"art": 0, "limit": pipeline.EXPORT_MEMORY_MB}
    assert (run / "summary.json").exists()


def test_an_export_out_of_duckdb_memory_runs_again_at_the_builds_limit(tmp_path, monkeypatch, caplog):
    """EXPORT_MEMORY_MB was measured up to 300k pairs: an export that outgrows it is run again (it is all or nothing) within the
    build's limit, and the files are those of a build that never ran out."""
    import duckdb

    from crome.builder.run import pipeline

    expected_run = tmp_path / "plain"
    build(BuildConfig(source=str(RMB), out=str(expected_run), limit=20))
    real, limits = pipeline.export, []

    def first_runs_out(store, *args, **kwargs):
        limits.append(store.memory_mb)
        if len(limits) == 1:
            real(store, *args, **kwargs)  # writes and commits the files, then runs out publishing the SQL rows
            raise duckdb.OutOfMemoryException("Out of Memory Error: could not allocate block of size 256.0 KiB (128.0 MiB/128.0 MiB used)")
        return real(store, *args, **kwargs)

    monkeypatch.setattr(pipeline, "export", first_runs_out)
    run = tmp_path / "run"
    with caplog.at_level("WARNING", logger="crome.builder.run.pipeline"):
        build(BuildConfig(source=str(RMB), out=str(run), limit=20))
    assert limits[0] == pipeline.EXPORT_MEMORY_MB and limits[1] > pipeline.EXPORT_MEMORY_MB
    assert "exporting again" in caplog.text
    assert files(run) == files(expected_run)
    sql_rows = []
    for r in (run, expected_run):
        with RunStore.open(r, read_only=True) as store:
            sql_rows.append(store._query("SELECT ord, id FROM rows ORDER BY ord"))
    assert sql_rows[0] == sql_rows[1] and len(sql_rows[0]) > 0  # the SQL `rows` once, not twice


def test_a_row_group_converted_a_few_rows_at_a_time_has_the_same_bytes(monkeypatch):
    """The export turns rows into Python objects CONVERT_CHUNK at a time (they are ~25 KB each) and writes a row group
    of WRITE_CHUNK: the bytes do not depend on CONVERT_CHUNK. Rows of 32 KB each overflow Parquet's 1 MB dictionary and
    page sizes, where a row group written from a table of several chunks would be cut differently."""
    import hashlib
    import io

    from crome.builder.run import export as export_
    from crome.schemas import DatasetRow, arrow_schema

    monkeypatch.syspath_prepend(str(REPO / "tests" / "builder" / "store"))  # undone after the test
    from store_helpers import row

    rows = [row(i % 5).model_copy(update={"source_id": f"{i}-" + "abcdefgh" * 4000}).model_dump_json() for i in range(60)]

    def written(convert: int) -> str:
        monkeypatch.setattr(export_, "CONVERT_CHUNK", convert)
        buf = io.BytesIO()
        table = export_._row_table(iter(rows), 60)
        assert table.num_rows == 60
        with pq.ParquetWriter(buf, arrow_schema(DatasetRow)) as w:
            w.write_table(table, row_group_size=60)
        return hashlib.sha256(buf.getvalue()).hexdigest()

    assert written(1) == written(7) == written(1000)
    assert export_._row_table(iter(rows[:3]), 10).num_rows == 3  # the iterator's end
