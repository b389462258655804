"""One writer per run: a second writer or a reader is refused with the holder's pid; readers share."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from store_helpers import run_child

from crome.builder.store import RunInUseError, RunStore, RunStoreError


def test_second_writer_process_gets_run_in_use_error(tmp_path):
    with RunStore.open(tmp_path) as store:
        store.set_meta("owner", "parent")
        child = run_child(
            f"""
            from crome.builder.store import RunStore, RunInUseError
            for read_only in (False, True):
                try:
                    RunStore.open({str(tmp_path)!r}, read_only=read_only)
                except RunInUseError as e:
                    print("refused:", e)
            """
        )
        assert child.returncode == 0, child.stderr
        lines = child.stdout.strip().splitlines()
        assert len(lines) == 2
        for line in lines:
            assert f"refused: run {tmp_path} is in use by another process (pid {os.getpid()})" in line
        # The same process opening the run a second time is refused too, not silently shared.
        with pytest.raises(RunInUseError, match="already open in this process"):
            RunStore.open(tmp_path)
        assert store.get_meta("owner") == "parent"  # the holder is unaffected


def test_writer_in_child_blocks_us_until_it_exits_then_readers_share(tmp_path):
    code = f"""
        import sys
        from crome.builder.store import RunStore
        with RunStore.open({str(tmp_path)!r}) as store:
            store.set_meta("writer", "child")
            print("ready", flush=True)
            sys.stdin.read()
        """
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        with pytest.raises(RunInUseError, match=rf"in use by another process \(pid {child.pid}\)"):
            RunStore.open(tmp_path)
        with pytest.raises(RunInUseError, match=rf"pid {child.pid}"):
            RunStore.open(tmp_path, read_only=True)
    finally:
        child.stdin.close()
        assert child.wait(timeout=60) == 0
    # No writer: read-only opens work, several at once (here and in another process).
    with RunStore.open(tmp_path, read_only=True) as reader:
        assert reader.get_meta("writer") == "child"
        other = run_child(
            f"""
            from crome.builder.store import RunStore
            with RunStore.open({str(tmp_path)!r}, read_only=True) as s:
                print(s.get_meta("writer"))
            """
        )
        assert other.returncode == 0 and other.stdout.strip() == "child", other.stderr
        with pytest.raises(RunStoreError, match="open read-only"):
            reader.set_meta("x", 1)


def test_read_only_open_of_a_missing_run_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no run store at .*crome.duckdb"):
        RunStore.open(tmp_path / "nope", read_only=True)
    assert not (tmp_path / "nope").exists()
    store = RunStore.open(tmp_path)
    store.close()
    store.close()  # closing twice is harmless
    with pytest.raises(RunStoreError, match="closed"):
        store.get_meta("x")
