"""crome publish: folder layout loadable by `datasets`, the card, splits, idempotence, and the Hub boundary."""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from helpers_runs import make_run, rewrite_export
from typer.testing import CliRunner

from crome import __version__
from crome.builder.hub import publish as publish_mod
from crome.builder.hub.publish import PublishError, is_local_target, publish
from crome.cli import app
from crome.schemas import DatasetRow, hf_features, to_table


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


def _files(folder: Path) -> dict[str, str]:
    """The published files (crome's bookkeeping, .crome.json and .crome.lock, aside)."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.name.startswith(".crome")}


def _front_matter(readme: str) -> dict:
    match = re.match(r"^---\n(.*?)\n---\n", readme, re.S)
    assert match, "README.md has no YAML front matter"
    return yaml.safe_load(match.group(1))


def _md_table(readme: str, header_start: str) -> list[list[str]]:
    """Rows of the first markdown table whose header line starts with `header_start`."""
    lines = readme.splitlines()
    start = next(i for i, l in enumerate(lines) if l.startswith(header_start))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip().strip("`") for c in line.strip("|").split("|")])
    return rows


def test_folder_loads_with_datasets_with_exact_features_and_whole_source_pairs_per_split(tmp_path):
    import datasets

    run = make_run(tmp_path, n_sources=12)
    out = tmp_path / "pub"
    release, result = publish(run.path, str(out), test_fraction=0.3)

    assert set(_files(out)) == {"README.md", "data/train-00000-of-00001.parquet", "data/test-00000-of-00001.parquet"}
    assert sorted(result.added) == sorted(_files(out)) and not result.updated and not result.deleted

    ds = datasets.load_dataset(str(out))
    assert set(ds) == {"train", "test"}
    for split in ds.values():
        assert split.features == hf_features(DatasetRow)
    # Every run row is published once, unchanged, and a source pair never straddles the splits.
    published = [DatasetRow.model_validate(r) for name in ("train", "test") for r in ds[name]]
    assert sorted(r.id for r in published) == sorted(r.id for r in run.rows)
    assert {r.id: r for r in published} == {r.id: r for r in run.rows}
    train_sources = {r["source_id"] for r in ds["train"]}
    test_sources = {r["source_id"] for r in ds["test"]}
    assert train_sources and test_sources and not train_sources & test_sources
    assert len(test_sources) == 4  # 30% of 12 source pairs, in whole groups of two (a tie links partners)
    assert not texts(ds["train"]) & texts(ds["test"])
    assert release.splits == {"train": ds["train"].num_rows, "test": ds["test"].num_rows}


def test_split_is_seeded_and_independent_of_row_order(tmp_path):
    run = make_run(tmp_path, n_sources=24)
    publish(run.path, str(tmp_path / "a"), test_fraction=0.25, repo_id="acme/x")

    # Same rows written in reverse order: byte-identical release.
    rewrite_export(run.path, {"data/train-00000-of-00001.parquet":
                              lambda p: pq.write_table(to_table(list(reversed(run.rows)), DatasetRow), p)})
    publish(run.path, str(tmp_path / "b"), test_fraction=0.25, repo_id="acme/x")
    assert _files(tmp_path / "a") == _files(tmp_path / "b")

    publish(run.path, str(tmp_path / "c"), test_fraction=0.25, seed=7)
    test_a = {r["source_id"] for r in pq.read_table(tmp_path / "a/data/test-00000-of-00001.parquet").to_pylist()}
    test_c = {r["source_id"] for r in pq.read_table(tmp_path / "c/data/test-00000-of-00001.parquet").to_pylist()}
    assert test_a != test_c
    # The default seed is the build seed recorded in summary.json.
    publish(run.path, str(tmp_path / "d"), test_fraction=0.25, seed=run.summary["seed"], repo_id="acme/x")
    assert _files(tmp_path / "a") == _files(tmp_path / "d")


def texts(rows) -> set[str]:
    """Every prompt (as its turns) and answer text of some rows, computed here from the published columns."""
    out = set()
    for r in rows:
        out.add(r["prompt"][0]["content"] if len(r["prompt"]) == 1 else json.dumps([[m["role"], m["content"]] for m in r["prompt"]]))
        out.update(m["content"] for m in r["chosen"] + r["rejected"])
    return out


def test_tiny_run_still_gets_a_test_split_and_full_holdout_is_refused(tmp_path):
    run = make_run(tmp_path, n_sources=4)
    release, _ = publish(run.path, str(tmp_path / "out"), test_fraction=0.01)
    assert release.splits["test"] > 0 and release.splits["train"] > 0
    assert any("held out no source pair" in w for w in release.warnings)
    with pytest.raises(PublishError, match="test-fraction"):
        publish(run.path, str(tmp_path / "out2"), test_fraction=1.0)


def test_card_yaml_parses_and_its_counts_match_the_data(tmp_path):
    run = make_run(tmp_path, n_sources=12, license="MIT", hub_id="HuggingFaceH4/ultrafeedback_binarized")
    out = tmp_path / "pub"
    publish(run.path, str(out), test_fraction=0.3, repo_id="acme/crome-uf")
    readme = (out / "README.md").read_text(encoding="utf-8")
    meta = _front_matter(readme)
    train = pq.read_table(out / "data/train-00000-of-00001.parquet").to_pylist()
    test = pq.read_table(out / "data/test-00000-of-00001.parquet").to_pylist()

    assert meta["license"] == "mit"
    assert {"crome", "reward-modeling", "counterfactual"} <= set(meta["tags"])
    assert meta["task_categories"] and meta["size_categories"] == ["n<1K"]
    assert meta["source_datasets"] == ["HuggingFaceH4/ultrafeedback_binarized"]
    assert meta["configs"] == [{"config_name": "default", "data_files": [
        {"split": "train", "path": "data/train-*"}, {"split": "test", "path": "data/test-*"}]}]
    splits = {s["name"]: s["num_examples"] for s in meta["dataset_info"]["splits"]}
    assert splits == {"train": len(train), "test": len(test)}
    assert meta["dataset_info"]["download_size"] == sum(p.stat().st_size for p in (out / "data").iterdir())

    # Rows per split and kind, as the body's first table says.
    kinds = _md_table(readme, "| split | rows |")
    header = ["split", "rows", "original", "causal", "neutral"]
    for name, rows in (("train", train), ("test", test)):
        by_kind = Counter(r["kind"] for r in rows)
        line = next(l for l in kinds if l[0] == name)
        assert dict(zip(header, line)) == {"split": name, "rows": str(len(rows)),
                                           **{k: str(by_kind[k]) for k in header[2:]}}
    # Augmentation totals, attribute counts and rejection reasons.
    aug = {(l[0], l[1]): int(l[-1]) for l in _md_table(readme, "| kind | augmentation |")}
    assert aug == Counter((r["kind"], r["augmentation"]) for r in train + test)
    attrs = {l[0]: int(l[-1]) for l in _md_table(readme, "| attribute |")}
    assert attrs == Counter(r["attribute"] for r in train + test if r["attribute"])
    rejections = {(l[0], l[1]): int(l[2]) for l in _md_table(readme, "| stage | reason | count |")}
    assert rejections == Counter((r.stage, r.reason) for r in run.rejections)

    for name, t in run.summary["templates"].items():
        assert f"| `{name}` | {t['version']} | `{t['sha256']}` |" in readme
    for needle in ("`rules`", "option `verify` | `false`", "option `neutral_ratio` | `1.0`", "12,345", "6,789", "0.0123",
                   'load_dataset("acme/crome-uf")', "crome train acme/crome-uf", "RewardTrainer",
                   'r["preference"] == 1.0', "hf://datasets/acme/crome-uf/data/*.parquet", "arXiv:2506.16507",
                   "@inproceedings{srivastava2026crome", "| `quality.edit_ratio` | float64 |", "seed 0"):
        assert needle in readme, needle


def test_licence_from_source_else_option_else_other(tmp_path):
    src = make_run(tmp_path, name="src", license="Apache-2.0")
    release, _ = publish(src.path, str(tmp_path / "a"), license="cc-by-4.0")
    assert release.license == "apache-2.0" and any("kept" in w for w in release.warnings)
    bare = make_run(tmp_path, name="bare")
    assert publish(bare.path, str(tmp_path / "b"), license="CC-BY-4.0")[0].license == "cc-by-4.0"
    release, _ = publish(bare.path, str(tmp_path / "c"))
    assert release.license == "other" and any("licence is unknown" in w for w in release.warnings)
    assert _front_matter((tmp_path / "c/README.md").read_text())["license"] == "other"


def test_published_files_hold_no_local_path_and_no_secret(tmp_path, monkeypatch):
    secret = "sk-planted-4f9a1c2e7b3d5a60"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    monkeypatch.setenv("HF_TOKEN", "hf_plantedTokenValue123456")
    run = make_run(tmp_path, options={
        "api_key": secret,
        "baseline_model": str(tmp_path / "models" / "baseline-rm"),
        "base_url": f"http://user:{secret}@127.0.0.1:8000/v1",
        "note": f"built with key {secret} on {tmp_path}",
        "hf_token": "hf_plantedTokenValue123456",
    })
    run.summary["source"]["name"] = str(tmp_path / "sources" / "train_clean.jsonl")
    rewrite_export(run.path, {"summary.json": lambda p: p.write_text(json.dumps(run.summary), encoding="utf-8")})
    out = tmp_path / "pub"
    publish(run.path, str(out))

    for path in out.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for needle in (str(tmp_path), str(tmp_path.resolve()), secret, "hf_plantedTokenValue123456"):
                assert needle.encode() not in data, f"{needle} leaked into {path.name}"
    readme = (out / "README.md").read_text()
    assert '`"baseline-rm"`' in readme and "`train_clean.jsonl`" in readme  # names kept, locations dropped
    assert "api_key" not in readme and "hf_token" not in readme


def test_republish_unchanged_changes_nothing_and_stale_shards_go(tmp_path):
    run = make_run(tmp_path, n_sources=12)
    out = tmp_path / "pub"
    _, first = publish(run.path, str(out), max_shard_size="10KB")
    shards = sorted(p for p in _files(out) if p.startswith("data/"))
    assert len(shards) > 1 and all(publish_mod.SHARD_RE.match(p) for p in shards)
    before = _files(out)
    (out / "notes.txt").write_text("kept: not ours")

    _, again = publish(run.path, str(out), max_shard_size="10KB")
    assert not again.changed and sorted(again.unchanged) == sorted(before)

    _, changed = publish(run.path, str(out))
    assert sorted(changed.deleted) == shards
    assert changed.added == ["data/train-00000-of-00001.parquet"] and changed.updated == ["README.md"]
    assert set(_files(out)) == {"README.md", "data/train-00000-of-00001.parquet", "notes.txt"}


def test_broken_run_rows_are_refused_with_the_row_named(tmp_path):
    run = make_run(tmp_path)
    table = to_table(run.rows, DatasetRow)
    prefs = table.column("preference").to_pylist()
    prefs[3] = 0.7
    table = table.set_column(table.schema.get_field_index("preference"), table.schema.field("preference"),
                             pa.array(prefs, pa.float64()))
    rewrite_export(run.path, {"data/train-00000-of-00001.parquet": lambda p: pq.write_table(table, p)})
    with pytest.raises(PublishError, match=r"row 3 .*preference must be"):
        publish(run.path, str(tmp_path / "out"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(PublishError, match="not a run folder"):
        publish(empty, str(tmp_path / "x"))
    with pytest.raises(PublishError, match="run dir itself"):
        publish(run.path, str(run.path))


@pytest.mark.parametrize("to, local", [
    ("./folder", True), ("/abs/folder", True), ("~/x", True), ("folder", False), ("a/b/c", False),
    ("acme/crome-uf", False), ("hf://datasets/acme/crome-uf", False),
])
def test_target_kind(to, local):
    assert is_local_target(to) is local


def test_an_existing_path_is_a_folder_even_without_dot_slash(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "acme" / "x").mkdir(parents=True)
    assert is_local_target("acme/x") and not is_local_target("acme/y")


# ---------------------------------------------------------------- the Hub boundary


class FakeHub:
    """Stands in for the Hub behind HfApi's methods: files per branch, commits recorded as sent."""

    def __init__(self):
        self.branches: dict[str, dict[str, bytes]] = {"main": {".gitattributes": b"*.parquet filter=lfs\n"}}
        self.commits: list[dict] = []
        self.calls: list[tuple] = []

    def sha(self, revision: str) -> str:
        return hashlib.sha1(repr(sorted(self.branches[revision].items())).encode()).hexdigest()

    def install(self, monkeypatch):
        from huggingface_hub import HfApi
        from huggingface_hub.hf_api import RepoFile

        hub = self

        def create_repo(api, repo_id, *, repo_type=None, private=None, exist_ok=False, **kw):
            hub.calls.append(("create_repo", repo_id, repo_type, private, exist_ok))

        def create_branch(api, repo_id, *, branch, repo_type=None, exist_ok=False, **kw):
            hub.calls.append(("create_branch", repo_id, branch, repo_type, exist_ok))
            hub.branches.setdefault(branch, dict(hub.branches["main"]))

        def repo_info(api, repo_id, *, revision=None, repo_type=None, **kw):
            hub.calls.append(("repo_info", repo_id, revision, repo_type))
            return type("Info", (), {"sha": hub.sha(revision or "main")})()

        def list_repo_tree(api, repo_id, path_in_repo=None, *, recursive=False, revision=None, repo_type=None, **kw):
            hub.calls.append(("list_repo_tree", repo_id, revision, repo_type, recursive))
            branch = next(b for b in hub.branches if hub.sha(b) == revision)
            for path, data in sorted(hub.branches[branch].items()):
                info = {"path": path, "size": len(data), "oid": hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()}
                if path.endswith(".parquet"):
                    info["lfs"] = {"size": len(data), "oid": hashlib.sha256(data).hexdigest(), "pointerSize": 130}
                yield RepoFile(**info)

        def hf_hub_download(api, repo_id, filename, *, repo_type=None, revision=None, local_dir=None, **kw):
            hub.calls.append(("hf_hub_download", repo_id, filename, revision))
            branch = next(b for b in hub.branches if hub.sha(b) == revision)
            path = Path(local_dir) / filename
            path.write_bytes(hub.branches[branch][filename])
            return str(path)

        def create_commit(api, repo_id, operations, *, commit_message, repo_type=None, revision=None,
                          parent_commit=None, **kw):
            from huggingface_hub import CommitOperationAdd, CommitOperationDelete

            branch = revision or "main"
            assert parent_commit == hub.sha(branch), "commit must be made on top of the commit that was compared"
            ops = []
            for op in operations:
                if isinstance(op, CommitOperationAdd):
                    data = Path(op.path_or_fileobj).read_bytes()
                    hub.branches[branch][op.path_in_repo] = data
                    ops.append(("add", op.path_in_repo, hashlib.sha256(data).hexdigest()))
                else:
                    assert isinstance(op, CommitOperationDelete)
                    del hub.branches[branch][op.path_in_repo]
                    ops.append(("delete", op.path_in_repo))
            hub.commits.append({"repo_id": repo_id, "ops": ops, "message": commit_message,
                                "repo_type": repo_type, "revision": revision})
            return type("CommitInfo", (), {"commit_url": f"https://huggingface.co/datasets/{repo_id}/commit/{len(hub.commits)}"})()

        for name, fn in (("create_repo", create_repo), ("create_branch", create_branch), ("repo_info", repo_info),
                         ("list_repo_tree", list_repo_tree), ("hf_hub_download", hf_hub_download), ("create_commit", create_commit)):
            monkeypatch.setattr(HfApi, name, fn)
        return self


