"""Source loading: every shape, every bad input, and the real public files in ../shared/data."""

from __future__ import annotations

import csv
import gzip
import json
import os
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from crome.builder import sources
from crome.builder.sources import LoadResult, SourceError, iter_source, load_source, parse_mapping
from crome.schemas import Quarantined, SourcePair, pair_id
from crome.schemas.messages import Message
from paths import SHARED_DATA

# Never reach the Hub from tests; set before `datasets` / `huggingface_hub` read their config on import.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

DATA = SHARED_DATA
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"shared data folder {DATA} not present")


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def only_quarantine(result: LoadResult) -> Quarantined:
    assert len(result.quarantined) == 1, result.quarantined
    return result.quarantined[0]


def roles(pair: SourcePair) -> list[str]:
    return [m.role for m in pair.prompt]


def convo(*turns: tuple[str, str]) -> list[dict]:
    return [{"role": r, "content": c} for r, c in turns]


# ------------------------------------------------------------------------------------------
# Shapes


def test_plain_jsonl_keeps_scalar_metadata_and_subset(tmp_path):
    path = write_jsonl(tmp_path / "plain.jsonl", [
        {"prompt": "Capital of France?", "chosen": "Paris.", "rejected": "Lyon.", "subset": "geo",
         "source_index": 7, "metadata": {"score_chosen": 9.0, "score_rejected": 3.5}, "tags": ["x"]},
        {"prompt": "2+2?", "chosen": "4", "rejected": "5"},
    ])
    result = load_source(path)
    assert (result.shape, result.total_rows, len(result.pairs), result.quarantined) == ("plain", 2, 2, [])
    first = result.pairs[0]
    assert first.prompt == [Message(role="user", content="Capital of France?")]
    assert (first.chosen.content, first.rejected.content, first.preference) == ("Paris.", "Lyon.", 1.0)
    assert first.subset == "geo"
    # the nested metadata object is flattened; lists are not scalar extras
    assert first.metadata == {"source_index": 7, "score_chosen": 9.0, "score_rejected": 3.5}
    assert first.source_id == pair_id(first.prompt, "Paris.", "Lyon.", 1.0)
    assert [p.row for p in result.pairs] == [0, 1]
    assert result.name == f"{tmp_path.name}/plain.jsonl"
    assert (result.hub_id, result.license) == (None, None)


def test_conversational_prompt_and_answers_as_message_lists(tmp_path):
    path = write_jsonl(tmp_path / "conv.jsonl", [{
        "prompt": convo(("system", "Be brief."), ("user", "Hi"), ("assistant", "Hello!"), ("user", "Sky colour?")),
        "chosen": convo(("assistant", "Blue.")),
        "rejected": convo(("assistant", "Green.")),
    }])
    result = load_source(path)
    assert result.shape == "conversational"
    pair = result.pairs[0]
    assert roles(pair) == ["system", "user", "assistant", "user"]
    assert (pair.chosen.content, pair.rejected.content) == ("Blue.", "Green.")


def test_answers_given_as_whole_conversations_after_a_string_prompt(tmp_path):
    # HuggingFaceH4/ultrafeedback_binarized style: prompt string, chosen/rejected = [user, assistant]
    path = write_jsonl(tmp_path / "h4.jsonl", [{
        "prompt": "Name a prime.", "prompt_id": "abc",
        "chosen": convo(("user", "Name a prime."), ("assistant", "7")),
        "rejected": convo(("user", "Name a prime."), ("assistant", "8")),
        "messages": convo(("user", "Name a prime."), ("assistant", "7")),
    }])
    pair = load_source(path).pairs[0]
    assert pair.prompt == [Message(role="user", content="Name a prime.")]
    assert (pair.chosen.content, pair.rejected.content) == ("7", "8")
    assert pair.metadata == {"prompt_id": "abc"}


