"""The rules oracle as a whole: the oracle interface, label-following ratings, what is never done, determinism."""

from __future__ import annotations

import json
import random
from collections import Counter

import pytest
from rules_helpers import DONOR, ESSAY, RECIPE, ask, degrade, rewrite_of

from crome.builder.oracles import Oracle, get_oracle
from crome.builder.oracles.rules import RulesOracle
from crome.builder.stages.checks import validate_rewrite
from paths import SHARED_DATA

DATA = SHARED_DATA
UF = DATA / "ultrafeedback-binarized-sample" / "train_clean.jsonl"
needs_data = pytest.mark.skipif(not UF.is_file(), reason=f"shared data file {UF} not present")


# ------------------------------------------------------------------------------------------
# the oracle interface


def test_implements_the_oracle_protocol_and_registry():
    oracle = get_oracle("rules", concurrency=16, rpm=100, base_url=None)  # LLM options are ignored
    assert isinstance(oracle, RulesOracle) and isinstance(oracle, Oracle)
    assert (oracle.provider, oracle.model, oracle.name) == ("rules", "rules", "rules")
    caps = oracle.capabilities
    assert not (caps.upgrade or caps.safety or caps.verify or caps.priced or caps.batch)


def test_its_cache_keys_hold_the_side_donor_and_seed_it_reads_and_no_other_context(tmp_path):
    """The rendered rate prompt does not say which side an answer is on, yet the rules rating follows it: the same
    answer as chosen and as rejected must be two calls. A degrade reads the donor and the seed, not in the text either."""
    import asyncio

    from crome.builder.run.generate import CachedGenerate
    from crome.builder.store import RunStore
    from crome.prompts import load_template

    rate, degrade_t = load_template("rate@v1"), load_template("degrade@v1")
    rubrics = [{"name": "completeness", "definition": "covers the request"}]
    answer = RECIPE
    rendered = {"prompt": "How do I roast a chicken?", "answer": answer}
    requests = [
        rate.request(context={**rendered, "side": side, "rubrics": ["completeness"], "pair": i}, rubrics=rubrics, **rendered)
        for i, side in enumerate(["chosen", "rejected", "chosen"])
    ] + [
        degrade_t.request(context={"answer": answer, "rubric": "relevance", "donor": donor, "seed": 0, "pair": i},
                          rubric={"name": "relevance", "definition": "on topic"}, other_rubrics=[], **rendered)
        for i, donor in enumerate([DONOR, ESSAY, DONOR])
    ]

    async def run(store):
        generate = CachedGenerate(store, RulesOracle())
        out = await asyncio.gather(*(generate(r) for r in requests))
        generate.flush()
        return generate.stats, out

    with RunStore.open(tmp_path) as store:
        stats, out = asyncio.run(run(store))
    # chosen, rejected: two calls (a third, chosen again with another "pair", shares the first); two donors: two degrades
    assert stats.new == 4 and stats.cached == 2
    assert [r.rating for r in out[0].parsed.ratings] == ["strong"] and [r.rating for r in out[1].parsed.ratings] == ["weak"]
    assert out[3].parsed.rewrite != out[4].parsed.rewrite and out[5].parsed == out[3].parsed


def test_upgrade_verify_and_unknown_tasks_are_unsupported_never_faked():
    for task in ("upgrade", "verify", "summarise"):
        resp = ask(task, prompt="p", answer="An answer. With two sentences.", rubric="completeness", seed=0)
        assert resp.status == "unsupported" and resp.parsed is None and resp.error
        assert (resp.input_tokens, resp.output_tokens) == (0, 0)


def test_missing_context_is_an_error_naming_the_field():
    resp = ask("degrade", prompt="p", rubric="completeness")
    assert resp.status == "error" and "'answer'" in resp.error
    resp = ask("rate", prompt="p", answer="a", rubrics=["clarity"])
    assert resp.status == "error" and "'side'" in resp.error


# ------------------------------------------------------------------------------------------
# rate