def test_push_sends_exactly_the_folder_files_in_one_commit_and_nothing_when_unchanged(tmp_path, monkeypatch):
    hub = FakeHub().install(monkeypatch)
    run = make_run(tmp_path, n_sources=12)
    folder = tmp_path / "pub"
    publish(run.path, str(folder), test_fraction=0.3, repo_id="acme/crome-uf")

    release, result = publish(run.path, "acme/crome-uf", private=True, test_fraction=0.3)
    assert ("create_repo", "acme/crome-uf", "dataset", True, True) in hub.calls
    assert len(hub.commits) == 1
    commit = hub.commits[0]
    n_train, n_test = release.splits["train"], release.splits["test"]
    assert commit["message"] == f"crome {__version__}: publish {n_train + n_test} rows (train {n_train}, test {n_test})"
    assert commit["repo_type"] == "dataset" and commit["revision"] is None
    # What is sent is byte for byte what `--to ./folder` writes.
    assert sorted(commit["ops"]) == sorted(("add", path, sha) for path, sha in _files(folder).items())
    assert result.commit_url.endswith("/commit/1") and sorted(result.added) == sorted(_files(folder))

    _, again = publish(run.path, "acme/crome-uf", test_fraction=0.3)
    assert len(hub.commits) == 1 and not again.changed and again.commit_url is None