def test_implicit_prompt_uses_the_shared_prefix(tmp_path):
    shared = [("user", "Hi"), ("assistant", "Hello"), ("user", "Joke?")]
    path = write_jsonl(tmp_path / "implicit.jsonl", [
        {"chosen": convo(*shared, ("assistant", "Knock knock.")), "rejected": convo(*shared, ("assistant", "No."))},
        # diverging before the last turn: not a pair of answers to one prompt
        {"chosen": convo(("user", "A"), ("assistant", "x"), ("user", "B"), ("assistant", "y")),
         "rejected": convo(("user", "A"), ("assistant", "z"), ("user", "B"), ("assistant", "y"))},
    ])
    result = load_source(path)
    assert result.shape == "implicit_prompt"
    pair = result.pairs[0]
    assert [(m.role, m.content) for m in pair.prompt] == shared
    assert (pair.chosen.content, pair.rejected.content) == ("Knock knock.", "No.")
    q = only_quarantine(result)
    assert (q.row, q.reason) == (1, "bad_answer")
    assert q.detail == "chosen holds [assistant, user, assistant] after the shared prompt, expected one assistant message"


def test_hh_transcript_multi_turn_prompt_is_kept_as_messages(tmp_path):
    shared = "\n\nHuman: Hi there\n\nAssistant: Hello, how can I help?\n\nHuman: Tell me a fact."
    path = write_jsonl(tmp_path / "hh.jsonl", [
        {"chosen": shared + "\n\nAssistant: Honey never spoils.", "rejected": shared + "\n\nAssistant: No."},
        {"chosen": shared + "\n\nAssistant: Same", "rejected": shared + "\n\nAssistant:  Same  "},
        {"chosen": "preamble" + shared + "\n\nAssistant: a", "rejected": shared + "\n\nAssistant: b"},
        {"chosen": "no markers at all", "rejected": shared + "\n\nAssistant: b"},
        # they differ at a Human turn: no shared prompt to answer
        {"chosen": "\n\nHuman: A\n\nAssistant: x\n\nHuman: B\n\nAssistant: y",
         "rejected": "\n\nHuman: A\n\nAssistant: x\n\nHuman: C\n\nAssistant: y"},
        {"chosen": shared + "\n\nAssistant: ", "rejected": shared + "\n\nAssistant: b"},
    ])
    result = load_source(path)
    assert result.shape == "hh_transcript"
    pair = result.pairs[0]
    assert [(m.role, m.content) for m in pair.prompt] == [
        ("user", "Hi there"), ("assistant", "Hello, how can I help?"), ("user", "Tell me a fact.")]
    assert (pair.chosen.content, pair.rejected.content) == ("Honey never spoils.", "No.")
    assert [(q.row, q.reason, q.detail) for q in result.quarantined] == [
        (1, "identical_answers", "chosen and rejected are the same transcript"),
        (2, "bad_transcript", "chosen has text before its first Human/Assistant turn"),
        (3, "bad_transcript", "chosen has no '\\n\\nHuman:' / '\\n\\nAssistant:' turns"),
        (4, "bad_transcript", "chosen continues with a Human turn after the shared prompt"),
        (5, "empty_field", "chosen: the final Assistant turn is empty"),
    ]


def test_plain_prompt_written_as_a_transcript_becomes_messages(tmp_path):
    path = write_jsonl(tmp_path / "rmstatic.jsonl", [{
        "prompt": "\n\nHuman: Hi\n\nAssistant: Hey\n\nHuman: Best pizza?\n\nAssistant:",
        "chosen": " Margherita.", "rejected": " Pineapple."}])
    pair = load_source(path).pairs[0]
    assert [(m.role, m.content) for m in pair.prompt] == [("user", "Hi"), ("assistant", "Hey"), ("user", "Best pizza?")]
    assert pair.chosen.content == " Margherita."


