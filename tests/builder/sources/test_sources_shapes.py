"""Every shape a source can have, detected and normalised, and explicit column mappings."""

from __future__ import annotations

import json

import pytest
from sources_helpers import convo, only_quarantine, roles, write_jsonl

from crome.builder.sources import SourceError, load_source, parse_mapping
from crome.schemas import pair_id
from crome.schemas.messages import Message


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
