"""The counterfactual viewer shows the verifier's explanation of each kept rewrite, read from the run store, escaped.

A verified build through the real openai client against the fake server, whose verifier writes a
different explanation for every rewrite (with markup in it); the audit of the run folder attaches
each one to its own pair, the HTML shows it escaped, and a published folder (no store) shows the
verdict alone and says why.
"""

from __future__ import annotations

import json
import re
from html import escape

from typer.testing import CliRunner

from crome.builder.hub.audit import audit
from crome.builder.hub.audit_html import render_html
from crome.builder.oracles import get_oracle
from crome.builder.run.config import BuildConfig
from crome.builder.run.pipeline import build
from crome.cli import app
from fake_llm_server import FakeLLMServer, RequestRecord
from llm_responder import _between
from llm_responder import responder as good_judge


def explanation(rubric: str, target: str, original: str, rewrite: str) -> str:
    """What the fake verifier says of one rewrite: its own words for each pair, and markup that must be escaped."""
    return (f'The <b>{rubric}</b> of the rewrite is {target} & nothing else moved: "{rewrite.split()[0]}" … '
            f"{len(original.split())} words became {len(rewrite.split())}.</div><script>alert(1)</script>")


def responder(record: RequestRecord):
    """The build tests' good judge and editor, whose verifier explains each rewrite in its own words."""
    answer = good_judge(record)
    if (record.schema or {}).get("title") == "Verdict":
        text = "\n".join(t for role, t in record.messages if role == "user")
        rubric = re.search(r"Target rubric:\n- (\w+):", text).group(1)
        answer["explanation"] = explanation(rubric, answer["target"], _between(text, "original"), _between(text, "rewrite"))
    return answer


def sentences(i: int, n: int) -> str:
    return "\n".join(f"Point {j} about item {i} holds because the river stone and the cloud agree here." for j in range(n))


def source(tmp_path, n: int = 10):
    path = tmp_path / "pairs.jsonl"
    with path.open("w") as f:
        for i in range(n):
            # Prompts with markup and several lines: the store is matched on the conversation as the verifier read it.
            prompt = f"Explain item {i} & <its> parts.\nKeep it short." if i % 2 else f"What is item {i}?"
            f.write(json.dumps({"prompt": prompt, "chosen": sentences(i, 8), "rejected": sentences(i, 5)}) + "\n")
    return path


def test_the_viewer_shows_each_verifier_explanation_from_the_run_store_escaped(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-viewer")
    run, pub = tmp_path / "run", tmp_path / "pub"
    with FakeLLMServer(responder=responder) as server:
        oracle = get_oracle("openai:gpt-4o-mini", base_url=server.openai_url, timeout=5.0)
        summary = build(BuildConfig(source=str(source(tmp_path)), out=str(run), oracle="openai:gpt-4o-mini", neutral_ratio=0), oracle=oracle).summary
    assert summary["status"] == "complete" and summary["oracle_calls"]["by_task"].get("verify", 0) > 0

    report = audit(run, samples=0)
    verified = [s for s in report.shortcuts["counterfactuals"] if s["augmentation"] in ("degrade", "upgrade")]
    assert {s["augmentation"] for s in verified} == {"degrade", "upgrade"} and any("& <its> parts.\n" in s["prompt"] for s in verified)
    for s in verified:  # each pair gets the explanation of its own verify call
        original, rewrite = (s["chosen"], s["rejected"]) if s["augmentation"] == "degrade" else (s["rejected"], s["chosen"])
        target = "worse" if s["augmentation"] == "degrade" else "better"
        assert s["explanation"] == explanation(s["attribute"], target, original, rewrite)
    record = report.shortcuts["explanations"]
    assert record["source"] == "crome.duckdb" and record["found"] == record["pairs"] == len(verified)

    html = render_html(report)
    for s in verified:
        assert escape(s["explanation"]) in html
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "verifier's explanation</span>" in html and "verifier: pass: target worse" in html
    assert f"{len(verified)} of {len(verified)} shown rewrites have one" in html

    # A published folder has no store: the verdict the row recorded, no explanation, and the report says why.
    assert CliRunner().invoke(app, ["publish", str(run), "--to", str(pub)]).exit_code == 0
    published = audit(pub, samples=0)
    assert published.shortcuts["explanations"]["source"] is None and published.shortcuts["explanations"]["found"] == 0
    assert all(s["explanation"] is None for s in published.shortcuts["counterfactuals"] if s["augmentation"] in ("degrade", "upgrade"))
    page = render_html(published)
    assert "Verifier explanations are not in this data" in page and "verifier: pass: target worse" in page
    assert "alert(1)" not in page and 'class="expl"' not in page