def test_sharegpt_with_system_turn_and_roles_mapped(tmp_path):
    path = tmp_path / "dpo.json"
    path.write_text(json.dumps([
        {"conversations": [{"from": "system", "value": "Be kind."}, {"from": "human", "value": "Hi"}],
         "chosen": {"from": "gpt", "value": "Hello!"}, "rejected": {"from": "gpt", "value": "Go away."}},
        {"conversations": [{"from": "human", "value": "Hi"}, {"from": "function_call", "value": "{}"}],
         "chosen": {"from": "gpt", "value": "a"}, "rejected": {"from": "gpt", "value": "b"}},
        {"conversations": [{"from": "human", "value": "Hi"}],
         "chosen": {"from": "human", "value": "a"}, "rejected": {"from": "gpt", "value": "b"}},
    ]), encoding="utf-8")
    result = load_source(path)
    assert result.shape == "sharegpt"
    pair = result.pairs[0]
    assert [(m.role, m.content) for m in pair.prompt] == [("system", "Be kind."), ("user", "Hi")]
    assert (pair.chosen.content, pair.rejected.content) == ("Hello!", "Go away.")
    assert [(q.row, q.reason, q.detail) for q in result.quarantined] == [
        (1, "unknown_role", "conversations[1].from is 'function_call', expected user, assistant or system (or human, gpt, model)"),
        (2, "bad_answer", "chosen is a user message, expected an assistant message"),
    ]


def test_llmbar_label_says_which_output_is_better(tmp_path):
    path = tmp_path / "llmbar.json"
    path.write_text(json.dumps([
        {"input": "Q1", "output_1": "good", "output_2": "bad", "label": 1},
        {"input": "Q2", "output_1": "bad", "output_2": "good", "label": 2},
        {"input": "Q3", "output_1": "a", "output_2": "b", "label": 3},
        {"input": "Q4", "output_1": "a", "output_2": "b", "label": True},
        {"input": "Q5", "output_1": "same", "output_2": "same ", "label": 1},
    ]), encoding="utf-8")
    result = load_source(path)
    assert result.shape == "llmbar"
    assert [(p.prompt_text, p.chosen.content, p.rejected.content) for p in result.pairs] == [
        ("Q1", "good", "bad"), ("Q2", "good", "bad")]
    assert result.pairs[1].metadata == {"label": 2}
    assert [(q.row, q.reason, q.detail) for q in result.quarantined] == [
        (2, "bad_label", "label is 3, expected 1 or 2 (or a/b, model_a/model_b, tie)"),
        (3, "bad_label", "label is True, expected 1 or 2 (or a/b, model_a/model_b, tie)"),
        (4, "identical_answers", "output_1 and output_2 are the same text"),
    ]


def rmgallery_row(inputs, outputs, uid="u1"):
    return {"unique_id": uid, "evaluation_sample": {
        "input": [{"role": r, "content": c, "content_label": None} for r, c in inputs],
        "outputs": [{"role": "assistant", "content": c, "content_label": lab} for c, lab in outputs],
        "data_info": {"domain": "helpfulness", "source": "rewardbench"}},
        "extra_metadata": {"group": "train"}}


def test_rmgallery_nested_rows(tmp_path):
    path = write_jsonl(tmp_path / "rmg.jsonl", [
        rmgallery_row([("user", "Hi"), ("assistant", "Hey"), ("user", "Help?")], [("Sure.", "rejected"), ("Yes, with what?", "chosen")]),
        rmgallery_row([("user", "Hi")], [("a", "chosen"), ("b", "chosen")], uid="u2"),
        {"unique_id": "u3", "evaluation_sample": None},
    ])
    result = load_source(path)
    assert result.shape == "rmgallery"
    pair = result.pairs[0]
    assert roles(pair) == ["user", "assistant", "user"]
    assert (pair.chosen.content, pair.rejected.content) == ("Yes, with what?", "Sure.")
    assert pair.subset == "helpfulness"
    assert pair.metadata == {"unique_id": "u1", "group": "train"}
    assert [(q.row, q.reason, q.detail) for q in result.quarantined] == [
        (1, "bad_answer", "evaluation_sample.outputs holds 2 'chosen' and 0 'rejected' answers, expected one of each"),
        (2, "missing_field", "evaluation_sample is null"),
    ]


