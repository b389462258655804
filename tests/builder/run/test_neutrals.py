"""IQN draws that hold: unrelated by content, from the pairs dedup kept, within a draw group, independent draws."""

from __future__ import annotations

import json
import random
from collections import Counter, defaultdict

import pytest

from crome.builder.run.config import BuildConfig
from crome.builder.run.pipeline import STAGES, build
from crome.builder.stages.dedup import DedupStage
from crome.builder.stages.neutral import Drawer, NeutralStage, draw_groups
from crome.builder.stages.records import PairContext
from crome.builder.stages.relatedness import Relatedness
from crome.schemas import Message, SourcePair
from crome.schemas.calls import OracleResponse
from crome.schemas.oracle import Counterfactual
from scripted_oracle import ScriptedOracle
from test_build import read_rejections, read_rows, write_pairs

# Each prompt with a paraphrase a tie must never be re-attached to (it would be a wrong label) ...
PARAPHRASES = [
    ("How far is the Moon from the Earth?", "What is the distance between the Earth and the Moon?"),
    ("How do I bake sourdough bread at home?", "What's the way to make a sourdough loaf in my own kitchen? Baking tips welcome."),
    ("Give me five places at school where I can focus on studying.", "5 places to study focus in school."),
    ("Why is the sky blue?", "What makes the sky appear blue during the day?"),
    ("Write a Python function that reverses a string.", "In Python, how can I write a function to reverse a given string?"),
    ("What are the health benefits of drinking green tea?", "Is green tea good for your health? What benefits does drinking it have?"),
]
# ... and short questions that share only function words ("What is the ... of"), which are unrelated.
UNRELATED = [
    ("What is the capital of France?", "What is the boiling point of water?"),
    ("What is the population of Tokyo?", "What is the meaning of the word serendipity?"),
    ("How do I change a flat tire?", "How do I make a paper airplane?"),
    ("Who wrote the novel Moby Dick?", "Who painted the ceiling of the Sistine Chapel?"),
]


def pair(prompt: str | list[tuple[str, str]], i: int = 0) -> SourcePair:
    turns = [("user", prompt)] if isinstance(prompt, str) else prompt
    return SourcePair.make(
        prompt=[Message(role=r, content=c) for r, c in turns], chosen=f"A careful answer {i}.", rejected=f"A poor answer {i}.", row=i
    )


@pytest.fixture(scope="module")
def relatedness():
    return Relatedness([p for two in PARAPHRASES + UNRELATED for p in two])


@pytest.mark.parametrize("a, b", PARAPHRASES)
def test_a_paraphrase_is_related(relatedness, a, b):
    assert relatedness.similarity(a, b) >= 0.2 and relatedness.similarity(b, a) == pytest.approx(relatedness.similarity(a, b))


@pytest.mark.parametrize("a, b", UNRELATED)
def test_questions_sharing_only_function_words_are_unrelated(relatedness, a, b):
    assert relatedness.similarity(a, b) < 0.2


def test_every_turn_counts_and_a_prompt_without_content_is_related_to_everything(relatedness):
    follow_up = "Tell me about Paris.\nWhat about its population?"
    assert relatedness.similarity(follow_up, "How many people live in Paris? What is its population?") >= 0.2
    assert relatedness.similarity("What about its population?", "How many people live in Paris?") < 0.2
    assert relatedness.similarity("Why?", "What is the capital of France?") == 1.0


def test_a_pair_is_never_tied_under_a_paraphrase_of_its_own_prompt():
    prompts = [p for two in PARAPHRASES for p in two] + [p for two in UNRELATED for p in two]
    pool = [PairContext(pair=pair(p, i)) for i, p in enumerate(prompts)]
    drawer = Drawer(pool, seed=0, group_size=100, max_similarity=0.2)
    twin = {a: b for a, b in PARAPHRASES} | {b: a for a, b in PARAPHRASES}
    drawn = Counter()
    for seed in range(30):
        for ctx in pool:
            other, sim = drawer.draw(ctx, random.Random(seed))
            assert other is not None and sim < 0.2
            assert other.pair.prompt_text != twin.get(ctx.pair.prompt_text)
            drawn[other.pair.prompt_text] += 1
    assert len(drawn) == len(prompts)  # every prompt serves as an irrelevant one for somebody


