"""`crome sources inspect` through typer's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from crome.cli import app
from paths import SHARED_DATA

DATA = SHARED_DATA
HH = DATA / "hh-rlhf-harmless-test" / "test.jsonl.gz"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"shared data folder {DATA} not present")

runner = CliRunner()


def inspect(*args: str):
    return runner.invoke(app, ["sources", "inspect", *args])


@needs_data
def test_inspect_hh_reports_rows_pairs_and_every_quarantined_row():
    result = inspect(str(HH))
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "hh-rlhf-harmless-test/test.jsonl.gz" in out and str(DATA) not in out
    assert "hh_transcript" in out
    head = dict(line.split() for line in out.splitlines()[:8] if len(line.split()) == 2)
    assert (head["rows"], head["pairs"], head["quarantined"]) == ("2,312", "2,308", "4")
    for row in (86, 516, 925, 1103):
        assert any(f"│ {row} " in line and "empty_field" in line and "final Assistant turn is empty" in line for line in out.splitlines()), row
    assert "Normalised pairs" in out and "[5 turns]" in out


@needs_data
def test_inspect_json_report():
    result = inspect(str(HH), "--json", "--samples", "2")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["shape"] == "hh_transcript"
    assert report["source"] == {"name": "hh-rlhf-harmless-test/test.jsonl.gz", "hub_id": None, "license": None,
                                "split": None, "config": None, "revision": None}
    assert report["counts"] == {"rows": 2312, "pairs": 2308, "quarantined": 4}
    assert report["quarantine_reasons"] == {"empty_field": 4}
    assert [(q["row"], q["reason"]) for q in report["quarantined"]] == [(r, "empty_field") for r in (86, 516, 925, 1103)]
    assert [s["row"] for s in report["samples"]] == [0, 1]
    assert report["samples"][0]["prompt"][0] == {"role": "user", "content": "what are some pranks with a pen i can do?"}


def test_inspect_with_map_and_limit(tmp_path):
    path = tmp_path / "qa.jsonl"
    path.write_text("".join(json.dumps({"question": f"Q{i}", "good": "yes", "bad": "no" if i else "yes"}) + "\n" for i in range(5)))
    result = inspect(str(path), "--map", "prompt=question,chosen=good,rejected=bad", "--limit", "3", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["shape"] == "mapped"
    assert report["mapping"] == {"prompt": "question", "chosen": "good", "rejected": "bad"}
    assert report["counts"] == {"rows": 3, "pairs": 2, "quarantined": 1}
    assert report["quarantined"] == [{"row": 0, "reason": "identical_answers", "detail": "good and bad are the same text"}]


def test_inspect_lists_at_most_50_quarantined_rows_in_the_terminal(tmp_path):
    path = tmp_path / "many.jsonl"
    path.write_text("".join(json.dumps({"prompt": "P", "chosen": "x", "rejected": "x"}) + "\n" for _ in range(60)))
    result = inspect(str(path))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert any(line.split("│")[1:3] == [" identical_answers ", " 60    "] for line in lines)
    listed = [int(line.split("│")[1]) for line in lines if line.startswith("│") and line.split("│")[1].strip().isdigit()]
    assert listed == list(range(50))
    assert "… and 10 more (--json lists them all)" in result.stdout


@pytest.mark.parametrize(("args", "message"), [
    (["missing.jsonl"], "error: cannot read missing.jsonl: no such file or directory"),
    (["{tmp}/foo.txt"], "error: cannot read foo.txt: expected .jsonl, .jsonl.gz, .json, .parquet or .csv"),
    (["{tmp}/p.jsonl", "--map", "prompt=question"], "error: column 'question' not found (mapped to prompt); columns are: prompt, chosen, rejected"),
    (["{tmp}/p.jsonl", "--map", "nonsense"], "error: bad column mapping 'nonsense': expected KEY=COLUMN pairs"),
])
def test_inspect_errors_are_one_line_with_exit_code_2(tmp_path, args, message):
    (tmp_path / "foo.txt").write_text("hello")
    (tmp_path / "p.jsonl").write_text(json.dumps({"prompt": "P", "chosen": "a", "rejected": "b"}) + "\n")
    result = inspect(*(a.replace("{tmp}", str(tmp_path)) for a in args))
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.startswith(message)
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_inspect_limit_must_be_positive(tmp_path):
    result = inspect(str(tmp_path / "p.jsonl"), "--limit", "0")
    assert result.exit_code == 2
    assert "Invalid value for '--limit'" in result.stderr
