"""Nothing of the user's is touched, and every bad input is one clear line (issue 14).

Every case runs the real `crome` command line in a subprocess (several per process, see
cli_driver) and checks the exit code, the one-line message, that no traceback is printed, and
that every file crome did not write is byte-identical afterwards. Kills happen at exactly each
rename point of an export or a publish (kill_at_rename), not at a moment of a timed run.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from cli_driver import Result, crome, crome_many, env

from crome.builder.run.progress import read_progress
from crome.outputs import IncompleteExport, read_export

KILLER = Path(__file__).with_name("kill_at_rename.py")
TOPICS = [
    ("How do I bake sourdough bread at home?", "flour water starter salt oven loaf crust"),
    ("Explain how a bicycle gear system works.", "chain cassette derailleur sprocket pedal ratio"),
    ("What causes the seasons on Earth?", "axis tilt orbit sunlight hemisphere summer"),
    ("How do vaccines train the immune system?", "antigen antibody memory cells booster dose"),
    ("What is the history of the printing press?", "Gutenberg movable type 1450 Mainz books"),
]


def write_pairs(path: Path, n: int) -> Path:
    """n preference pairs the rules oracle can work on (plus one quarantined row)."""
    rows = []
    for i in range(n):
        q, words = TOPICS[i % len(TOPICS)]
        w = words.split()
        answer = lambda k: " ".join(f"The {w[j % len(w)]} matters because step {j + 1} depends on it." for j in range(k))  # noqa: E731
        rows.append({"prompt": f"{q} (case {i})", "chosen": f"Good question {i}.\n\n{answer(8)}\n\nHope this helps.",
                     "rejected": f"Good question {i}.\n\n{answer(3)}\n\nHope this helps."})
    rows.append({"prompt": "broken", "chosen": "same", "rejected": "same"})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def snapshot(*paths: Path) -> dict[str, str]:
    """sha256 of every file under `paths`: the user's files, to compare afterwards."""
    files = {}
    for root in paths:
        for p in sorted([root] if root.is_file() else root.rglob("*")):
            if p.is_file():
                files[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return files


def ok(r: Result) -> Result:
    assert r.code == 0, str(r)
    assert "Traceback" not in r.stderr + r.stdout, str(r)
    return r


def refused(r: Result, code: int, *needles: str) -> str:
    """One error line, last on stderr, holding every needle; no traceback, no rich box."""
    assert r.code == code, str(r)
    assert len(r.error_lines) == 1 and r.stderr.strip().splitlines()[-1] == r.error_lines[0], str(r)
    assert "Traceback" not in r.stderr + r.stdout and "╭" not in r.stderr, str(r)
    for needle in needles:
        assert needle in r.error_lines[0], f"{needle!r} not in the error line\n{r}"
    return r.error_lines[0]


def rows_of(folder: Path) -> int:
    return sum(pq.read_metadata(p).num_rows for p in (folder / "data").glob("*.parquet"))


@pytest.fixture
def src(tmp_path: Path) -> Path:
    return write_pairs(tmp_path / "prefs.jsonl", n=14)


# ---------------------------------------------------------------- issue 1 and 4: build writes only into its own folders


def test_build_merge_filter_refuse_folders_and_inputs_that_are_not_theirs(tmp_path, src):
    user = tmp_path / "user"
    (user / "data").mkdir(parents=True)
    # The case: the user's Parquet source inside the folder given as --out.
    pq.write_table(pa.Table.from_pylist([json.loads(line) for line in src.read_text().splitlines()]), user / "data" / "prefs.parquet")
    (tmp_path / "afile").write_text("not a folder\n")
    (tmp_path / "stub-model").mkdir()  # passes filter's model check: --out is what is wrong
    (tmp_path / "stub-model" / "config.json").write_text("{}\n")
    (tmp_path / "deep.jsonl").write_text("[" * 100_000 + "\n")
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "x.json").write_text("\x00\x13 not json at all {]")
    (garbage / "y.parquet").write_bytes(os.urandom(64))
    keep = snapshot(user, tmp_path / "afile", tmp_path / "deep.jsonl", garbage, src)

    r = crome_many([
        ["build", "user/data/prefs.parquet", "--out", "user", "-q"],
        ["build", "prefs.jsonl", "--out", "afile", "-q"],
        ["build", "deep.jsonl", "--out", "deep-run", "-q"],
        ["build", "garbage", "--out", "garbage-run", "-q"],
        ["build", "prefs.jsonl", "--out", "run", "--limit", "10", "-q"],
        ["publish", "run", "--to", "./published"],
        ["build", "prefs.jsonl", "--out", "published", "-q"],  # a published folder is not a run
        ["merge", "run", "--out", "user"],
        ["filter", "run", "--rm", "stub-model", "--keep-margin", "0", "--out", "user"],
        ["filter", "run", "--rm", "stub-model", "--keep-margin", "0", "--out", "afile"],
        ["status", "user"],
        ["status", "afile"],
        ["publish", "user", "--to", "./elsewhere"],
        ["audit", "user/data"],
    ], cwd=tmp_path)
    refused(r[0], 2, "--out user holds files crome did not write", "user/data/prefs.parquet", "new or empty folder")
    refused(r[1], 2, "--out afile is a file; expected a folder")
    refused(r[2], 2, "deep.jsonl", "nests lists or objects deeper than a JSON reader can follow")
    refused(r[3], 2, "cannot read the folder garbage", "expected .jsonl, .jsonl.gz, .json, .parquet or .csv files")
    ok(r[4]), ok(r[5])
    refused(r[6], 2, "--out published was written by `crome publish`, not by `crome build` or `crome merge`")
    refused(r[7], 2, "not a shard")  # merge checks its inputs first
    refused(r[8], 2, "--out user holds files crome did not write", "user/data/prefs.parquet")
    refused(r[9], 2, "--out afile is a file")
    refused(r[10], 2, "holds no run store")
    refused(r[11], 2, "is a file; expected the --out folder of `crome build`")
    refused(r[12], 2, "user is not a run folder")
    refused(r[13], 2, "not a crome dataset")
    assert snapshot(user, tmp_path / "afile", tmp_path / "deep.jsonl", garbage, src) == keep
    assert sorted(p.name for p in user.rglob("*")) == ["data", "prefs.parquet"]  # not even a marker
    assert not (tmp_path / "deep-run").exists() and not (tmp_path / "garbage-run").exists()  # a bad source leaves nothing
    assert sorted(p.name for p in (tmp_path / "published" / "data").iterdir()) == ["train-00000-of-00001.parquet"]

    # A merge into a folder that is not a run, from real shards.
    shards = crome_many([["build", "prefs.jsonl", "--out", f"s{i}", "--shard", f"{i}/2", "-q"] for i in range(2)]
                        + [["merge", "s0", "s1", "--out", "user"], ["merge", "s0", "s1", "--out", "published"]], cwd=tmp_path)
    ok(shards[0]), ok(shards[1])
    refused(shards[2], 2, "--out user holds files crome did not write", "user/data/prefs.parquet")
    refused(shards[3], 2, "--out published was written by `crome publish`")
    assert snapshot(user) == {k: v for k, v in keep.items() if k.startswith(str(user))}