def test_ratings_follow_the_source_label():
    names = ["factuality", "relevance", "completeness", "clarity"]
    chosen = ask("rate", prompt="p", answer=RECIPE, side="chosen", rubrics=names).parsed
    rejected = ask("rate", prompt="p", answer=RECIPE, side="rejected", rubrics=names).parsed
    assert [(r.rubric, r.rating) for r in chosen.ratings] == [(n, "strong") for n in names]
    assert [(r.rubric, r.rating) for r in rejected.ratings] == [(n, "weak") for n in names]
    assert "label" in chosen.ratings[0].reason
    # rubric dicts (name + definition) are read by name too
    assert ask("rate", prompt="p", answer="a", side="chosen", rubrics=[{"name": "clarity", "definition": "d"}]).ok


def test_rate_rejects_a_bad_side_or_no_rubrics():
    assert "tie" in ask("rate", prompt="p", answer="a", side="tie", rubrics=["clarity"]).error
    assert ask("rate", prompt="p", answer="a", side="chosen", rubrics=[]).status == "error"


# ------------------------------------------------------------------------------------------
# degrade: aliases, what is never done, and determinism


def test_aliases_reach_the_same_intervention():
    assert rewrite_of(RECIPE, "accuracy") == rewrite_of(RECIPE, "factuality")


@pytest.mark.parametrize("rubric", ["safety", "harmlessness", "creativity", "humor"])
def test_safety_and_unknown_rubrics_are_unsupported(rubric):
    resp = degrade(RECIPE, rubric)
    assert resp.status == "unsupported" and resp.parsed is None
    assert rubric in resp.error or "safety" in resp.error


def test_empty_answer_is_unsupported():
    assert degrade("   ", "completeness").status == "unsupported"


def test_same_request_same_rewrite_and_no_global_rng():
    random.seed(123)
    state = random.getstate()
    for rubric in ("completeness", "factuality", "relevance", "clarity"):
        a, b = degrade(ESSAY + "\n\nIt rains 3 times a week in 2020.", rubric, DONOR, 7), degrade(ESSAY + "\n\nIt rains 3 times a week in 2020.", rubric, DONOR, 7)
        assert a.raw == b.raw and a.status == "ok"
    assert random.getstate() == state
    outs = {degrade(RECIPE, "factuality", seed=s).raw for s in range(6)}
    assert len(outs) > 1  # the seed matters


def test_crlf_answers_stay_crlf():
    answer = ESSAY.replace("\n", "\r\n")
    out = rewrite_of(answer, "completeness").rewrite
    assert "\r\n" in out and "\n" not in out.replace("\r\n", "")


# ------------------------------------------------------------------------------------------
# a real small experiment: the UltraFeedback sample


@needs_data
def test_degrades_on_300_real_pairs_mostly_pass_validation():
    rows = [json.loads(line) for line in UF.read_text().splitlines()[:300]]
    status: Counter = Counter()
    by_rubric: dict[str, Counter] = {}
    for i, row in enumerate(rows):
        rubrics = ask("rubrics", prompt=row["prompt"], conversation=row["prompt"]).parsed.rubrics
        donor = rows[(i + 7) % len(rows)]["chosen"]
        for r in rubrics:
            resp = degrade(row["chosen"], r.name, donor=donor)
            tally = by_rubric.setdefault(r.name, Counter())
            if resp.status != "ok":
                assert resp.status == "unsupported" and resp.error
                tally["unsupported"] += 1
                continue
            result = validate_rewrite(row["chosen"], resp.parsed.rewrite)
            tally["pass" if result.passed else f"fail:{result.reason}"] += 1
            status["pass" if result.passed else "fail"] += 1
    rate = status["pass"] / (status["pass"] + status["fail"])
    print(f"\nrules degrades passing validation: {rate:.1%} of {status['pass'] + status['fail']} supported;", by_rubric)
    assert rate > 0.9
    for name in ("completeness", "factuality", "relevance", "clarity"):
        assert by_rubric[name]["pass"] >= 100, (name, by_rubric[name])
    assert by_rubric["safety"] == Counter(unsupported=by_rubric["safety"]["unsupported"])