def test_rmbench_expands_to_all_style_combinations(tmp_path):
    path = tmp_path / "rmb.json"
    path.write_text(json.dumps([
        {"id": 1, "subset": "chat", "prompt": "P", "chosen": ["c0", "c1", "c2"], "rejected": ["r0", "r1", "r2"]},
        {"id": 2, "subset": "chat", "prompt": "Q", "chosen": ["c0", "", "c2"], "rejected": ["r0", "r1", "r2"]},
    ]), encoding="utf-8")
    result = load_source(path)
    assert (result.shape, result.total_rows, len(result.pairs)) == ("rmbench", 2, 9 + 6)
    first = [p for p in result.pairs if p.row == 0]
    assert [(p.chosen.content, p.rejected.content) for p in first] == [
        (f"c{i}", f"r{j}") for i in range(3) for j in range(3)]
    assert first[5].metadata == {"id": 1, "chosen_style": 1, "rejected_style": 2,
                                 "chosen_style_name": "detailed_plain", "rejected_style_name": "detailed_markdown"}
    assert {p.subset for p in result.pairs} == {"chat"}
    # an empty variant loses only the three pairs it is part of
    assert [(q.row, q.reason, q.detail) for q in result.quarantined] == [
        (1, "empty_field", f"chosen[1] x rejected[{j}]: chosen[1] is empty") for j in range(3)]


def test_mapping_renames_columns(tmp_path):
    path = write_jsonl(tmp_path / "qa.jsonl", [{"question": "Why?", "good": "Because.", "bad": "No.", "id": 3}])
    result = load_source(path, mapping="prompt=question, chosen=good, rejected=bad")
    assert result.shape == "mapped"
    pair = result.pairs[0]
    assert (pair.prompt_text, pair.chosen.content, pair.rejected.content, pair.metadata) == ("Why?", "Because.", "No.", {"id": 3})
    # a dict mapping works the same way
    assert load_source(path, mapping={"prompt": "question", "chosen": "good", "rejected": "bad"}).pairs == result.pairs


def test_mapping_with_a_label_column_orders_the_answers(tmp_path):
    path = write_jsonl(tmp_path / "arena.jsonl", [
        {"q": "Q1", "a": "A1", "b": "B1", "winner": "model_b"},
        {"q": "Q2", "a": "A2", "b": "B2", "winner": "model_a"},
        {"q": "Q3", "a": "A3", "b": "B3", "winner": "tie"},
        {"q": "Q4", "a": "A4", "b": "B4", "winner": "both bad"},
    ])
    result = load_source(path, mapping="prompt=q,chosen=a,rejected=b,label=winner")
    assert [(p.chosen.content, p.rejected.content, p.preference) for p in result.pairs] == [
        ("B1", "A1", 1.0), ("A2", "B2", 1.0), ("A3", "B3", 0.5)]
    q = only_quarantine(result)
    assert (q.row, q.reason) == (3, "bad_label")
    assert q.detail.startswith("winner is 'both bad', expected 1 or 2")


def test_mapping_arena_conversations_with_a_winner_column(tmp_path):
    # Chatbot-Arena style: two whole conversations and a winner; the prompt is their shared prefix.
    path = write_jsonl(tmp_path / "arena.jsonl", [{
        "conversation_a": convo(("user", "Hi"), ("assistant", "Hello A")),
        "conversation_b": convo(("user", "Hi"), ("assistant", "Hello B")),
        "winner": "model_b", "model_a": "m1", "model_b": "m2"}])
    result = load_source(path, mapping="chosen=conversation_a,rejected=conversation_b,label=winner")
    pair = result.pairs[0]
    assert (pair.prompt_text, pair.chosen.content, pair.rejected.content) == ("Hi", "Hello B", "Hello A")
    assert pair.metadata == {"model_a": "m1", "model_b": "m2"}


