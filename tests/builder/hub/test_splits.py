"""Leak-free splits: a published test split shares no prompt and no answer text with train, IQN ties included."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from helpers_runs import make_run, rewrite_export
from paths import SHARED_DATA
from typer.testing import CliRunner

from crome.builder.hub.splits import groups
from crome.builder.run.config import BuildConfig
from crome.builder.run.pipeline import build
from crome.cli import app
from crome.schemas import DatasetRow, Message, Provenance, to_table

UF = SHARED_DATA / "ultrafeedback-binarized-sample" / "train_clean.jsonl"


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


def split_rows(folder: Path, split: str) -> list[dict]:
    return [r for f in sorted((folder / "data").glob(f"{split}-*.parquet")) for r in pq.read_table(f).to_pylist()]


def every_text(rows: list[dict]) -> set[str]:
    """Each prompt turn, each whole conversation and each answer: 'anywhere in train' taken literally."""
    out = set()
    for r in rows:
        out.update(m["content"] for m in r["prompt"] + r["chosen"] + r["rejected"])
        out.add(json.dumps(r["prompt"], sort_keys=True))
    return out


@pytest.mark.skipif(not UF.exists(), reason="../shared/data not present")
def test_published_test_split_shares_no_prompt_or_answer_with_train_and_audit_says_so(tmp_path):
    run, pub = tmp_path / "run", tmp_path / "pub"
    s = build(BuildConfig(source=str(UF), out=str(run), limit=150)).summary
    assert s["counts"]["rows_by_kind"]["neutral"] > 100  # IQN ties: what used to leak
    runner = CliRunner()
    result = runner.invoke(app, ["publish", str(run), "--to", str(pub), "--test-fraction", "0.3"])
    assert result.exit_code == 0, result.output

    train, test = split_rows(pub, "train"), split_rows(pub, "test")
    assert {r["kind"] for r in test} == {"original", "causal", "neutral"}
    test_prompts = {m["content"] for r in test for m in r["prompt"] if m["role"] == "user"}
    test_answers = {m["content"] for r in test for m in r["chosen"] + r["rejected"]}
    seen = every_text(train)
    assert not test_prompts & seen and not test_answers & seen
    test_sources = {r["source_id"] for r in test}
    assert 0.25 <= len(test_sources) / s["counts"]["source_pairs"] <= 0.35

    card = (pub / "README.md").read_text(encoding="utf-8")
    assert "whole connected groups held out" in card and "0 test prompts and 0 test answers occur in train" in card
    assert f"holds {len(test_sources):,} of the {s['counts']['source_pairs']:,} source pairs" in card

    audit = runner.invoke(app, ["audit", str(pub), "--json"])
    assert audit.exit_code == 0, audit.output
    overlap = json.loads(audit.stdout)["split_overlap"]
    assert {(r["split"], r["kind"]) for r in overlap} >= {("test", "neutral"), ("train", "neutral"), ("test", "all")}
    assert all(r["prompt_in_other_split"] == 0 and r["answer_in_other_split"] == 0 for r in overlap)
    assert sum(r["rows"] for r in overlap if r["kind"] == "all") == len(train) + len(test)


def row(prompt: str | list[Message], chosen: str, rejected: str, source: str, *, kind="original", preference=1.0) -> DatasetRow:
    return DatasetRow.make(
        prompt=[Message(role="user", content=prompt)] if isinstance(prompt, str) else prompt, chosen=chosen, rejected=rejected, preference=preference, kind=kind,
        augmentation="original" if kind == "original" else "irrelevant_query", source_id=source,
        provenance=Provenance(oracle="source", builder_version="test", seed=0),
    )


def test_rows_sharing_any_text_are_one_group_whatever_their_source_pair():
    rows = [
        row("What is the capital of France?", "Paris.", "Lyon.", "s1"),
        row("Name the capital city of Italy.", "Rome.", "Milan.", "s2"),
        row("Who wrote Hamlet?", "Shakespeare.", "Paris.", "s3"),  # repeats an answer of s1
        row("What is the capital of France?", "Rome.", "Lyon.", "s2", kind="neutral", preference=0.5),  # a tie of s2 under s1's prompt
        row("How do magnets work?", "Fields.", "Magic.", "s4"),
        row("Why is the sea salty?", "Minerals.", "Fish.", "s5"),
        row("How do magnets work?", "Fields.", "Magic.", "s6"),  # a source that repeats s4 whole
    ]
    found = sorted(sorted(g) for g in groups(rows))
    assert found == [[0, 1, 2, 3], [4, 6], [5]]


def test_a_run_whose_ties_link_every_pair_cannot_be_split_and_says_why(tmp_path):
    run = make_run(tmp_path, n_sources=6)
    rows = [DatasetRow.model_validate(r) for r in pq.read_table(run.path / "data" / "train-00000-of-00001.parquet").to_pylist()]
    # As builds before draw groups did: each pair's tie under the next pair's prompt, all the way round.
    originals = [r for r in rows if r.kind == "original"]
    chained = [r for r in rows if r.kind != "neutral"] + [
        row(originals[(i + 1) % len(originals)].prompt, o.chosen[0].content, o.rejected[0].content, o.source_id,
            kind="neutral", preference=0.5)
        for i, o in enumerate(originals)
    ]
    rewrite_export(run.path, {"data/train-00000-of-00001.parquet": lambda p: pq.write_table(to_table(chained, DatasetRow), p)})
    result = CliRunner().invoke(app, ["publish", str(run.path), "--to", str(tmp_path / "pub"), "--test-fraction", "0.3"])
    assert result.exit_code != 0 and "one connected group" in result.output and "--neutral-group-size" in result.output
    assert not (tmp_path / "pub").exists()


def test_audit_reports_prompts_and_answers_a_split_shares_with_another(tmp_path):
    folder = tmp_path / "leaky"
    (folder / "data").mkdir(parents=True)
    train = [row("What is the capital of France?", "Paris.", "Lyon.", "s1"), row("Who wrote Hamlet?", "Shakespeare.", "Marlowe.", "s2")]
    test = [
        row("What is the capital of France?", "Rome.", "Milan.", "s3", kind="neutral", preference=0.5),  # train's prompt
        row("Why is the sea salty?", "Minerals.", "Shakespeare.", "s4"),  # a train answer
        row("How do magnets work?", "Fields.", "Magic.", "s5"),
    ]
    pq.write_table(to_table(train, DatasetRow), folder / "data" / "train-00000-of-00001.parquet")
    pq.write_table(to_table(test, DatasetRow), folder / "data" / "test-00000-of-00001.parquet")
    result = CliRunner().invoke(app, ["audit", str(folder), "--json"])
    assert result.exit_code == 0, result.output
    overlap = {(r["split"], r["kind"]): r for r in json.loads(result.stdout)["split_overlap"]}
    assert (overlap["test", "all"]["prompt_in_other_split"], overlap["test", "all"]["answer_in_other_split"]) == (1, 1)
    assert overlap["test", "neutral"]["prompt_in_other_split"] == 1 and overlap["test", "original"]["answer_in_other_split"] == 1
    assert (overlap["train", "all"]["prompt_in_other_split"], overlap["train", "all"]["answer_in_other_split"]) == (1, 1)
