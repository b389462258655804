"""`crome eval --perturb`: the robustness report against a direct computation with score_pairs on the perturbed pairs."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before datasets/transformers read it

import json  # noqa: E402

import pytest  # noqa: E402
from train_helpers import tiny_bert  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from crome.cli import app  # noqa: E402
from crome.train.evaluate import RewardCache, evaluate_robustness, load_scorer, score_pairs  # noqa: E402
from crome.train.pairs import EvalPair, load_eval_pairs  # noqa: E402
from crome.train.robustness import TRANSFORMS, one_sided_pairs, perturb_pairs  # noqa: E402

MAX_LENGTH = 128
SEED = 3

# Prose, markdown, code and math answers, so that every family of transformations covers some pairs.
PAIRS = [
    ("Why is the sky blue?",
     "Sunlight scatters off air molecules. Blue light scatters the most, so the sky looks blue.",
     "The sky is blue because it reflects the ocean."),
    ("How do I boil an egg?",
     "## Steps\n\n- Put the egg in boiling water.\n- Wait nine minutes.\n- Cool it in cold water.",
     "Just cook it until it seems done, I guess."),
    ("Write a Python function that adds two numbers.",
     "Here is the function:\n\n```python\ndef add(a, b):\n    # sum of both\n    return a + b\n```",
     "```python\ndef add(a, b):\n    return a - b\n```"),
    ("What is 6 times 7?",
     "Six groups of seven make 42, so the answer is $\\boxed{42}$.",
     "Multiplying gives 48. The answer is 48."),
    ("Name a prime number above ten.",
     "Eleven is prime: its only divisors are one and itself.",
     "Twelve is a prime number."),
    ("Summarise the water cycle.",
     "Water evaporates, condenses into clouds and falls as rain. Then it flows back to the sea.",
     "**Water** goes up.\n\n**Water** comes down."),
    ("Give me a tip for learning Spanish.",
     "Practise a little every day. Short daily sessions beat long weekly ones for memory.",
     "Learn every word in the dictionary first, then start speaking."),
    ("What does a thermometer measure?",
     "A thermometer measures temperature, usually in degrees Celsius or Fahrenheit.",
     "A thermometer measures how heavy things are."),
]
TIE = ("Which colour do you like?", "I like green.", "I like blue.")


def as_records() -> list[dict]:
    rows = [{"prompt": p, "chosen": c, "rejected": r, "subset": "mixed" if i % 2 else "plain"} for i, (p, c, r) in enumerate(PAIRS)]
    return rows + [{"prompt": TIE[0], "chosen": TIE[1], "rejected": TIE[2], "preference": 0.5, "subset": "ties"}]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("perturb_eval")
    model_path = tiny_bert(root / "model", init_std=0.2)
    data = root / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in as_records()))
    model, tokenizer = load_scorer(str(model_path), device="cpu")
    return root, model_path, data, model, tokenizer


def run_eval(root, model_path, data, *extra, name="report.json"):
    out = root / name
    args = ["eval", str(model_path), "--data", str(data), "--max-length", str(MAX_LENGTH), "--device", "cpu", "--out", str(out)]
    result = CliRunner().invoke(app, args + list(extra))
    assert result.exit_code == 0, result.output
    return json.loads(out.read_text()), result.output


def accuracy(margins):
    return sum(d > 0 for d in margins) / len(margins)


def strict_pairs(data):
    pairs, _ = load_eval_pairs(data)
    return [p for p in pairs if p.preference != 0.5]


def test_perturb_all_report_matches_score_pairs_on_the_perturbed_pairs(setup):
    root, model_path, data, model, tok = setup
    report, output = run_eval(root, model_path, data, "--perturb", "all", "--perturb-seed", str(SEED))
    rob = report["robustness"]
    # The JSON report sorts its keys; `names` keeps the registry order.
    assert rob["names"] == list(TRANSFORMS) and set(rob["transforms"]) == set(TRANSFORMS)
    assert rob["seed"] == SEED and rob["one_sided_side"] is None and rob["one_sided"] == {}
    assert (rob["pairs"], rob["strict_pairs"], rob["ties_skipped"]) == (len(PAIRS) + 1, len(PAIRS), 1)
    assert rob["max_length"] == MAX_LENGTH
    # The clean accuracy is the ordinary report's accuracy on the same strict pairs.
    assert rob["clean"]["accuracy"] == pytest.approx(report["overall"]["accuracy"])

    strict = strict_pairs(data)
    measured = []
    for name in TRANSFORMS:
        entry = rob["transforms"][name]
        covered = [pp for pp in perturb_pairs(strict, name, SEED) if pp is not None]
        assert entry["covered"] == len(covered) and entry["coverage"] == pytest.approx(len(covered) / len(strict)), name
        assert entry["description"] == TRANSFORMS[name].description
        if not covered:
            assert entry["accuracy"] is None and entry["drop"] is None, name
            continue
        perturbed = score_pairs(model, tok, [pp.pair for pp in covered], max_length=MAX_LENGTH)
        clean = score_pairs(model, tok, [pp.original for pp in covered], max_length=MAX_LENGTH)
        assert entry["accuracy"] == pytest.approx(accuracy(perturbed)), name
        assert entry["clean_accuracy"] == pytest.approx(accuracy(clean)), name
        assert entry["drop"] == pytest.approx(accuracy(clean) - accuracy(perturbed)), name
        flips = sum((c > 0) != (p > 0) for c, p in zip(clean, perturbed)) / len(covered)
        assert entry["flip_rate"] == pytest.approx(flips), name
        assert sum(s["n"] for s in entry["subsets"].values()) == len(covered)
        measured.append(entry)
    # Every family is exercised by these pairs: prose noise, formatting, code and math.
    for name in ("char_swap", "plain_to_markdown", "markdown_to_plain", "code_minify", "math_boxed_to_answer", "math_answer_to_boxed"):
        assert rob["transforms"][name]["covered"] > 0, name
    assert rob["summary"]["transforms_measured"] == len(measured)
    assert rob["summary"]["mean_drop"] == pytest.approx(sum(e["drop"] for e in measured) / len(measured))
    # The table: one row per transformation.
    assert "robustness" in output and all(name in output for name in ("char_swap", "verbose_wrap", "MEAN"))


def test_one_sided_flip_rates_match_a_direct_computation(setup):
    root, model_path, data, model, tok = setup
    report, output = run_eval(root, model_path, data, "--perturb", "all", "--one-sided", "rejected", "--perturb-seed", str(SEED))
    rob = report["robustness"]
    # "all" means the quality-neutral transformations in the one-sided test, on the side asked for only.
    assert set(rob["one_sided"]) == {n for n, t in TRANSFORMS.items() if t.neutral}
    strict = strict_pairs(data)
    base = score_pairs(model, tok, strict, max_length=MAX_LENGTH)
    for name, entry in rob["one_sided"].items():
        assert set(entry) == {"description", "rejected"}, name
        side = entry["rejected"]
        covered = [pp for pp in one_sided_pairs(strict, name, "rejected", SEED) if pp is not None]
        assert side["covered"] == len(covered), name
        assert all(pp.changed == ("rejected",) for pp in covered)
        if not covered:
            assert side["flip_rate"] is None
            continue
        margins = score_pairs(model, tok, [pp.pair for pp in covered], max_length=MAX_LENGTH)
        before = [base[pp.index] for pp in covered]
        flips = [(b > 0) != (d > 0) for b, d in zip(before, margins)]
        assert side["flip_rate"] == pytest.approx(sum(flips) / len(covered)), name
        assert side["to_wrong"] == sum(b > 0 and d <= 0 for b, d in zip(before, margins)), name
        assert side["to_right"] == sum(b <= 0 and d > 0 for b, d in zip(before, margins)), name
        assert side["accuracy"] == pytest.approx(accuracy(margins)), name
    assert "one-sided: only the rejected answer changed" in output


def test_named_transforms_run_one_sided_as_given(setup):
    root, model_path, data, _, _ = setup
    report, _ = run_eval(root, model_path, data, "--perturb", "char_swap,add_quotes", "--one-sided", "chosen", name="named.json")
    rob = report["robustness"]
    assert rob["names"] == ["char_swap", "add_quotes"] and set(rob["transforms"]) == {"char_swap", "add_quotes"}
    # Named explicitly, a transformation that is not quality-neutral (typos) still runs one-sided.
    assert set(rob["one_sided"]) == {"char_swap", "add_quotes"}
    assert all(set(e) == {"description", "chosen"} for e in rob["one_sided"].values())
    assert rob["one_sided"]["add_quotes"]["chosen"]["covered"] == len(PAIRS)


def test_reward_cache_scores_each_text_once_and_matches_score_pairs(setup):
    _, _, data, model, tok = setup
    strict = strict_pairs(data)
    cache = RewardCache(model, tok, max_length=MAX_LENGTH)
    margins, truncated = cache.margins(strict)
    assert margins == pytest.approx(score_pairs(model, tok, strict, max_length=MAX_LENGTH), abs=1e-5)
    assert len(cache) == 2 * len(strict) and truncated == [False] * len(strict)
    cache(strict)
    assert len(cache) == 2 * len(strict)  # nothing scored again
    # One-sided: only the changed answer is new.
    covered = [pp for pp in one_sided_pairs(strict, "add_quotes", "rejected") if pp is not None]
    cache([pp.pair for pp in covered])
    assert len(cache) == 2 * len(strict) + len(covered)


def test_robustness_function_on_in_memory_pairs(setup):
    _, _, _, model, tok = setup
    pairs = [EvalPair([{"role": "user", "content": p}], c, r) for p, c, r in PAIRS]
    rob = evaluate_robustness(model, tok, pairs, ["word_delete"], seed=0, max_length=MAX_LENGTH)
    assert list(rob["transforms"]) == ["word_delete"] and rob["transforms"]["word_delete"]["covered"] == len(PAIRS)
    with pytest.raises(ValueError, match="chosen or rejected"):
        evaluate_robustness(model, tok, pairs, "all", one_sided="both", max_length=MAX_LENGTH)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--perturb", "char_swap,typo_storm"], "unknown transformation 'typo_storm'"),
        (["--perturb", "all", "--one-sided", "left"], "must be chosen or rejected"),
        (["--one-sided", "rejected"], "--one-sided needs --perturb"),
    ],
)
def test_bad_options_fail_clearly(setup, extra, message):
    root, model_path, data, _, _ = setup
    result = CliRunner().invoke(app, ["eval", str(model_path), "--data", str(data), "--device", "cpu", *extra])
    assert result.exit_code == 2
    assert message in result.output
