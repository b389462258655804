"""A user iterating on one run directory with a paid oracle never pays twice for an answer.

Against the fake OpenAI-compatible server (real `openai` client), whose request log is the
provider's bill: --limit 60, then --limit 120, then a new --seed, then a source with rows
appended, all into the same --out. Every request body that got an answer is sent exactly once
over the four builds, on UltraFeedback (distinct answers) and on RM-Bench, whose 9 pairs per
prompt share 6 answers (identical rate and rewrite requests in flight at once share one call).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from crome.builder.oracles import get_oracle
from crome.builder.run.config import BuildConfig
from crome.builder.run.pipeline import build
from crome.builder.store import RunStore
from fake_llm_server import FakeLLMServer
from money_helpers import provider_key, sent_again_after_an_answer
from paths import SHARED_DATA
from test_build_llm import responder

UF = SHARED_DATA / "ultrafeedback-binarized-sample" / "train_clean.jsonl"
RM_BENCH = SHARED_DATA / "rm-bench" / "chat_filtered.json"
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not UF.exists() or not RM_BENCH.exists(), reason="../shared/data not present")]
SPEC = "openai:gpt-4o-mini"


def head(source: Path, rows: int, out: Path) -> Path:
    """The first `rows` source rows as a file of their own (a source that later grows)."""
    if source.suffix == ".jsonl":
        out.write_text("".join(source.read_text().splitlines(keepends=True)[:rows]))
    else:
        out.write_text(json.dumps(json.loads(source.read_text())[:rows]))
    return out


# (source, --limit of the first build, of the second, rows of the grown source): UltraFeedback rows
# are one pair each, RM-Bench rows nine.
CASES = {"ultrafeedback": (UF, 60, 120, 140), "rm-bench": (RM_BENCH, 4, 8, 10)}


@pytest.mark.parametrize("case", sorted(CASES))
def test_limit_seed_and_appended_rows_never_resend_an_answered_request(tmp_path, monkeypatch, case):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-iterate")
    source, small, large, grown = CASES[case]
    appended = head(source, grown, tmp_path / f"appended{source.suffix}")
    out = tmp_path / "run"
    with FakeLLMServer(responder=responder) as server:
        def run(src: Path, **kw) -> dict:
            oracle = get_oracle(SPEC, base_url=server.openai_url, concurrency=16, timeout=30, backoff_base=0.001)
            s = build(BuildConfig(source=str(src), out=str(out), oracle=SPEC, **kw), oracle=oracle).summary
            assert s["status"] == "complete" and s["accounting"]["balanced"]
            return s

        first = run(source, limit=small)
        second = run(source, limit=large)
        reseeded = run(source, limit=large, seed=1)
        grown_run = run(appended, seed=1)

    assert sent_again_after_an_answer(server.requests) == []
    # Each build paid only for what was new: the earlier answers were replayed, whatever the donors.
    assert first["oracle_calls"]["new"] > 0 and second["oracle_calls"]["cached"] >= first["oracle_calls"]["new"] - first["oracle_calls"]["failed"]
    assert reseeded["oracle_calls"]["cached"] > reseeded["oracle_calls"]["new"]
    assert grown_run["oracle_calls"]["cached"] > grown_run["oracle_calls"]["new"]
    if case == "rm-bench":  # shared answers: identical requests found one another in flight
        assert first["oracle_calls"]["shared"] > 0
    # The store files each answer under the key of exactly what the provider received.
    with RunStore.open(out, read_only=True) as store:
        held = store.get_calls([provider_key(r) for r in server.requests if r.answered])
    assert {provider_key(r) for r in server.requests if r.answered} == set(held)
    # Billed: one request per body the server saw (no faults here), and what the server reported.
    assert grown_run["spend"]["requests"] == server.count()
    assert grown_run["spend"]["input_tokens"] == sum(r.usage[0] for r in server.requests)