def test_push_of_a_changed_run_adds_changed_files_and_deletes_stale_shards_in_one_commit(tmp_path, monkeypatch):
    hub = FakeHub().install(monkeypatch)
    run = make_run(tmp_path, n_sources=12)
    publish(run.path, "hf://datasets/acme/crome-uf", max_shard_size="10KB")
    old_shards = sorted(p for p in hub.branches["main"] if p.startswith("data/"))
    assert len(old_shards) > 1

    grown = make_run(tmp_path, n_sources=13)  # the run grows by one source pair, rewritten in place
    publish(run.path, "acme/crome-uf")
    assert len(hub.commits) == 2
    ops = hub.commits[1]["ops"]
    assert sorted(op[1] for op in ops if op[0] == "delete") == old_shards
    assert sorted(op[1] for op in ops if op[0] == "add") == ["README.md", "data/train-00000-of-00001.parquet"]
    n = len(grown.rows)
    assert hub.commits[1]["message"] == f"crome {__version__}: publish {n} rows (train {n})"
    assert sorted(hub.branches["main"]) == [".gitattributes", "README.md", "data/train-00000-of-00001.parquet"]

    # Only the card changes when only --license does: one add, no deletes.
    publish(run.path, "acme/crome-uf", license="cc-by-4.0")
    assert [op[:2] for op in hub.commits[2]["ops"]] == [("add", "README.md")]


