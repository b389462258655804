"""Shortcut neutralisation: ties that differ only in the found phrase, through the contract and the accounting."""

from __future__ import annotations

import json
import random

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from crome.builder.run.config import BuildConfig
from crome.builder.run.pipeline import build
from crome.builder.stages.shortcut import Phrase, denied, edit, parse_phrase_file
from crome.cli import app
from crome.schemas import DatasetRow

CUE = "Great question, I'm glad you asked!"
WORDS = "river stone cloud quick brown lazy dog model data tree light sound water fire earth plan garden window".split()


def sentence(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 12))).capitalize() + "."


def source(tmp_path, n=80, opening=CUE, seed=0):
    rng = random.Random(seed)
    path = tmp_path / "source.jsonl"
    with path.open("w") as f:
        for i in range(n):
            c = " ".join(sentence(rng) for _ in range(4))
            r = " ".join(sentence(rng) for _ in range(3))
            if rng.random() < 0.85:
                c = f"{opening}\n\n{c}"
            f.write(json.dumps({"prompt": f"Tell me about topic {i} and {rng.choice(WORDS)}.", "chosen": c, "rejected": r}) + "\n")
    return path


def rows_of(run) -> list[DatasetRow]:
    return [DatasetRow.model_validate(r) for f in sorted((run / "data").glob("*.parquet")) for r in pq.read_table(f).to_pylist()]


def test_a_build_neutralises_the_planted_opening(tmp_path):
    out = tmp_path / "run"
    result = build(BuildConfig(source=str(source(tmp_path)), out=str(out), causal=["degrade"], neutralize_shortcuts=True))
    rows = rows_of(out)  # every row passes the data contract (model_validate above)
    ties = [r for r in rows if r.augmentation == "shortcut_neutral"]
    assert ties and all(r.kind == "neutral" and r.preference == 0.5 for r in ties)
    assert {r.attribute for r in ties} == {CUE.lower()}
    for r in ties:
        a, b = r.chosen[0].content, r.rejected[0].content
        longer, shorter = (a, b) if len(a) > len(b) else (b, a)
        assert longer.startswith(CUE) and longer[len(CUE):].strip() == shorter.strip()  # they differ only in the phrase
        ev = r.provenance.shortcut
        assert ev.feature == "opening" and ev.origin == "found" and ev.p_adjusted < 0.05 and ev.strength > 0.5
    assert {r.provenance.shortcut.edit for r in ties} == {"removed", "added"}
    summary = result.summary
    assert summary["accounting"]["balanced"]
    assert summary["counts"]["rows_by_augmentation"]["shortcut_neutral"] == len(ties) == summary["shortcuts"]["ties"]
    (phrase,) = [p for p in summary["shortcuts"]["phrases"] if p["status"] == "used"]
    assert phrase["text"] == CUE.lower() and phrase["ties"] == len(ties)
    assert json.loads((out / "summary.json").read_text())["shortcuts"] == summary["shortcuts"]
    # Seeded: the same build again gives the same ties.
    again = build(BuildConfig(source=str(source(tmp_path)), out=str(tmp_path / "run2"), causal=["degrade"], neutralize_shortcuts=True))
    assert sorted(r.id for r in rows_of(tmp_path / "run2") if r.augmentation == "shortcut_neutral") == sorted(r.id for r in ties)
    assert again.summary["shortcuts"]["ties"] == len(ties)


def test_a_refusal_is_denied_and_a_veto_holds(tmp_path):
    refusal = source(tmp_path, opening="I'm sorry, I can't help with that.")
    out = tmp_path / "run"
    result = build(BuildConfig(source=str(refusal), out=str(out), causal=[], neutral_ratio=0, neutralize_shortcuts=True))
    assert not [r for r in rows_of(out) if r.augmentation == "shortcut_neutral"]
    statuses = {p["status"] for p in result.summary["shortcuts"]["phrases"]}
    assert "denied" in statuses and "used" not in statuses
    rejections = pq.read_table(out / "rejections.parquet").to_pylist()
    assert any(r["stage"] == "shortcut" and r["reason"] == "phrase_denied" for r in rejections)
    assert result.summary["accounting"]["balanced"]
    vetoed = build(BuildConfig(source=str(source(tmp_path)), out=str(tmp_path / "veto"), causal=[], neutral_ratio=0,
                               neutralize_shortcuts=True, shortcut_phrases=parse_phrase_file(f"veto: {CUE}")))
    assert vetoed.summary["shortcuts"]["ties"] == 0
    assert {p["status"] for p in vetoed.summary["shortcuts"]["phrases"]} >= {"vetoed"}


def test_the_cap_and_the_content_guard():
    p = Phrase("opening", "sure!", "given", surface="Sure!")
    assert edit("Sure! Paris is the capital of France.", p) == ("Sure! Paris is the capital of France.", "Paris is the capital of France.", "removed")
    assert edit("Paris is the capital of France.", p)[0] == "Sure! Paris is the capital of France."
    assert "fewer than" in edit("Sure! Paris.", p)  # never all of the answer
    closing = Phrase("closing", "hope this helps!", "given", surface="Hope this helps!", joiner="\n\n")
    long = "Paris is the capital of France, and it has been since the tenth century."
    assert edit(long, closing)[0] == long + "\n\nHope this helps!"
    assert "over 25%" in edit("Paris is the capital. Hope this helps!", closing)
    assert denied("i can't help with that.") and denied("please consult a doctor.") and not denied("great question!")


def test_phrase_file_errors_name_the_line():
    assert parse_phrase_file("# mine\nopening: Sure thing!\nveto: hope this helps") == [
        {"action": "opening", "text": "sure thing!"}, {"action": "veto", "text": "hope this helps"}]
    with pytest.raises(ValueError, match="line 2"):
        parse_phrase_file("opening: fine\nremove this")


def test_crome_neutralize_adds_ties_to_a_built_run(tmp_path):
    run = tmp_path / "run"
    build(BuildConfig(source=str(source(tmp_path)), out=str(run), causal=["degrade"]))
    given = tmp_path / "phrases.txt"
    given.write_text("closing: Thanks for reading!\n")
    out = tmp_path / "run2"
    result = CliRunner().invoke(app, ["neutralize", str(run), "--out", str(out), "--shortcut-phrases", str(given), "--max-per-phrase", "10", "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    used = {p["text"]: p for p in record["phrases"] if p["status"] == "used"}
    assert set(used) == {CUE.lower(), "thanks for reading!"} and used["thanks for reading!"]["origin"] == "given"
    before, after = rows_of(run), rows_of(out)
    ties = [r for r in after if r.augmentation == "shortcut_neutral"]
    assert len(after) == len(before) + len(ties) and 0 < len(ties) <= 20
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"]["rows_by_augmentation"]["shortcut_neutral"] == len(ties)
    # --out must not be a folder crome does not own.
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    bad = CliRunner().invoke(app, ["neutralize", str(run), "--out", str(foreign)])
    assert bad.exit_code == 2 and (foreign / "notes.txt").read_text() == "mine"
