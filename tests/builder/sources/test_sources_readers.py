"""Readers: every file format, unreadable sources, local dataset folders and Hub ids."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sources_helpers import convo, only_quarantine, write_jsonl

from crome.builder.sources import SourceError, load_source, readers


# ------------------------------------------------------------------------------------------
# File formats


def test_csv_with_quoted_newlines_and_an_empty_cell(tmp_path):
    path = tmp_path / "pairs.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["prompt", "chosen", "rejected", "score"])
        w.writerow(["Line one\nline two, with comma", 'He said "hi"', "no", "0.5"])
        w.writerow(["P", "", "b", "1"])
    result = load_source(path)
    assert result.shape == "plain"
    pair = result.pairs[0]
    assert (pair.prompt_text, pair.chosen.content, pair.metadata) == ("Line one\nline two, with comma", 'He said "hi"', {"score": "0.5"})
    q = only_quarantine(result)
    assert (q.row, q.reason, q.detail) == (1, "empty_field", "chosen is empty")


def test_parquet_streams_by_batches_with_nested_messages(tmp_path, monkeypatch):
    monkeypatch.setattr(readers, "PARQUET_BATCH_ROWS", 4)
    n = 10
    table = pa.Table.from_pylist([
        {"prompt": convo(("user", f"q{i}")), "chosen": convo(("assistant", f"good {i}")),
         "rejected": convo(("assistant", f"bad {i}" if i != 5 else f"good {i}")), "score": float(i)}
        for i in range(n)])
    path = tmp_path / "train.parquet"
    pq.write_table(table, path, row_group_size=3)
    result = load_source(path)
    assert (result.shape, result.total_rows, len(result.pairs)) == ("conversational", n, n - 1)
    assert [p.row for p in result.pairs] == [i for i in range(n) if i != 5]
    assert result.pairs[-1].metadata == {"score": 9.0}
    assert (only_quarantine(result).row, only_quarantine(result).reason) == (5, "identical_answers")
    assert load_source(path, limit=4).total_rows == 4


def test_gzipped_jsonl_and_json_list_and_json_lines_named_json(tmp_path):
    rows = [{"prompt": "P", "chosen": "a", "rejected": "b"}, {"prompt": "Q", "chosen": "c", "rejected": "d"}]
    gz = tmp_path / "s.jsonl.gz"
    with gzip.open(gz, "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    listed = tmp_path / "list.json"
    listed.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    lines = write_jsonl(tmp_path / "lines.json", rows)
    expected = load_source(write_jsonl(tmp_path / "s.jsonl", rows)).pairs
    for path in (gz, listed, lines):
        result = load_source(path)
        assert (result.total_rows, result.pairs) == (2, expected), path


# ------------------------------------------------------------------------------------------
# Unreadable sources: one-line SourceError saying what was expected and found


def test_unknown_extension(tmp_path):
    (tmp_path / "foo.txt").write_text("prompt,chosen\n")
    with pytest.raises(SourceError) as err:
        load_source(tmp_path / "foo.txt")
    assert str(err.value) == "cannot read foo.txt: expected .jsonl, .jsonl.gz, .json, .parquet or .csv"


@pytest.mark.parametrize(("name", "content", "pattern"), [
    ("missing.jsonl", None, r"^cannot read missing\.jsonl: no such file or directory \(expected a local .* file or a Hub dataset id\)$"),
    ("bad.parquet", b"not parquet at all", r"^cannot read .*/bad\.parquet: not a readable Parquet file"),
    ("bad.jsonl.gz", b"plain text, not gzip", r"^cannot read .*/bad\.jsonl\.gz: Not a gzipped file"),
    ("obj.json", b'{"prompt": "P",\n "chosen": "a"}', r"^cannot read .*/obj\.json: expected a JSON list of row objects \(or JSON Lines\), found an object$"),
    ("broken.json", b'[{"prompt": "P",', r"^cannot read .*/broken\.json: not valid JSON \(line 1: "),
    ("empty.jsonl", b"\n", r"^cannot read .*/empty\.jsonl: it holds no rows$"),
    ("text.jsonl", b"hello\nworld\n", r"^cannot read .*/text\.jsonl: line 1 is not valid JSON"),
    ("binary.csv", b"\xff\xfe\x00\x01garbage", r"^cannot read .*/binary\.csv: 'utf-8' codec can't decode"),
    ("kto.jsonl", b'{"messages": [], "label": true}\n',
     r"^cannot detect the shape of .*/kto\.jsonl: columns are: messages, label; expected prompt/chosen/rejected"),
])
def test_unreadable_sources(tmp_path, name, content, pattern):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(SourceError, match=pattern) as err:
        load_source(path)
    assert "\n" not in str(err.value)


# ------------------------------------------------------------------------------------------
# Hub datasets: through datasets.load_dataset (a local folder for real, the Hub call patched at its boundary)


def parquet_folder(root: Path) -> Path:
    (root / "data").mkdir(parents=True)
    for split, n in (("train", 3), ("test", 2)):
        rows = [{"prompt": f"{split} {i}", "chosen": "good", "rejected": "bad"} for i in range(n)]
        pq.write_table(pa.Table.from_pylist(rows), root / "data" / f"{split}-00000-of-00001.parquet")
    return root


def test_local_dataset_folder_loads_through_datasets(tmp_path, monkeypatch):
    folder = parquet_folder(tmp_path / "my-prefs")
    test = load_source(folder, split="test")
    assert (test.name, test.hub_id, test.shape, test.total_rows) == ("my-prefs", None, "plain", 2)
    assert [p.prompt_text for p in test.pairs] == ["test 0", "test 1"]
    assert load_source(folder).total_rows == 3  # no split given: train


class FakeLoad:
    """Stands in for `datasets.load_dataset` (the Hub cannot be reached here); records its calls."""

    def __init__(self, result):
        self.result = result
        self.calls = []

    def __call__(self, path, **kwargs):
        self.calls.append((path, kwargs))
        if isinstance(self.result, Exception):
            raise self.result
        return self.result


def test_hub_id_goes_to_load_dataset_with_split_config_revision(tmp_path, monkeypatch):
    import datasets

    rows = [{"prompt": f"q{i}", "chosen": "yes", "rejected": "no"} for i in range(5)]
    fake = FakeLoad(rows)
    monkeypatch.setattr(datasets, "load_dataset", fake)
    result = load_source("org/prefs", split="train_prefs", config="default", revision="v1.0", limit=3)
    assert fake.calls == [("org/prefs", {"streaming": True, "name": "default", "split": "train_prefs", "revision": "v1.0"})]
    assert (result.name, result.hub_id, result.shape, result.total_rows, len(result.pairs)) == ("org/prefs", "org/prefs", "plain", 3, 3)


def test_hub_splits_and_errors(monkeypatch):
    import datasets

    monkeypatch.setattr(datasets, "load_dataset", FakeLoad({"train_prefs": [], "test_prefs": []}))
    with pytest.raises(SourceError, match=r"^org/prefs has splits: train_prefs, test_prefs; choose one with split \(--split\)$"):
        load_source("org/prefs")
    monkeypatch.setattr(datasets, "load_dataset", FakeLoad({"only": [{"prompt": "P", "chosen": "a", "rejected": "b"}]}))
    assert load_source("org/prefs").total_rows == 1
    monkeypatch.setattr(datasets, "load_dataset", FakeLoad(ConnectionError("Couldn't reach 'org/prefs' on the Hub (OfflineModeIsEnabled)\nmore")))
    with pytest.raises(SourceError) as err:
        load_source("org/prefs")
    assert str(err.value) == "cannot load org/prefs with datasets.load_dataset: Couldn't reach 'org/prefs' on the Hub (OfflineModeIsEnabled)"


def test_hub_license_comes_from_a_cached_card_only(tmp_path, monkeypatch):
    import datasets
    from huggingface_hub import constants

    commit = "a" * 40
    repo = tmp_path / "hub" / "datasets--org--prefs"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "snapshots" / commit / "README.md").write_text("---\nlicense: mit\n---\n# prefs\n")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(datasets, "load_dataset", FakeLoad([{"prompt": "P", "chosen": "a", "rejected": "b"}]))
    assert load_source("org/prefs").license == "mit"
    assert load_source("org/other").license is None  # not cached: no network lookup, no licence