def test_partial_mapping_keeps_default_columns(tmp_path):
    path = write_jsonl(tmp_path / "q.jsonl", [{"question": "Q", "chosen": "a", "rejected": "b"}])
    pair = load_source(path, mapping="prompt=question").pairs[0]
    assert (pair.prompt_text, pair.chosen.content) == ("Q", "a")


@pytest.mark.parametrize(("mapping", "message"), [
    ("prompt=question,chosen=chosen,rejected=rejected",
     "column 'question' not found (mapped to prompt); columns are: prompt, chosen, rejected"),
    ("prompt", "bad column mapping 'prompt': expected KEY=COLUMN pairs separated by commas, e.g. prompt=question,chosen=good,rejected=bad"),
    ("answer=chosen", "unknown mapping key 'answer': expected prompt, chosen, rejected, label, subset"),
    ("prompt=a,prompt=b", "bad column mapping: 'prompt' is mapped twice"),
    ("", "empty column mapping: expected KEY=COLUMN pairs, e.g. prompt=question,chosen=good,rejected=bad"),
])
def test_wrong_mapping_is_a_one_line_error(tmp_path, mapping, message):
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "P", "chosen": "a", "rejected": "b"}])
    with pytest.raises(SourceError) as err:
        load_source(path, mapping=mapping)
    assert str(err.value) == message
    assert isinstance(err.value, ValueError)


def test_mapping_without_answer_columns_names_what_is_missing(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"question": "P", "good": "a", "bad": "b"}])
    with pytest.raises(SourceError, match=r"^column 'rejected' not found \(map it with rejected=COLUMN\); columns are: question, good, bad$"):
        load_source(path, mapping="prompt=question,chosen=good")


def test_parse_mapping():
    assert parse_mapping(" prompt = q ,chosen=g,rejected=b,") == {"prompt": "q", "chosen": "g", "rejected": "b"}


# ------------------------------------------------------------------------------------------
# Bad rows are quarantined with a reason naming the field, never fatal


def test_bad_rows_are_quarantined_with_reasons(tmp_path):
    rows = [
        {"prompt": "ok", "chosen": "a", "rejected": "b"},
        {"prompt": "P", "chosen": "a"},
        {"prompt": "P", "chosen": None, "rejected": "b"},
        {"prompt": "   ", "chosen": "a", "rejected": "b"},
        {"prompt": "P", "chosen": True, "rejected": "b"},
        {"prompt": "P", "chosen": 3, "rejected": "b"},
        {"prompt": "P", "chosen": " same\n", "rejected": "same"},
        {"prompt": convo(("user", "Hi"), ("assistant", "Hello")), "chosen": "a", "rejected": "b"},
        {"prompt": convo(("robot", "Hi")), "chosen": "a", "rejected": "b"},
        {"prompt": [{"role": "user", "content": False}], "chosen": "a", "rejected": "b"},
        {"prompt": ["just a string"], "chosen": "a", "rejected": "b"},
        {"prompt": [], "chosen": "a", "rejected": "b"},
        {"prompt": "P", "chosen": convo(("assistant", "a"), ("assistant", "b")), "rejected": "b"},
    ]
    result = load_source(write_jsonl(tmp_path / "bad.jsonl", rows))
    assert result.total_rows == len(rows)
    assert [p.row for p in result.pairs] == [0]
    assert [(q.row, q.reason, q.detail) for q in result.quarantined] == [
        (1, "missing_field", "rejected: field is absent"),
        (2, "missing_field", "chosen is null"),
        (3, "empty_field", "prompt is empty"),
        (4, "non_string_content", "chosen is a boolean (True), expected a string"),
        (5, "non_string_content", "chosen is a number (3), expected a string"),
        (6, "identical_answers", "chosen and rejected are the same text"),
        (7, "prompt_not_user", "prompt's last turn is assistant, expected user"),
        (8, "unknown_role", "prompt[0].role is 'robot', expected user, assistant or system (or human, gpt, model)"),
        (9, "non_string_content", "prompt[0].content is a boolean (False), expected a string"),
        (10, "bad_message", "prompt[0] is a string, expected a message with role and content"),
        (11, "empty_field", "prompt is an empty list"),
        (12, "bad_answer", "chosen holds [assistant, assistant] after the prompt, expected one assistant message"),
    ]
    assert result.quarantine_reasons == {
        "bad_answer": 1, "bad_message": 1, "empty_field": 2, "identical_answers": 1, "missing_field": 2,
        "non_string_content": 3, "prompt_not_user": 1, "unknown_role": 1}


