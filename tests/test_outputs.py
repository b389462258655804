"""crome.outputs: which folders crome may write, which files in them are its own, and exports replaced whole."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from crome.outputs import MARKER, STAGING, Export, IncompleteExport, Layout, OutputError, claim, folder_lock, lock_holder, read_export, recover
from crome.train.data import data_files

LAYOUT = Layout(kind="test", what="`crome test`", lock="test.lock", own=("store.db", "data"),
                exports=r"data/part-\d\.txt|summary\.json", legacy=lambda p: (p / "store.db").is_file())


def export(folder: Path, files: dict[str, str], keep: tuple[str, ...] = ()) -> dict:
    ex = Export(claim(folder, LAYOUT, "crome test"), "crome test")
    for rel, text in files.items():
        ex.path(rel).write_text(text)
    for rel in keep:
        ex.keep(rel)
    return ex.commit()


def test_a_new_or_empty_folder_is_claimed_and_marked(tmp_path):
    owned = claim(tmp_path / "new" / "deep", LAYOUT, "crome test")
    marker = json.loads((tmp_path / "new" / "deep" / MARKER).read_text())
    assert marker["kind"] == "test" and marker["written_by"] == "crome test" and marker["files"] == ["data", "store.db"]
    assert owned.owns("store.db") and not owned.owns("notes.txt")
    (tmp_path / "empty").mkdir()
    claim(tmp_path / "empty", LAYOUT, "crome test")
    assert (tmp_path / "empty" / MARKER).is_file()
    claim(tmp_path / "later", LAYOUT, "crome test", create=False)  # the check alone writes nothing
    assert not (tmp_path / "later").exists()


def test_a_folder_that_is_not_ours_is_refused_naming_the_file(tmp_path):
    (tmp_path / "user" / "sub").mkdir(parents=True)
    (tmp_path / "user" / "sub" / "mine.txt").write_text("x")
    with pytest.raises(OutputError, match=r"--out .*user holds files crome did not write \(.*user/sub/mine\.txt\)"):
        claim(tmp_path / "user", LAYOUT, "crome test")
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="is a file; expected a folder"):
        claim(tmp_path / "file", LAYOUT, "crome test", option="--to")
    other = Layout(kind="other", what="`crome other`", lock="o.lock")
    claim(tmp_path / "theirs", other, "crome other")
    with pytest.raises(OutputError, match=r"was written by `crome other`, not by `crome test`"):
        claim(tmp_path / "theirs", LAYOUT, "crome test")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / MARKER).write_text("{not json")
    with pytest.raises(OutputError, match="is not a crome marker"):
        claim(tmp_path / "bad", LAYOUT, "crome test")
    assert sorted(p.name for p in (tmp_path / "user").rglob("*")) == ["mine.txt", "sub"]


def test_an_older_crome_folder_is_adopted_and_its_other_files_stay_foreign(tmp_path):
    old = tmp_path / "old"
    (old / "data").mkdir(parents=True)
    for rel in ("store.db", "summary.json", "data/part-0.txt", "data/mine.txt", "notes.txt"):
        (old / rel).write_text(rel)
    owned = claim(old, LAYOUT, "crome test")
    assert owned.files == {"store.db", "data", "summary.json", "data/part-0.txt"}
    export(old, {"data/part-1.txt": "new", "summary.json": "new"})  # part-0 was crome's: replaced by part-1
    assert sorted(p.relative_to(old).as_posix() for p in old.rglob("*") if p.is_file() and not p.name.startswith(".")) == [
        "data/mine.txt", "data/part-1.txt", "notes.txt", "store.db", "summary.json"]
    assert (old / "notes.txt").read_text() == "notes.txt" and (old / "data/mine.txt").read_text() == "data/mine.txt"


def test_an_export_replaces_only_crome_files_and_never_writes_over_a_foreign_one(tmp_path):
    folder = tmp_path / "f"
    first = export(folder, {"data/part-0.txt": "a", "data/part-1.txt": "b", "summary.json": "s1"})
    (folder / "data" / "mine.txt").write_text("mine")
    second = export(folder, {"data/part-0.txt": "a2", "summary.json": "s2"})
    assert not (folder / "data/part-1.txt").exists() and (folder / "data/mine.txt").read_text() == "mine"
    assert first["id"] != second["id"] and set(second["files"]) == {"data/part-0.txt", "summary.json"}
    assert export(folder, {"summary.json": "s2"}, keep=("data/part-0.txt",))["id"] == second["id"]  # same files, same id
    (folder / "data" / "part-1.txt").write_text("the user's, under a name crome uses")
    with pytest.raises(OutputError, match=r"part-1\.txt exists and crome did not write it"):
        export(folder, {"data/part-1.txt": "b"})
    assert (folder / "data/part-1.txt").read_text() == "the user's, under a name crome uses"
    assert read_export(folder).id == second["id"]  # the refused export changed nothing


def test_an_interrupted_commit_is_refused_by_readers_and_finished_by_the_next_writer(tmp_path):
    folder = tmp_path / "f"
    export(folder, {"data/part-0.txt": "old", "summary.json": "old"})
    owned = claim(folder, LAYOUT, "crome test")
    ex = Export(owned, "crome test")
    ex.path("data/part-0.txt").write_text("new")
    ex.path("summary.json").write_text("new")
    real_replace, calls = os.replace, []

    def dies_after_first_move(src, dst):
        calls.append(dst)
        if len(calls) == 3:  # the plan saved (1), one file moved (2): die before the second
            raise KeyboardInterrupt
        real_replace(src, dst)

    os.replace = dies_after_first_move
    try:
        with pytest.raises(KeyboardInterrupt):
            ex.commit()
    finally:
        os.replace = real_replace
    assert (folder / "data/part-0.txt").read_text() == "new" and (folder / "summary.json").read_text() == "old"  # half
    with pytest.raises(IncompleteExport, match="interrupted while its files were being replaced; re-run the `crome test`"):
        read_export(folder)
    assert recover(claim(folder, LAYOUT, "crome test")) and not recover(claim(folder, LAYOUT, "crome test"))
    assert (folder / "summary.json").read_text() == "new" and not (folder / STAGING).exists()
    assert read_export(folder, hashes=True).files.keys() == {"data/part-0.txt", "summary.json"}


def test_readers_check_the_files_of_the_export(tmp_path):
    folder = tmp_path / "f"
    folder.mkdir()
    assert read_export(folder) is None  # not a folder crome marked
    claim(folder, LAYOUT, "crome test")
    with pytest.raises(IncompleteExport, match="holds no finished export yet"):
        read_export(folder)
    export(folder, {"data/part-0.txt": "abc", "summary.json": "s"})
    (folder / "data/part-0.txt").write_text("abd")  # same size, other bytes
    assert read_export(folder) is not None
    with pytest.raises(IncompleteExport, match=r"part-0\.txt changed after `crome test` wrote it"):
        read_export(folder, hashes=True)
    (folder / "summary.json").unlink()
    with pytest.raises(IncompleteExport, match=r"summary\.json is missing"):
        read_export(folder)


def test_the_writer_lock_names_its_holder_and_probing_it_changes_nothing(tmp_path):
    assert lock_holder(tmp_path, "w.lock") is None and not (tmp_path / "w.lock").exists()
    with folder_lock(tmp_path, "w.lock", what="run"):
        assert lock_holder(tmp_path, "w.lock") == os.getpid()  # flock locks belong to open files: this process too
        with pytest.raises(OutputError, match=rf"run {tmp_path} is in use by another process \(pid {os.getpid()}\)"):
            with folder_lock(tmp_path, "w.lock", what="run"):
                pass
    assert lock_holder(tmp_path, "w.lock") is None


def test_train_reads_only_the_files_of_the_export(tmp_path):
    from helpers_runs import make_run

    run = make_run(tmp_path)
    (run.path / "data" / "extra-00000-of-00001.parquet").write_bytes(b"not crome's")
    assert data_files(run.path) == {"train": [str(run.path / "data" / "train-00000-of-00001.parquet")]}
