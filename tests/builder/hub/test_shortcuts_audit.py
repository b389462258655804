"""Shortcut discovery in `crome audit`: planted cues come first, a clean source flags nothing, counts match a hand count."""

from __future__ import annotations

import json
import math
import random

import pyarrow.parquet as pq
import pytest
from paths import SHARED_DATA
from typer.testing import CliRunner

from crome.builder.hub.audit import audit
from crome.builder.stages.shortcut_find import holm_tarone, sign_test
from crome.cli import app
from crome.schemas import DatasetRow, Provenance, to_table
from crome.schemas.messages import user

PROV = Provenance(oracle="source", builder_version="0", seed=0)
WORDS = "river stone cloud quick brown lazy dog model data tree light sound water fire earth plan garden window".split()


def answer(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 30))).capitalize() + "."


def row(i: int, chosen: str, rejected: str, kind: str = "original", attribute: str | None = None) -> DatasetRow:
    aug = {"original": "original", "causal": "degrade"}[kind]
    return DatasetRow.make(prompt=[user(f"question number {i}?")], chosen=chosen, rejected=rejected, preference=1.0, kind=kind,
                           augmentation=aug, attribute=attribute, source_id=f"s{i}", provenance=PROV)


def dataset(tmp_path, n=300, *, opening=None, closing=None, seed=0):
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        c, r = answer(rng), answer(rng)
        if opening and rng.random() < 0.85:
            c = f"{opening} {c}"
        if closing and rng.random() < 0.85:
            r = f"{r}\n\n{closing}"
        rows.append(row(i, c, r))
    path = tmp_path / "rows.parquet"
    pq.write_table(to_table(rows, DatasetRow), path)
    return path