def test_draw_groups_are_fixed_by_seed_and_source_and_never_leave_a_pair_alone():
    pool = [PairContext(pair=pair(f"Question {i} about topic {i}", i)) for i in range(53)]
    groups = draw_groups(pool, seed=0, size=16)
    sizes = Counter(id(g) for g in groups.values())
    assert len(sizes) == 3 and all(16 <= n <= 31 for n in sizes.values())
    assert draw_groups(list(reversed(pool)), seed=0, size=16) == groups  # order of the source does not matter
    assert draw_groups(pool, seed=1, size=16) != groups
    assert all(groups[c.pair.source_id] is g for g in groups.values() for c in g)


def test_dedup_runs_before_the_neutrals_and_again_after_them():
    names = [s.name for s in STAGES]
    assert names.index("dedup") < names.index("neutral") < names.index("cross_prompt") < len(names) - 1
    assert STAGES[-1] is DedupStage and names.count("dedup") == 2 and STAGES[names.index("neutral")] is NeutralStage


def same_rewrite(req):
    """Every degrade keeps the answer's first and last line and writes the same body: near-duplicates across pairs."""
    lines = req.context["answer"].split("\n\n")
    body = " ".join(f"The claim in step {j} is wrong because step {j + 1} contradicts it." for j in range(8))
    return OracleResponse(status="ok", parsed=Counterfactual(rewrite=f"{lines[0]}\n\n{body}\n\n{lines[-1]}", change="x"))


def test_ties_are_made_only_from_pairs_dedup_kept(tmp_path):
    src = write_pairs(tmp_path / "pairs.jsonl", n=8)
    build(BuildConfig(source=str(src), out=str(tmp_path / "run"), causal=["degrade"], max_attributes=1, neutral_ratio=3, seed=1),
          oracle=ScriptedOracle(degrade=same_rewrite))
    rows = read_rows(tmp_path / "run")
    near = [r for r in read_rejections(tmp_path / "run") if r["stage"] == "dedup" and r["augmentation"] == "degrade"]
    assert near, "the same rewrite everywhere must leave near-duplicates for dedup to drop"
    kept = defaultdict(set)
    for r in rows:
        if r["kind"] != "neutral":
            kept[r["source_id"]].add(frozenset((r["chosen"][0]["content"], r["rejected"][0]["content"])))
    dropped = {frozenset((json.loads(r["candidate"])["chosen"], json.loads(r["candidate"])["rejected"])) for r in near}
    ties = [r for r in rows if r["kind"] == "neutral"]
    assert len(ties) == 8 * 3
    for r in ties:
        answers = frozenset((r["chosen"][0]["content"], r["rejected"][0]["content"]))
        assert answers in kept[r["source_id"]] and answers not in dropped


def neutral_draws(run) -> dict[str, list[tuple]]:
    out = defaultdict(list)
    for r in read_rows(run):
        if r["kind"] == "neutral":
            out[r["source_id"]].append(r["prompt"][0]["content"])
    return {k: sorted(v) for k, v in out.items()}


def test_a_pairs_irrelevant_prompts_do_not_depend_on_how_many_rewrites_it_kept(tmp_path):
    src = write_pairs(tmp_path / "pairs.jsonl", n=8)

    def build_with(name, **kw):
        build(BuildConfig(source=str(src), out=str(tmp_path / name), causal=["degrade"], neutral_ratio=2, seed=5, **kw), oracle=ScriptedOracle())
        return read_rows(tmp_path / name)

    one, two = build_with("one", max_attributes=1), build_with("two", max_attributes=2)
    assert Counter(r["kind"] for r in two)["causal"] > Counter(r["kind"] for r in one)["causal"]
    assert neutral_draws(tmp_path / "one") == neutral_draws(tmp_path / "two")


def test_every_tie_takes_its_prompt_from_its_own_draw_group(tmp_path):
    src = write_pairs(tmp_path / "pairs.jsonl", n=40)
    build(BuildConfig(source=str(src), out=str(tmp_path / "run"), causal=[], neutral_ratio=2, neutral_group_size=8), oracle=ScriptedOracle())
    rows = read_rows(tmp_path / "run")
    owner = {r["prompt"][0]["content"]: r["source_id"] for r in rows if r["kind"] == "original"}
    pool = [PairContext(pair=pair(p)) for p in owner]  # only the ids matter to the groups
    for ctx, sid in zip(pool, owner.values()):
        ctx.pair = ctx.pair.model_copy(update={"source_id": sid})
    groups = draw_groups(pool, seed=0, size=8)
    ties = [r for r in rows if r["kind"] == "neutral"]
    assert len(ties) > 60
    for r in ties:
        donor = owner[r["prompt"][0]["content"]]
        assert donor != r["source_id"] and groups[donor] is groups[r["source_id"]]