def test_a_run_folder_keeps_the_users_files_and_older_runs_are_adopted(tmp_path, src):
    ok(crome("build", "prefs.jsonl", "--out", "run", "--limit", "12", "-q", cwd=tmp_path))
    run = tmp_path / "run"
    # The user drops files into crome's run folder: crome leaves them alone and never reads them as data.
    pq.write_table(pa.table({"x": [1, 2, 3]}), run / "data" / "prefs.parquet")
    (run / "notes.txt").write_text("my notes\n")
    keep = snapshot(run / "data" / "prefs.parquet", run / "notes.txt")
    r = crome_many([
        ["build", "prefs.jsonl", "--out", "run", "--limit", "9", "-q"],
        ["audit", "run", "--sql", "SELECT count(*) AS n FROM pairs", "--json"],
        ["publish", "run", "--to", "./pub"],
    ], cwd=tmp_path)
    ok(r[0]), ok(r[1]), ok(r[2])
    summary = json.loads((run / "summary.json").read_text())
    assert summary["counts"]["source_rows"] == 9
    assert json.loads(r[1].stdout) == [{"n": summary["counts"]["rows"]}] and rows_of(tmp_path / "pub") == summary["counts"]["rows"]
    assert snapshot(run / "data" / "prefs.parquet", run / "notes.txt") == keep

    # A run folder an older crome wrote has no marker: publish cannot check it, a build adopts it.
    (run / ".crome.json").unlink()
    r = crome_many([["publish", "run", "--to", "./pub2"], ["build", "prefs.jsonl", "--out", "run", "--limit", "9", "-q"],
                    ["publish", "run", "--to", "./pub2"]], cwd=tmp_path)
    refused(r[0], 2, "written by an older crome", "re-run the same `crome build`")
    ok(r[1]), ok(r[2])
    assert snapshot(run / "data" / "prefs.parquet", run / "notes.txt") == keep
    marker = json.loads((run / ".crome.json").read_text())
    assert "notes.txt" not in marker["files"] and "data/prefs.parquet" not in marker["files"]
    assert "data/train-00000-of-00001.parquet" in marker["export"]["files"]