def test_bad_json_lines_and_non_object_rows_are_counted(tmp_path):
    path = tmp_path / "mixed.jsonl"
    path.write_text('{"prompt": "P", "chosen": "a", "rejected": "b"}\n{"prompt": "P", "chosen": \n\n[1, 2]\n'
                    '{"prompt": "Q", "chosen": "a", "rejected": "b"}\n', encoding="utf-8")
    result = load_source(path)
    assert result.total_rows == 4  # the blank line is not a row
    assert [p.row for p in result.pairs] == [0, 3]
    assert [(q.row, q.reason) for q in result.quarantined] == [(1, "bad_json"), (2, "bad_row")]
    assert result.quarantined[0].detail.startswith("line 2 is not valid JSON")
    assert result.quarantined[1].detail == "row is a list, expected an object"


def test_empty_system_message_is_dropped_not_quarantined(tmp_path):
    path = write_jsonl(tmp_path / "sys.jsonl", [
        {"prompt": convo(("system", ""), ("user", "Hi")), "chosen": convo(("assistant", "a")), "rejected": convo(("assistant", "b"))}])
    assert roles(load_source(path).pairs[0]) == ["user"]


def test_duplicate_rows_are_kept_as_separate_pairs(tmp_path):
    row = {"prompt": "P", "chosen": "a", "rejected": "b"}
    result = load_source(write_jsonl(tmp_path / "dup.jsonl", [row, row]))
    assert [p.row for p in result.pairs] == [0, 1]
    assert result.pairs[0].source_id == result.pairs[1].source_id


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
    monkeypatch.setattr(sources, "PARQUET_BATCH_ROWS", 4)
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


def test_streaming_yields_rows_before_a_corrupt_tail(tmp_path):
    # A truncated gzip fails only where it breaks: rows before it were already streamed out.
    rows = [{"prompt": f"P{i}", "chosen": f"a{i} " * 50, "rejected": f"b{i} " * 50} for i in range(2000)]
    data = gzip.compress("".join(json.dumps(r) + "\n" for r in rows).encode())
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(data[: len(data) // 2])
    stream = iter_source(path)
    seen = []
    with pytest.raises(SourceError, match=r"^cannot read .*cut\.jsonl\.gz: "):
        for item in stream:
            seen.append(item)
    assert len(seen) > 100
    assert [p.row for p in seen] == list(range(len(seen)))


def test_iter_source_exposes_shape_and_counts(tmp_path):
    path = write_jsonl(tmp_path / "s.jsonl", [{"prompt": "P", "chosen": "a", "rejected": "b"}, {"prompt": "P", "chosen": "a", "rejected": "a"}])
    with iter_source(path) as stream:
        assert (stream.shape, stream.columns) == ("plain", ["prompt", "chosen", "rejected"])
        items = list(stream)
    assert [type(i).__name__ for i in items] == ["SourcePair", "Quarantined"]
    assert (stream.rows_read, stream.pairs, stream.quarantined, dict(stream.reasons)) == (2, 1, 1, {"identical_answers": 1})


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


def test_limit_must_be_positive(tmp_path):
    with pytest.raises(SourceError, match="limit must be at least 1, got 0"):
        iter_source(write_jsonl(tmp_path / "s.jsonl", [{"prompt": "P", "chosen": "a", "rejected": "b"}]), limit=0)


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


# ------------------------------------------------------------------------------------------
# The real public files in ../shared/data


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
