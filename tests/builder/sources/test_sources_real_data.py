"""The real public files in ../shared/data, loaded end to end."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from sources_helpers import DATA, needs_data, roles

from crome.builder.sources import SourceError, load_source


@needs_data
def test_real_hh_rlhf_harmless_transcripts():
    result = load_source(DATA / "hh-rlhf-harmless-test" / "test.jsonl.gz")
    assert (result.name, result.shape, result.total_rows, len(result.pairs)) == (
        "hh-rlhf-harmless-test/test.jsonl.gz", "hh_transcript", 2312, 2308)
    # four rows whose chosen transcript ends with an empty "Assistant:" turn
    assert [(q.row, q.reason, q.detail) for q in result.quarantined] == [
        (row, "empty_field", "chosen: the final Assistant turn is empty") for row in (86, 516, 925, 1103)]
    by_row = {p.row: p for p in result.pairs}
    assert roles(by_row[0]) == ["user", "assistant", "user", "assistant", "user"]
    assert by_row[0].prompt[0].content == "what are some pranks with a pen i can do?"
    # row 667 repeats the Assistant speaker inside the shared prompt: kept as two messages
    assert roles(by_row[667])[3:5] == ["assistant", "assistant"]
    # row 1254's chosen answer runs over two "Assistant:" segments: kept verbatim, as TRL does
    assert roles(by_row[1254]) == ["user", "assistant", "user"]
    assert by_row[1254].chosen.content.endswith("\n\nAssistant:  I think they call them that because")
    assert by_row[1254].rejected.content.startswith("A drag king is the opposite")


@needs_data
def test_real_rmgallery_helpful():
    result = load_source(DATA / "hh-rlhf-helpful-rmgallery" / "anthropic_helpful_0521.jsonl")
    assert (result.shape, result.total_rows, len(result.pairs)) == ("rmgallery", 1137, 1124)
    assert [q.row for q in result.quarantined] == [45, 87, 184, 185, 259, 326, 668, 771, 1054, 1061, 1070, 1072, 1103]
    assert result.quarantine_reasons == {"identical_answers": 13}
    assert {p.subset for p in result.pairs} == {"helpfulness"}
    assert Counter(p.metadata["group"] for p in result.pairs) == {"train": 901, "test": 223}
    # row 665 ends with two user turns in a row; it still ends with a user turn, so it is usable
    assert roles(next(p for p in result.pairs if p.row == 665)) == ["user", "assistant", "user", "user"]
    assert Counter(len(p.prompt) for p in result.pairs)[3] > 500


@needs_data
def test_real_ultrafeedback_sample():
    train = load_source(DATA / "ultrafeedback-binarized-sample" / "train_clean.jsonl")
    assert (train.shape, train.total_rows, len(train.pairs)) == ("plain", 1000, 994)
    # the data README names 4 chosen == rejected rows; two more have an empty answer
    assert [(q.row, q.reason, q.detail) for q in train.quarantined] == [
        (306, "identical_answers", "chosen and rejected are the same text"),
        (478, "empty_field", "rejected is empty"),
        (655, "identical_answers", "chosen and rejected are the same text"),
        (833, "empty_field", "chosen is empty"),
        (910, "identical_answers", "chosen and rejected are the same text"),
        (997, "identical_answers", "chosen and rejected are the same text"),
    ]
    assert set(train.pairs[0].metadata) == {"source_index", "score_chosen", "score_rejected"}
    assert all(p.metadata["score_chosen"] >= p.metadata["score_rejected"] for p in train.pairs)
    evals = load_source(DATA / "ultrafeedback-binarized-sample" / "eval_clean.jsonl")
    assert (evals.total_rows, len(evals.pairs), [(q.row, q.reason) for q in evals.quarantined]) == (200, 199, [(43, "identical_answers")])


@needs_data
def test_real_llamafactory_sharegpt_dpo():
    result = load_source(DATA / "llamafactory-dpo-demo" / "dpo_en_demo.json")
    assert (result.shape, result.total_rows, len(result.pairs), result.quarantined) == ("sharegpt", 300, 300, [])
    assert sum(p.prompt[0].role == "system" for p in result.pairs) == 80
    assert Counter(len(p.prompt) for p in result.pairs)[1] == 114
    # five rows are exact duplicates of earlier ones: kept (dedup is the pipeline's job)
    by_row = {p.row: p for p in result.pairs}
    assert all(by_row[a].source_id == by_row[b].source_id for a, b in [(13, 157), (28, 248), (84, 230), (111, 186), (117, 275)])
    assert len({p.source_id for p in result.pairs}) == 295


@needs_data
def test_real_llamafactory_kto_is_not_pairwise():
    with pytest.raises(SourceError, match=r"^cannot detect the shape of llamafactory-dpo-demo/kto_en_demo\.json: columns are: messages, label;"):
        load_source(DATA / "llamafactory-dpo-demo" / "kto_en_demo.json")


LLMBAR = {
    "LLMBar_Natural.json": (100, {}),
    "LLMBar_Adversarial_Neighbor.json": (134, {}),
    "LLMBar_Adversarial_GPTInst.json": (92, {}),
    "LLMBar_Adversarial_GPTOut.json": (47, {}),
    "LLMBar_Adversarial_Manual.json": (46, {}),
    "Processed_MT-Bench.json": (200, {}),
    "Processed_LLMEval_2.json": (200, {57: "identical_answers", 169: "empty_field"}),
    "Processed_FairEval.json": (66, {}),
}


@needs_data
@pytest.mark.parametrize("name", list(LLMBAR))
def test_real_llmbar(name):
    rows, bad = LLMBAR[name]
    path = DATA / "llmbar" / name
    result = load_source(path)
    assert (result.shape, result.total_rows, len(result.pairs)) == ("llmbar", rows, rows - len(bad))
    assert {q.row: q.reason for q in result.quarantined} == bad
    raw = json.loads(path.read_text(encoding="utf-8"))
    for pair in result.pairs:
        src = raw[pair.row]
        better, worse = ("output_1", "output_2") if src["label"] == 1 else ("output_2", "output_1")
        assert (pair.prompt_text, pair.chosen.content, pair.rejected.content) == (src["input"], src[better], src[worse])


@needs_data
def test_real_llmbar_natural_plus_adversarial_is_419_pairs():
    assert sum(len(load_source(DATA / "llmbar" / n).pairs) for n in list(LLMBAR)[:5]) == 419


RMBENCH = {
    "chat_filtered.json": (129, {"alpacaeval": 129}),
    "code_filtered.json": (228, {"bigcode/humanevalpack": 228}),
    "safety-refuse_filtered.json": (284, {"xstest-should-refuse": 138, "refusals-dangerous": 84, "refusals-offensive": 62}),
    "safety-response_filtered.json": (157, {"xstest-should-respond": 157}),
}


@needs_data
@pytest.mark.parametrize("name", list(RMBENCH))
def test_real_rmbench(name):
    prompts, subsets = RMBENCH[name]
    path = DATA / "rm-bench" / name
    result = load_source(path)
    assert (result.shape, result.total_rows, len(result.pairs), result.quarantined) == ("rmbench", prompts, 9 * prompts, [])
    assert Counter(p.subset for p in result.pairs) == {k: 9 * v for k, v in subsets.items()}
    raw = json.loads(path.read_text(encoding="utf-8"))
    combos = Counter()
    for pair in result.pairs:
        i, j = pair.metadata["chosen_style"], pair.metadata["rejected_style"]
        combos[(pair.row, i, j)] += 1
        assert (pair.chosen.content, pair.rejected.content) == (raw[pair.row]["chosen"][i], raw[pair.row]["rejected"][j])
    assert set(combos.values()) == {1} and len(combos) == 9 * prompts


@needs_data
def test_real_limit_reads_only_that_many_rows():
    result = load_source(DATA / "rm-bench" / "chat_filtered.json", limit=5)
    assert (result.total_rows, len(result.pairs)) == (5, 45)