def test_push_to_a_branch_creates_it_and_commits_there(tmp_path, monkeypatch):
    hub = FakeHub().install(monkeypatch)
    run = make_run(tmp_path)
    publish(run.path, "acme/crome-uf", revision="v2")
    assert ("create_branch", "acme/crome-uf", "v2", "dataset", True) in hub.calls
    assert hub.commits[0]["revision"] == "v2" and "README.md" in hub.branches["v2"]
    assert "README.md" not in hub.branches["main"]


def test_cli_publish_to_hub_never_prints_the_token(tmp_path, monkeypatch):
    FakeHub().install(monkeypatch)
    token = "hf_secretTokenNeverPrinted42"
    monkeypatch.setenv("HF_TOKEN", token)
    run = make_run(tmp_path)
    runner = CliRunner()
    first = runner.invoke(app, ["publish", str(run.path), "--to", "acme/crome-uf", "--private"])
    assert first.exit_code == 0, first.output
    assert "added" in first.output and "commit: https://huggingface.co/datasets/acme/crome-uf/commit/1" in first.output
    second = runner.invoke(app, ["publish", str(run.path), "--to", "acme/crome-uf"])
    assert second.exit_code == 0 and "unchanged" in second.output and "no commit" in second.output
    assert token not in first.output + second.output
    bad = runner.invoke(app, ["publish", str(run.path), "--to", "acme/bad name"])
    assert bad.exit_code == 2 and "ORG/NAME" in bad.output


