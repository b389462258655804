"""Bad rows are quarantined with a reason and a detail naming the field, never fatal."""

from __future__ import annotations

from sources_helpers import convo, roles, write_jsonl

from crome.builder.sources import load_source


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