# ---------------------------------------------------------------- issue 2 and Ctrl-C: one export, whatever the kill


def _killed(argv: list[str], cwd: Path, folder: Path, at: int) -> int:
    p = subprocess.run([sys.executable, str(KILLER), *argv], cwd=cwd, env=env(KILL_DIR=str(folder), KILL_AT=str(at)),
                       capture_output=True, text=True, timeout=300)
    return p.returncode


def test_a_build_killed_at_any_rename_of_its_export_leaves_the_old_export_or_the_new(tmp_path, src):
    r = crome_many([["build", "prefs.jsonl", "--out", "old", "--limit", "12", "-q"],
                    ["build", "prefs.jsonl", "--out", "new", "--limit", "8", "-q"]], cwd=tmp_path)
    ok(r[0]), ok(r[1])
    files = ("data/train-00000-of-00001.parquet", "rejections.parquet")
    exports = {name: {rel: (tmp_path / name / rel).read_bytes() for rel in files} for name in ("old", "new")}
    renames = 5  # the plan into the marker, three files, the record into the marker
    points = range(1, renames + 2)  # each rename, and one past the last (not killed)
    complete = {}
    for at in points:
        run = tmp_path / f"killed{at}"
        shutil.copytree(tmp_path / "old", run)
        # A re-run with a different --limit (the case), killed just before its at-th rename.
        code = _killed(["build", "prefs.jsonl", "--out", run.name, "--limit", "8", "-q"], tmp_path, run, at)
        assert code == (-signal.SIGKILL if at <= renames else 0), (at, code)
        try:
            read_export(run, hashes=True)
            complete[at] = True
        except IncompleteExport:
            complete[at] = False  # killed past the commit point: the next writer finishes the plan
        if complete[at]:
            now = {rel: (run / rel).read_bytes() for rel in files}
            # Before the commit point, the old export, whole; from it on, the new one.
            assert now == exports["old" if at == 1 else "new"], at
    assert [at for at in points if not complete[at]] == list(range(2, renames + 1))

    r = crome_many([c for at in points for c in (["publish", f"killed{at}", "--to", f"./pub{at}"],
                                                  ["audit", f"killed{at}", "--json", "--samples", "0"])], cwd=tmp_path)
    for at, (published, audited) in zip(points, zip(r[::2], r[1::2])):
        if not complete[at]:
            refused(published, 2, "its last export was interrupted while its files were being replaced", "re-run the `crome build`")
            refused(audited, 2, "interrupted")
            assert not (tmp_path / f"pub{at}").exists()
            continue
        ok(published), ok(audited)
        # The card, the published rows and the audit all describe the same export.
        summary = json.loads((tmp_path / f"killed{at}" / "summary.json").read_text())
        assert rows_of(tmp_path / f"pub{at}") == summary["counts"]["rows"] == json.loads(audited.stdout)["rows"]
        card = (tmp_path / f"pub{at}" / "README.md").read_text()
        assert f"{summary['counts']['source_rows']} source rows were read" in card and f"| train | {summary['counts']['rows']} |" in card
        assert ("a later build of this run stopped" in published.stderr) == (at == 1)  # publish says it is the older export

    # The next build finishes an interrupted export: the new one, exactly.
    again = [at for at in points if not complete[at]]
    for result in crome_many([["build", "prefs.jsonl", "--out", f"killed{at}", "--limit", "8", "-q"] for at in again], cwd=tmp_path):
        ok(result)
    for at in again:
        assert {rel: (tmp_path / f"killed{at}" / rel).read_bytes() for rel in files} == exports["new"]
        assert read_export(tmp_path / f"killed{at}", hashes=True) is not None