def test_cli_publish_to_folder(tmp_path):
    run = make_run(tmp_path)
    result = CliRunner().invoke(app, ["publish", str(run.path), "--to", str(tmp_path / "pub"), "--license", "mit"])
    assert result.exit_code == 0, result.output
    assert "21 rows (21 train), licence mit" in result.output
    assert (tmp_path / "pub/data/train-00000-of-00001.parquet").is_file()


def test_hub_repo_is_private_by_default_and_keeps_a_readme_and_splits_crome_did_not_write(tmp_path, monkeypatch):
    hub = FakeHub().install(monkeypatch)
    hub.branches["main"]["README.md"] = b"# Our dataset\n\nWritten by hand on the Hub.\n"
    hub.branches["main"]["data/validation-00000-of-00001.parquet"] = b"theirs"
    run = make_run(tmp_path, n_sources=12)
    said = []
    release, result = publish(run.path, "acme/crome-uf", announce=said.append)
    assert ("create_repo", "acme/crome-uf", "dataset", True, True) in hub.calls  # private unless asked otherwise
    assert said == ["publishing to the Hub dataset repo acme/crome-uf, private if it is created "
                    "(--public for public; a local folder is ./acme/crome-uf)"]
    assert result.kept == ["README.md"] and [op[1] for op in hub.commits[0]["ops"]] == ["data/train-00000-of-00001.parquet"]
    assert hub.branches["main"]["README.md"].startswith(b"# Our dataset")
    assert hub.branches["main"]["data/validation-00000-of-00001.parquet"] == b"theirs"

    _, forced = publish(run.path, "acme/crome-uf", overwrite_card=True, private=False)
    assert ("create_repo", "acme/crome-uf", "dataset", False, True) in hub.calls
    assert forced.updated == ["README.md"] and hub.branches["main"]["README.md"].startswith(b"---\nlicense:")
    # From now on the card is crome's: a changed run updates it without asking.
    _, again = publish(run.path, "acme/crome-uf", license="mit")
    assert again.updated == ["README.md"] and not again.kept
    assert hub.branches["main"]["data/validation-00000-of-00001.parquet"] == b"theirs"