def audit_json(path) -> dict:
    result = CliRunner().invoke(app, ["audit", str(path), "--json", "--samples", "0"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_a_planted_opening_on_chosen_answers_comes_first(tmp_path):
    report = audit_json(dataset(tmp_path, opening="Sure thing, happy to help!"))
    first = report["shortcuts"][0]
    assert (first["feature"], first["text"], first["kind"]) == ("opening", "sure thing, happy to help!", "original")
    assert first["significant"] and first["strength"] > 0.75 and first["rejected_only"] == 0
    assert first["p_value"] < 1e-50 and len(first["examples"]) == 3
    # Every example holds the phrase on its chosen answer.
    table = pq.read_table(tmp_path / "rows.parquet").to_pylist()
    by_id = {r["id"]: r for r in table}
    assert all(by_id[i]["chosen"][0]["content"].startswith("Sure thing, happy to help!") for i in first["examples"])
    # Its shorter openings hold the same pairs: one row says it, not six.
    assert not [s for s in report["shortcuts"] if s["feature"] == "opening" and s["text"] in ("sure", "sure thing,")]


def test_a_planted_closing_on_rejected_answers_comes_first_with_negative_strength(tmp_path):
    report = audit_json(dataset(tmp_path, closing="Hope this helps!"))
    first = report["shortcuts"][0]
    assert (first["feature"], first["text"]) == ("closing", "hope this helps!")
    assert first["significant"] and first["strength"] < -0.75 and first["chosen_only"] == 0


UF = SHARED_DATA / "ultrafeedback-binarized-sample" / "train_clean.jsonl"


def real_dataset(tmp_path, *, opening=None, closing=None, n=600) -> dict:
    """Real UltraFeedback pairs with a phrase planted on 85% of chosen answers (opening) or rejected ones (closing)."""
    rng = random.Random(0)
    rows = []
    for i, line in enumerate(UF.read_text(encoding="utf-8").splitlines()[:n]):
        s = json.loads(line)
        c, r = s["chosen"], s["rejected"]
        if opening and rng.random() < 0.85:
            c = f"{opening} {c}"
        if closing and rng.random() < 0.85:
            r = f"{r}\n\n{closing}"
        rows.append(row(i, c, r))
    pq.write_table(to_table(rows, DatasetRow), tmp_path / "real.parquet")
    return audit_json(tmp_path / "real.parquet")


def test_on_real_answers_the_whole_planted_opening_ranks_first_and_its_shorter_openings_fold_into_it(tmp_path):
    # "Sure," opens about 7% of these answers on either side already: its pairs are nearly, not exactly, the phrase's.
    report = real_dataset(tmp_path, opening="Sure, I'd be happy to help!")
    first = report["shortcuts"][0]
    assert (first["feature"], first["text"]) == ("opening", "sure, i'd be happy to help!") and first["significant"]
    assert {"opening: sure,", "opening: sure, i'd", "phrase: sure, i'd be happy to help!"} <= set(first["folded"])
    listed = {(s["feature"], s["text"]) for s in report["shortcuts"]}
    assert ("opening", "sure,") not in listed and ("opening", "sure, i'd be happy") not in listed


def test_on_real_answers_a_planted_closing_on_rejected_answers_ranks_first(tmp_path):
    report = real_dataset(tmp_path, closing="Hope this helps!")
    first = report["shortcuts"][0]
    assert (first["feature"], first["text"]) == ("closing", "hope this helps!") and first["strength"] < -0.7
    assert "closing: helps!" in first["folded"]


def test_a_clean_source_flags_nothing(tmp_path):
    report = audit_json(dataset(tmp_path, n=400, seed=3))
    assert report["shortcuts_found"] == 0
    assert report["shortcuts"] and not any(s["significant"] for s in report["shortcuts"])


def test_counts_strength_and_p_value_match_a_hand_computation(tmp_path):
    # 20 pairs: "well done" opens the chosen answer only in 12, the rejected only in 3, both in 2, neither in 3.
    rng = random.Random(1)
    layout = ["c"] * 12 + ["r"] * 3 + ["b"] * 2 + ["n"] * 3
    rows = []
    for i, where in enumerate(layout):
        c, r = answer(rng), answer(rng)
        c = f"Well done. {c}" if where in "cb" else c
        r = f"Well done. {r}" if where in "rb" else r
        rows.append(row(i, c, r))
    pq.write_table(to_table(rows, DatasetRow), tmp_path / "hand.parquet")
    report = audit(tmp_path / "hand.parquet", samples=0)
    cue = next(s for s in report.shortcuts["shortcuts"] if s["feature"] == "opening" and s["text"] == "well done.")
    assert (cue["pairs"], cue["chosen_only"], cue["rejected_only"], cue["both"], cue["neither"]) == (20, 12, 3, 2, 3)
    assert cue["strength"] == pytest.approx((12 - 3) / 20)
    # Two-sided sign test on the 15 discordant pairs, by hand: 2 * P(X <= 3), X ~ Binomial(15, 1/2).
    assert cue["p_value"] == pytest.approx(2 * sum(math.comb(15, k) for k in range(4)) / 2**15)


def test_holm_over_the_testable_candidates():
    p = [0.001, 0.02, 0.04, 0.5]
    # All four can reach significance: Holm multiplies by 4, 3, 2, 1 and keeps the order monotone.
    assert holm_tarone(p, [1e-9] * 4) == pytest.approx([0.004, 0.06, 0.08, 0.5])
    # A candidate that cannot reach alpha / K however its pairs split is not counted (Tarone).
    adjusted = holm_tarone([0.001, 0.5], [1e-9, 0.25])
    assert adjusted[0] == pytest.approx(0.001) and adjusted[1] is None
    assert sign_test(5, 10) == 1.0 and sign_test(0, 6) == pytest.approx(2 / 64)


def test_per_attribute_rows_show_the_length_split_of_a_degrade(tmp_path):
    rng = random.Random(2)
    rows = []
    for i in range(60):
        full = answer(rng) + " " + answer(rng)
        rows.append(row(i, full, full.split(".")[0] + ".", kind="causal", attribute="completeness"))  # the degrade cut it short
        rows.append(row(1000 + i, answer(rng), answer(rng)))
    pq.write_table(to_table(rows, DatasetRow), tmp_path / "attr.parquet")
    report = audit(tmp_path / "attr.parquet", samples=0)
    completeness = next(r for r in report.shortcuts["shortcuts_by_attribute"] if r["attribute"] == "completeness")
    assert completeness["augmentation"] == "degrade" and completeness["chars_strength"] == pytest.approx(1.0)
    assert completeness["mean_chars_diff"] > 0


def test_the_viewer_diff_marks_exactly_the_changed_words():
    from crome.builder.hub.shortcuts_html import counterfactual_html, word_diff

    left, right = word_diff("Paris is the capital of France.", "Lyon is the capital of France & more.")
    assert left == "<del>Paris</del> is the capital of <del>France.</del>"
    assert right == "<ins>Lyon</ins> is the capital of <ins>France &amp; more.</ins>"
    html = counterfactual_html({"id": "sha256:x", "augmentation": "degrade", "attribute": "factuality", "prompt": "Capital?",
                                "chosen": "Paris is the capital of France.", "rejected": "Lyon is the capital of France.",
                                "quality": '{"edit_ratio": 0.2, "verification": "pass: worse"}'}, {"factuality": "Names the right city."})
    assert "<del>Paris</del>" in html and "<ins>Lyon</ins>" in html and "Names the right city." in html
    assert "edit ratio 0.200" in html and "verifier: pass: worse" in html


def test_the_viewer_shows_each_rubric_definition_from_the_run_store_and_says_when_the_data_has_none(tmp_path):
    from crome.builder.hub.audit_html import render_html
    from crome.builder.oracles.rules.rubrics import rubrics_for
    from crome.builder.run.config import BuildConfig
    from crome.builder.run.pipeline import build

    run, pub = tmp_path / "run", tmp_path / "pub"
    build(BuildConfig(source=str(UF), out=str(run), limit=40, causal=["degrade"]))
    report = audit(run, samples=0)
    causal = [s for s in report.shortcuts["counterfactuals"] if s["kind"] == "causal"]
    assert causal and report.shortcuts["definitions"]["found"] == len(causal) == report.shortcuts["definitions"]["pairs"]
    for s in causal:  # the definition the rules oracle wrote for this pair's prompt and rubric
        expected = {r.name: r.definition for r in rubrics_for(s["prompt"], s["conversation"]).rubrics}
        assert s["definition"] == expected[s["attribute"]]
    html = render_html(report)
    assert f"{causal[0]['attribute']}: {causal[0]['definition']}" in html.replace("&#x27;", "'")

    assert CliRunner().invoke(app, ["publish", str(run), "--to", str(pub)]).exit_code == 0
    published = audit(pub, samples=0)
    assert published.shortcuts["definitions"]["source"] is None and published.shortcuts["definitions"]["found"] == 0
    assert all(s["definition"] is None for s in published.shortcuts["counterfactuals"] if s["kind"] == "causal")
    assert "Rubric definitions are not in this data" in render_html(published) and "rubric definition not in this data" in render_html(published)