def test_publish_killed_at_any_rename_leaves_the_folder_as_it_was_or_finishes_next_time(tmp_path, src):
    r = crome_many([["build", "prefs.jsonl", "--out", "a", "--limit", "12", "-q"], ["build", "prefs.jsonl", "--out", "b", "--limit", "6", "-q"],
                    ["publish", "a", "--to", "./ref-a", "--repo-id", "acme/x"], ["publish", "b", "--to", "./ref-b", "--repo-id", "acme/x"]],
                   cwd=tmp_path)
    for x in r:
        ok(x)
    # What a reader of the folder sees: crome's bookkeeping (.crome.json, .crome.lock, .crome-staging/) aside.
    published = lambda folder: {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))  # noqa: E731
                                if p.is_file() and not p.relative_to(folder).parts[0].startswith(".crome") and p.name != "notes.txt"}
    ref_a, ref_b = published(tmp_path / "ref-a"), published(tmp_path / "ref-b")
    renames = 4  # plan, README, the shard, record
    points = range(1, renames + 2)
    for at in points:
        folder = tmp_path / f"pub{at}"
        shutil.copytree(tmp_path / "ref-a", folder)
        (folder / "notes.txt").write_text("the user's\n")
        code = _killed(["publish", "b", "--to", f"./{folder.name}", "--repo-id", "acme/x"], tmp_path, folder, at)
        assert code == (-signal.SIGKILL if at <= renames else 0), (at, code)
        pending = "pending" in json.loads((folder / ".crome.json").read_text())
        assert pending == (1 < at <= renames), at
        if at == 1:
            assert published(folder) == ref_a  # killed before the commit point: the previous state, intact
    r = crome_many([c for at in points for c in (["audit", f"pub{at}", "--samples", "0"],
                                                 ["publish", "b", "--to", f"./pub{at}", "--repo-id", "acme/x"])], cwd=tmp_path)
    for at, (audited, again) in zip(points, zip(r[::2], r[1::2])):
        if 1 < at <= renames:
            refused(audited, 2, "interrupted", "re-run the `crome publish`")
        else:
            ok(audited)
        ok(again)  # a publish finishes (or redoes) what the killed one started
        assert published(tmp_path / f"pub{at}") == ref_b and (tmp_path / f"pub{at}" / "notes.txt").read_text() == "the user's\n"


# ---------------------------------------------------------------- issue 6: publishing over a folder


def test_publish_keeps_a_readme_and_splits_crome_did_not_write_and_says_where_it_goes(tmp_path, src):
    ok(crome("build", "prefs.jsonl", "--out", "run", "--limit", "10", "-q", cwd=tmp_path))
    mine = tmp_path / "mine"  # a folder crome never wrote
    (mine / "data").mkdir(parents=True)
    (mine / "README.md").write_text("# My dataset\n\nWritten by hand.\n")
    pq.write_table(pa.table({"x": [1]}), mine / "data" / "validation-00000-of-00001.parquet")
    keep_mine = snapshot(mine)
    r = crome_many([["publish", "run", "--to", "./mine"], ["publish", "run", "--to", "./pub"]], cwd=tmp_path)
    refused(r[0], 2, "--to mine holds files crome did not write", "mine/README.md")
    assert r[0].stderr.startswith("publishing to the local folder mine")
    assert snapshot(mine) == keep_mine
    ok(r[1])

    # In a folder crome published, the user writes their own card and adds a split: both are kept.
    pub = tmp_path / "pub"
    (pub / "README.md").write_text("# Hand-written card\n")
    pq.write_table(pa.table({"x": [1]}), pub / "data" / "validation-00000-of-00001.parquet")
    keep = snapshot(pub / "README.md", pub / "data" / "validation-00000-of-00001.parquet")
    r = crome_many([["build", "prefs.jsonl", "--out", "run", "--limit", "7", "-q"], ["publish", "run", "--to", "./pub"],
                    ["publish", "run", "--to", "./pub", "--overwrite-card"]], cwd=tmp_path)
    ok(r[0]), ok(r[1]), ok(r[2])
    assert "warning: kept README.md: crome did not write it" in r[1].stderr
    assert "updated  data/train-00000-of-00001.parquet" in r[1].stdout and "README.md" not in r[1].stdout
    assert snapshot(pub / "data" / "validation-00000-of-00001.parquet") == {k: v for k, v in keep.items() if "validation" in k}
    assert "updated  README.md" in r[2].stdout and "Hand-written" not in (pub / "README.md").read_text()

    # `--to w/x` that is no folder is a Hub repo, private unless --public, said before anything is written.
    (tmp_path / "org" / "ds").mkdir(parents=True)
    r = crome_many([["publish", "run", "--to", "w/x"], ["publish", "run", "--to", "w/x", "--public"],
                    ["publish", "run", "--to", "org/ds"], ["publish", "run", "--to", "a/b/c"], ["publish", "run", "--to", "name"]],
                   cwd=tmp_path)
    assert r[0].stderr.startswith("publishing to the Hub dataset repo w/x, private if it is created")
    refused(r[0], 3, "the Hub refused or could not be reached")  # offline here: nothing real is reached
    assert r[1].stderr.startswith("publishing to the Hub dataset repo w/x, public if it is created")
    assert not (tmp_path / "w").exists()
    ok(r[2])
    assert r[2].stderr.startswith("publishing to the local folder org/ds") and (tmp_path / "org/ds/README.md").is_file()
    refused(r[3], 2, "--to 'a/b/c' is neither an existing folder nor a Hub dataset id ORG/NAME")
    refused(r[4], 2, "--to 'name' is neither an existing folder nor a Hub dataset id ORG/NAME")


# ---------------------------------------------------------------- issue 3 and 7: --sql


def test_sql_prints_plain_text_with_time_and_memory_limits(tmp_path):
    rows = [{"prompt": "Bold? [/b] and [red]A[/red]", "chosen": "Use **bold** [/b] closes it.", "rejected": "No.\tTabs\nand lines"}
            for _ in range(1)] + [{"prompt": f"Q{i}", "chosen": f"A long enough answer {i}.", "rejected": "Short."} for i in range(4)]
    (tmp_path / "markup.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    ok(crome("build", "markup.jsonl", "--out", "run", "-q", cwd=tmp_path))
    r = crome_many([
        ["audit", "run", "--sql", "SELECT '[/x]' AS a, '[red]A[/red]' AS b, NULL AS c"],
        ["audit", "run", "--sql", "SELECT '[/x]' AS a", "--json"],
        ["audit", "run", "--sql", "SELECT chosen[1].content AS answer FROM pairs WHERE kind = 'original' AND prompt[1].content LIKE 'Bold%'"],
        ["audit", "run", "--sql", "SELECT rejected[1].content FROM pairs WHERE kind = 'original' AND prompt[1].content LIKE 'Bold%'"],
        ["audit", "run", "--sql", "SELECT count(*) FROM range(1000000000000000) t(x)", "--timeout", "0.5"],
        ["audit", "run", "--sql", "SELECT list(x) FROM range(100000000) t(x)", "--memory-limit", "20MB"],
        ["audit", "run", "--sql", "SELECT x FROM range(50) t(x)", "--max-rows", "10"],
        ["audit", "run", "--sql", "SELECT 1", "--memory-limit", "lots"],
        ["audit", "run", "--sql", "DELETE FROM pairs"],
        ["audit", "run", "--sql", "SELECT * FROM read_csv('../../etc/passwd')"],
        ["audit", "run", "--samples", "5"],
    ], cwd=tmp_path)
    assert ok(r[0]).stdout == "a\tb\tc\n[/x]\t[red]A[/red]\tNULL\n"
    assert json.loads(ok(r[1]).stdout) == [{"a": "[/x]"}]
    assert ok(r[2]).stdout == "answer\nUse **bold** [/b] closes it.\n"
    assert ok(r[3]).stdout.splitlines()[1] == "No.\\tTabs\\nand lines"  # one row, one line: tabs and breaks escaped
    refused(r[4], 2, "--sql stopped after 0.5 s (--timeout 0.5)")
    refused(r[5], 2, "Out of Memory", "--memory-limit 20MB")
    assert len(ok(r[6]).stdout.splitlines()) == 11 and "only the first 10 rows are printed (--max-rows)" in r[6].stderr
    refused(r[7], 2, "--memory-limit 'lots'", "expected a size such as 2GB")
    refused(r[8], 2, "--sql refused: statement 1 is DELETE")
    refused(r[9], 2, "--sql failed", "disabled by configuration")
    ok(r[10])
    assert "[/b]" in r[10].stdout  # the default report shows the text as it is (escaped for rich, not styled)
    assert not list(tmp_path.glob(".tmp*")) and not (tmp_path / "run" / ".tmp").exists()  # DuckDB spilled nowhere of ours


# ---------------------------------------------------------------- issue 5: watching a running build


def _pause_when_building(p: subprocess.Popen, run: Path) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        progress = read_progress(run)
        if progress and progress.get("pid") == p.pid and progress.get("stage") == "oracle stages" and progress.get("pairs_done", 0) > 0:
            p.send_signal(signal.SIGSTOP)  # holds its lock and its store open: a build in progress, frozen
            return
        assert p.poll() is None, "the build finished before it could be watched"
        time.sleep(0.01)
    raise AssertionError("the build never reached its oracle stages")


def test_status_and_audit_watch_a_running_build_and_writers_are_refused(tmp_path):
    write_pairs(tmp_path / "many.jsonl", n=400)
    ok(crome("build", "many.jsonl", "--out", "run", "--limit", "20", "-q", cwd=tmp_path))  # a first export to read
    p = subprocess.Popen([sys.executable, "-m", "crome", "build", "many.jsonl", "--out", "run", "-q"], cwd=tmp_path, env=env(),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _pause_when_building(p, tmp_path / "run")
        r = crome_many([
            ["status", "run"], ["status", "run", "--json"], ["audit", "run", "--json", "--samples", "0"],
            ["audit", "run", "--sql", "SELECT count(*) AS n FROM pairs", "--json"],
            ["publish", "run", "--to", "./pub"], ["build", "many.jsonl", "--out", "run", "--limit", "5", "-q"],
        ], cwd=tmp_path)
    finally:
        p.send_signal(signal.SIGKILL)  # the watchers are done: the build dies mid-run, as it may
        p.wait(timeout=60)
    assert f"build in progress (pid {p.pid}): oracle stages" in ok(r[0]).stdout
    report = json.loads(ok(r[1]).stdout)
    assert report["building"]["pid"] == p.pid and report["building"]["pairs_total"] == 400
    assert report["counts"]["source_pairs"] == 20  # from the last export, and said so
    audited = json.loads(ok(r[2]).stdout)
    assert audited["rows"] == json.loads(ok(r[3]).stdout)[0]["n"] > 0
    assert f"a build is in progress in run (pid {p.pid}, stage oracle stages" in r[2].stderr
    refused(r[4], 2, f"run run is in use by another process (pid {p.pid})")
    refused(r[5], 2, f"is in use by another process (pid {p.pid})")
    assert not (tmp_path / "pub").exists()
    after = json.loads(ok(crome("status", "run", "--json", cwd=tmp_path)).stdout)  # no build runs now: the store is read
    assert after["building"] is None and after["interrupted"]["stage"] == "oracle stages" and after["calls"]["total"] > 0


# ---------------------------------------------------------------- issue 7: size guards


def test_outsized_answers_are_quarantined_and_a_paid_build_shows_its_estimate_first(tmp_path):
    huge = "word " * 400_000  # 2 MB: the 50 MB answer, smaller
    rows = [{"prompt": f"Explain topic {i}, with care.", "chosen": f"Topic {i} is explained here. " * (3 + i), "rejected": "I do not know."}
            for i in range(8)] + [{"prompt": "Say everything.", "chosen": huge, "rejected": "Nothing."}]
    (tmp_path / "big.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    keep = snapshot(tmp_path / "big.jsonl")
    paid = ["--oracle", "openai:gpt-4o-mini", "--base-url", "http://127.0.0.1:9/v1"]  # nothing listens: a call would fail
    key = {"OPENAI_API_KEY": "sk-test-not-a-real-key-000000"}
    r = crome_many([
        ["build", "big.jsonl", "--out", "run", "-q"],
        ["build", "big.jsonl", "--out", "dry", *paid, "--dry-run"],
        ["build", "big.jsonl", "--out", "dry2", *paid, "--dry-run", "--max-answer-chars", "3000000", "--max-cost", "0.0001"],
        ["build", "big.jsonl", "--out", "capped", *paid, "--max-cost", "0.0001", "-q"],
        ["sources", "inspect", "big.jsonl", "--json", "--samples", "0"],
    ], cwd=tmp_path, extra_env=key)
    ok(r[0])
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["counts"]["quarantine_reasons"] == {"answer_too_long": 1}
    assert summary["options"]["max_answer_chars"] == 100_000
    detail = next(q for q in (json.loads(r[4].stdout))["quarantined"])
    assert detail["row"] == 8 and "the chosen answer has 2,000,000 characters, over the limit of 100,000" in detail["detail"]

    assert "estimated cost $" in ok(r[1]).stderr and "the most expensive pairs" in r[1].stderr
    assert "warning: source row 8 alone is" in ok(r[2]).stderr  # let through on purpose: the estimate points at it
    assert "is over --max-cost $0.0001: a build would stop before its first call" in r[2].stderr
    refused(r[3], 4, "is over --max-cost $0.0001: nothing was called")
    assert "estimated cost $" in r[3].stderr and "the most expensive pairs" in r[3].stderr  # shown before stopping
    from crome.builder.store import RunStore

    with RunStore.open(tmp_path / "capped", read_only=True) as store:
        assert store.call_stats()["total"] == 0
    assert snapshot(tmp_path / "big.jsonl") == keep


# ---------------------------------------------------------------- every error the README lists, one line each


def test_every_bad_input_the_readme_lists_is_one_line_and_exit_2(tmp_path, src):
    (tmp_path / "notes.txt").write_text("hello\n")
    (tmp_path / "qa.jsonl").write_text(json.dumps({"question": "Q", "good": "a", "bad": "b"}) + "\n")
    (tmp_path / "stub-model").mkdir()  # passes the model check (a folder with config.json): the data is what is wrong
    (tmp_path / "stub-model" / "config.json").write_text("{}\n")
    keep = snapshot(src, tmp_path / "notes.txt", tmp_path / "qa.jsonl")
    r = crome_many([
        ["build", "prefs.jsonl", "--out", "run", "--limit", "10", "-q"],  # 0: a run to use below
        ["build", "nope.jsonl", "--out", "r1", "-q"],
        ["build", "notes.txt", "--out", "r1", "-q"],
        ["build", "qa.jsonl", "--out", "r1", "-q"],
        ["build", "qa.jsonl", "--out", "r1", "--map", "prompt=question,chosen=nope", "-q"],
        ["build", "qa.jsonl", "--out", "r1", "--map", "garbage", "-q"],
        ["build", "prefs.jsonl", "--out", "r1", "--batch", "-q"],
        ["build", "prefs.jsonl", "--out", "r1", "--shard", "5/2", "-q"],
        ["build", "prefs.jsonl", "--out", "r1", "--limit", "0", "-q"],
        ["build", "prefs.jsonl", "--out", "r1", "--oracle", "nosuch:model", "-q"],
        ["build", "prefs.jsonl", "--out", "r1", "--no-such-option"],
        ["build", "prefs.jsonl", "--out", "r1", "--max-answer-chars", "0", "-q"],
        ["merge", "run", "--out", "m"],
        ["publish", "run", "--to", "./p", "--test-fraction", "2"],
        ["publish", "nowhere", "--to", "./p"],
        ["audit", "nowhere"],
        ["audit", "notes.txt"],
        ["audit", "hf://models/acme/rm"],
        ["audit", "run", "--sql", "SELECT 1; SELECT 2"],
        ["audit", "run", "--sql", "SELEC nothing"],
        ["status", "nowhere"],
        ["sources", "inspect", "nope.jsonl"],
        ["train", "nowhere", "--model", "stub-model", "--out", "t"],
        ["eval", "stub-model", "--data", "nowhere"],
        ["nosuchcommand"],
    ], cwd=tmp_path)
    ok(r[0])
    expected = [
        (2, "cannot read nope.jsonl: no such file or directory"),
        (2, "cannot read notes.txt: expected .jsonl"),
        (2, "cannot detect the shape", "columns are: question, good, bad"),
        (2, "column 'nope' not found (mapped to chosen)"),
        (2, "expected FIELD=COLUMN pairs"),
        (2, "--batch needs an LLM oracle"),
        (2, "need 0 <= i < N"),
        (2, "limit"),
        (2, "nosuch"),
        (2, "No such option: --no-such-option"),
        (2, "max_answer_chars"),
        (2, "not a shard"),
        (2, "--test-fraction"),
        (2, "run dir nowhere does not exist"),
        (2, "nowhere does not exist"),
        (2, "notes.txt is not a .parquet file"),
        (2, "expected hf://datasets/ORG/NAME"),
        (2, "holds 2 statements"),
        (2, "--sql does not parse"),
        (2, "nowhere does not exist"),
        (2, "cannot read nope.jsonl"),
        (2, "nowhere"),
        (2, "nowhere"),
        (2, "No such command 'nosuchcommand'"),
    ]
    for result, (code, *needles) in zip(r[1:], expected):
        refused(result, code, *needles)
    assert not (tmp_path / "r1").exists() and not (tmp_path / "m").exists() and not (tmp_path / "p").exists()
    assert snapshot(src, tmp_path / "notes.txt", tmp_path / "qa.jsonl") == keep


def test_a_model_that_is_not_there_is_one_line_naming_it_and_exit_2(tmp_path, src):
    """train --model, eval MODEL, filter --rm: a missing folder, a file, a folder without config.json, a Hub id not cached.

    Checked before any work (the data is never read), and nothing else on stderr: no transformers error cut
    to `OSError`, no Hub retry warnings. HF_HUB_OFFLINE is set (cli_driver) and the Hub cache is empty.
    """
    (tmp_path / "notes.txt").write_text("hello\n")
    (tmp_path / "no-config").mkdir()
    (tmp_path / "no-config" / "tokenizer.json").write_text("{}\n")
    hub_id = "crome-test/no-such-model"
    rm_options = ["--keep-fraction", "0.5", "--tie-fraction", "0.5", "--out", "f"]
    cases = {
        "./nowhere": "found no such folder",
        "notes.txt": "found a file, not a folder",
        "no-config": "found a folder without config.json",
        hub_id: "found no such folder, and no such model in the local Hub cache (HF_HUB_OFFLINE is set)",
    }
    commands = [["build", "prefs.jsonl", "--out", "run", "--limit", "6", "-q"]]
    for model in cases:
        commands += [["train", "run", "--model", model, "--out", "t"], ["eval", model, "--data", "run"],
                     ["filter", "run", "--rm", model, *rm_options]]
    r = crome_many(commands, cwd=tmp_path, extra_env={"HF_HUB_CACHE": str(tmp_path / "hub-cache")})
    ok(r[0])
    results = iter(r[1:])
    for model, found in cases.items():
        for name in ("--model", "MODEL", "--rm"):
            result = next(results)
            line = refused(result, 2, f"{name} {model}: expected a local model folder (with config.json) or a Hub model id; {found}")
            assert result.stderr.strip() == line, str(result)  # the one line and nothing before it
    assert not any((tmp_path / d).exists() for d in ("t", "f"))

    # -v: still the one line, exit 2, with the Hub's own error logged above it for whoever debugs it.
    v = crome("-v", "eval", hub_id, "--data", "run", cwd=tmp_path, extra_env={"HF_HUB_CACHE": str(tmp_path / "hub-cache")})
    assert v.code == 2 and v.stderr.strip().splitlines()[-1].startswith(f"error: MODEL {hub_id}: expected"), str(v)
    assert "LocalEntryNotFoundError" in v.stderr, str(v)


def test_a_templates_dir_that_is_not_a_folder_of_templates_is_one_line_and_exit_2(tmp_path, src):
    (tmp_path / "notes.txt").write_text("hello\n")
    (tmp_path / "empty").mkdir()
    (tmp_path / "mine" / "degrade").mkdir(parents=True)  # the template folder itself, not the folder above it
    (tmp_path / "mine" / "degrade" / "v9.jinja").write_text("not used\n")
    r = crome_many([
        ["build", "prefs.jsonl", "--out", "r1", "--templates-dir", "no-templates", "-q"],
        ["build", "prefs.jsonl", "--out", "r1", "--templates-dir", "notes.txt", "-q"],
        ["build", "prefs.jsonl", "--out", "r1", "--templates-dir", "empty", "-q"],
        ["build", "prefs.jsonl", "--out", "r1", "--templates-dir", "mine/degrade", "-q"],
        *[["build", "prefs.jsonl", "--out", f"s{i}", "--shard", f"{i}/2", "-q"] for i in range(2)],
        ["merge", "s0", "s1", "--out", "m", "--templates-dir", "no-templates"],
    ], cwd=tmp_path)
    expected = "option templates_dir: expected a folder of template versions (NAME/vN.jinja), found"
    refused(r[0], 2, f"{expected} no such folder: no-templates")
    refused(r[1], 2, f"{expected} a file, not a folder: notes.txt")
    refused(r[2], 2, f"{expected} a folder with no NAME/vN.jinja in it: empty")
    refused(r[3], 2, f"{expected} a folder with no NAME/vN.jinja in it: mine/degrade")
    ok(r[4]), ok(r[5])
    refused(r[6], 2, f"{expected} no such folder: no-templates")
    assert not (tmp_path / "r1").exists() and not (tmp_path / "m").exists()


def test_a_bad_key_or_an_unknown_model_is_one_line_and_exit_3(tmp_path, fake_llm_server):
    write_pairs(tmp_path / "pairs.jsonl", n=4)
    key = "sk-proj-PLANTEDsecretKEY0123456789abcdefXYZ"
    for mode in ("auth_error", "unknown_model"):
        fake_llm_server.mode = mode
        r = crome("build", "pairs.jsonl", "--out", f"run-{mode}", "--oracle", "openai:gpt-4o-mini", "--base-url",
                  fake_llm_server.openai_url, "-q", cwd=tmp_path, extra_env={"OPENAI_API_KEY": key})
        refused(r, 3, "oracle error, run stopped")
        assert key not in r.stdout + r.stderr
        assert "estimated cost $" in r.stderr  # a paid build shows its estimate before the first call
