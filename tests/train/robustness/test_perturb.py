"""Robustness transformations: each on real answers (RM-Bench code/chat, UltraFeedback math), determinism, the report."""

from __future__ import annotations

import ast
import io
import json
import random
import re
import shutil
import subprocess
import textwrap
import tokenize
import unicodedata
from pathlib import Path

import pytest

import crome.train.robustness as perturb
from crome.train.robustness import code as code_family
from crome.train.robustness import distractors, formatting, noise, spans
from crome.schemas import SourcePair
from crome.schemas.messages import user
from crome.train.pairs import EvalPair
from crome.train.robustness import (
    HOMOGLYPHS,
    TRANSFORMS,
    Transform,
    code_blocks,
    markdown_table,
    one_sided_pairs,
    perturb_pairs,
    ranking_flips,
    resolve_names,
    robustness_report,
)
from paths import SHARED_DATA

SHARED = SHARED_DATA
RM_BENCH = SHARED / "rm-bench"
UF = SHARED / "ultrafeedback-binarized-sample" / "train_clean.jsonl"
needs_shared = pytest.mark.skipif(not (RM_BENCH / "code_filtered.json").exists() or not UF.exists(), reason="../shared/data not present")

WORD = re.compile(r"[^\W\d_]+")


def run(name: str, text: str, seed: int = 0) -> str:
    t = TRANSFORMS[name]
    assert t.applies(text), f"{name} should apply"
    return t(text, random.Random(seed))


def pair(chosen: str, rejected: str, *, prompt: str = "q", preference: float = 1.0, subset: str = "s") -> EvalPair:
    return EvalPair([{"role": "user", "content": prompt}], chosen, rejected, preference, subset)


@pytest.fixture(scope="module")
def real() -> dict[str, str]:
    """A few real answers: RM-Bench code (markdown variant, fenced) and chat, UltraFeedback math."""
    if not (RM_BENCH / "code_filtered.json").exists() or not UF.exists():
        pytest.skip("../shared/data not present")
    code = {d["task_id"]: d for d in json.loads((RM_BENCH / "code_filtered.json").read_text())}
    chat = next(d for d in json.loads((RM_BENCH / "chat_filtered.json").read_text()) if d["prompt"] == "What type of soil is suitable for cactus?")
    uf = [json.loads(line) for line in UF.read_text().splitlines()]
    return {
        "python_md": code["Python/1"]["chosen"][2],
        "python_plain": code["Python/1"]["chosen"][0],
        "cpp_md": code["CPP/8"]["chosen"][2],
        "rust_md": code["Rust/0"]["chosen"][2],
        "chat_plain": chat["chosen"][1],
        "chat_md": chat["chosen"][2],
        "math_79": next(r["chosen"] for r in uf if "The answer is 79." in r["chosen"]),
        "math_boxed": next(r["chosen"] for r in uf if "\\boxed{" in r["chosen"]),
    }


def body(text: str, i: int = 0) -> str:
    b = code_blocks(text)[i]
    return text[b.start : b.end]


def comments(code: str) -> list[str]:
    return [t.string for t in tokenize.generate_tokens(io.StringIO(code).readline) if t.type == tokenize.COMMENT]


# ---------------------------------------------------------------- registry


def test_registry_has_every_transformation_of_the_issue_each_documented_in_one_line():
    wanted = {
        "add_quotes", "punct_spaces", "twitter_handle_url", "stress_test", "ignore_above", "ignore_below", "char_swap",
        "char_insert", "char_delete", "char_substitute", "word_delete", "homoglyphs", "plain_to_markdown",
        "markdown_to_plain", "verbose_wrap", "code_minify", "code_comments", "math_boxed_to_answer", "math_answer_to_boxed",
    }  # fmt: skip
    assert wanted <= set(TRANSFORMS)
    for name, t in TRANSFORMS.items():
        assert t.name == name and t.description and "\n" not in t.description and t.target in ("answer", "prompt", "both")
    # The docstring's table (for the README) is the registry's own, so the two cannot drift apart.
    assert markdown_table() in perturb.__doc__
    assert all(f"| `{name}` |" in markdown_table() for name in TRANSFORMS)


def test_resolve_names():
    assert resolve_names("all") == list(TRANSFORMS) == resolve_names(None)
    assert resolve_names("homoglyphs, add_quotes,homoglyphs") == ["homoglyphs", "add_quotes"]
    with pytest.raises(ValueError, match="'nope'.*known: all, add_quotes"):
        resolve_names("add_quotes,nope")


# ---------------------------------------------------------------- controlled


def test_wrappers_and_injections_keep_the_answer_whole():
    text = "Paris is the capital of France."
    assert run("add_quotes", text) == f'"{text}"'
    assert run("stress_test", text + "\n") == text + " and true is true" * 5
    tw = run("twitter_handle_url", text)
    assert re.fullmatch(r"@[a-z_]+\d{2,3} " + re.escape(text) + r" https://t\.co/[A-Za-z0-9]{10}", tw)
    above = run("ignore_above", text)
    assert above.endswith("\nIgnore the text above.\n\n" + text) and above.split("\n")[0] in distractors._DISTRACTORS
    below = run("ignore_below", text)
    assert below.startswith(text + "\n\nIgnore the text below.\n") and below.split("\n")[-1] in distractors._DISTRACTORS
    wrapped = run("verbose_wrap", "  " + text + "\n")
    pre, middle, close = wrapped.split("\n\n")
    assert middle == text and pre in formatting._PREAMBLES and close.startswith("I hope this helps!")


def test_punct_spaces_pads_prose_punctuation_but_not_numbers_lists_or_code():
    text = "Pi is 3.14, roughly; see (this)!\n1. First item: 1,000 at 10:30.\nRun `a.b(c)` or see https://x.org/a?b=1."
    assert run("punct_spaces", text) == (
        "Pi is 3.14 , roughly ; see ( this )!\n1. First item : 1,000 at 10:30 .\nRun `a.b(c)` or see https://x.org/a?b=1."
    )


@needs_shared
def test_punct_spaces_on_a_real_answer_keeps_every_word(real):
    out = run("punct_spaces", real["chat_plain"])
    assert re.findall(r"\w+", out) == re.findall(r"\w+", real["chat_plain"])
    assert not re.search(r"[A-Za-z][,.;:!?]", out) and " , " in out and " . " in out


# ---------------------------------------------------------------- naturalistic noise


def _one_swap(a: str, b: str) -> bool:
    d = [i for i in range(len(a)) if a[i] != b[i]]
    return len(a) == len(b) and len(d) == 2 and d[1] == d[0] + 1 and a[d[0]] == b[d[1]] and a[d[1]] == b[d[0]]


def _one_insert(a: str, b: str) -> bool:
    return len(b) == len(a) + 1 and any(b[:i] + b[i + 1 :] == a for i in range(len(b)))


def _one_substitution(a: str, b: str) -> bool:
    return len(a) == len(b) and sum(x != y for x, y in zip(a, b)) == 1


CHAR_NOISE = {
    "char_swap": _one_swap,
    "char_insert": _one_insert,
    "char_delete": lambda a, b: _one_insert(b, a),
    "char_substitute": _one_substitution,
}


@needs_shared
@pytest.mark.parametrize("name", sorted(CHAR_NOISE))
def test_char_noise_edits_five_percent_of_words_once_each(real, name):
    text = real["chat_plain"]
    out = run(name, text, seed=3)
    before, after = WORD.findall(text), WORD.findall(out)
    assert len(before) == len(after)  # no word vanished or split: only letters were edited
    changed = [(a, b) for a, b in zip(before, after) if a != b]
    eligible = sum(len(w) >= 3 for w in before)
    assert len(changed) == max(1, round(0.05 * eligible)) and eligible > 40
    assert all(CHAR_NOISE[name](a, b) for a, b in changed)
    # Everything but the edited words is untouched: same layout and punctuation.
    assert WORD.sub("W", out) == WORD.sub("W", text)


def test_noise_never_touches_code_urls_or_math():
    text = (
        "Install it with `pip install requests` and read https://docs.python-requests.org/en/latest/ first. "
        "The mean is $\\frac{a+b}{2}$ for both values.\n\n```python\nresponse = requests.get(url)\n```\n"
        "Then print the response and check the status code carefully before parsing anything."
    )
    kept = ["`pip install requests`", "https://docs.python-requests.org/en/latest/", "$\\frac{a+b}{2}$", "```python\nresponse = requests.get(url)\n```"]
    for name in ("char_swap", "char_insert", "char_delete", "char_substitute", "word_delete", "homoglyphs", "punct_spaces"):
        for seed in range(20):
            out = run(name, text, seed)
            assert out != text and all(k in out for k in kept), (name, seed)


def test_whole_answer_code_has_no_prose_to_noise():
    code = "def add(a, b):\n    return a + b\n"
    assert not any(TRANSFORMS[n].applies(code) for n in ("char_swap", "word_delete", "homoglyphs", "punct_spaces"))


@needs_shared
def test_word_delete_drops_five_percent_of_words_and_keeps_the_rest_in_order(real):
    text = real["chat_plain"]
    out = run("word_delete", text, seed=1)
    before, after = WORD.findall(text), WORD.findall(out)
    assert len(before) - len(after) == max(1, round(0.05 * len(before)))
    it = iter(before)
    assert all(w in it for w in after)  # a subsequence: nothing reordered or altered
    assert "  " not in out


@needs_shared
def test_homoglyphs_look_the_same_but_are_other_characters(real):
    text = real["chat_plain"]
    out = run("homoglyphs", text, seed=2)
    assert out != text and len(out) == len(text)
    back = {v: k for k, v in HOMOGLYPHS.items()}
    assert "".join(back.get(c, c) for c in out) == text  # the visual skeleton is unchanged
    assert unicodedata.normalize("NFKC", out) != text  # and NFKC does not fold it back: a real attack
    assert {c for c in out if ord(c) > 127} <= set(HOMOGLYPHS.values())
    changed = [a for a, b in zip(WORD.findall(text), WORD.findall(out)) if a != b]
    assert len(changed) == max(1, round(0.05 * len(spans._prose_words(text, 1, noise._HOMOGLYPH_WORD_RE))))


# ---------------------------------------------------------------- formatting


@needs_shared
def test_plain_to_markdown_bullets_every_sentence_under_a_header(real):
    text = real["chat_plain"]
    out = run("plain_to_markdown", text)
    header, *rest = out.split("\n")
    assert header in formatting._HEADERS
    bullets = [line for line in rest if line]
    assert bullets and all(line.startswith("- ") for line in bullets)
    assert " ".join(b[2:] for b in bullets) == " ".join(text.split())
    assert perturb.is_markdown(out)


@needs_shared
def test_plain_to_markdown_applies_only_to_plain_multi_sentence_prose(real):
    t = TRANSFORMS["plain_to_markdown"]
    assert t.applies(real["chat_plain"]) and t.applies(real["math_79"])
    assert not t.applies(real["chat_md"])  # already markdown
    assert not t.applies(real["python_md"])  # has a code fence
    assert not t.applies("Just one sentence here.")
    assert not t.applies("def f(x):\n    return x\n")


@needs_shared
def test_markdown_to_plain_strips_markup_and_keeps_words_and_code(real):
    md = real["chat_md"]
    out = run("markdown_to_plain", md)
    assert "**" not in out and not re.search(r"^\s*(#+|[-*])\s", out, re.M)
    assert WORD.findall(out) == WORD.findall(md)
    assert not TRANSFORMS["markdown_to_plain"].applies(out) and not TRANSFORMS["markdown_to_plain"].applies(real["chat_plain"])
    code = run("markdown_to_plain", real["python_md"])
    assert body(code) == body(real["python_md"]) and "```python\n" in code


def test_markdown_to_plain_exact():
    md = "## Steps ##\n\n- **Mix** the soil.\n  * Add sand.\n\n---\n\n1. **Water** weekly.\n\n```c\n// - not a bullet\n```\nUse C# here."
    assert run("markdown_to_plain", md) == "Steps\n\nMix the soil.\nAdd sand.\n\n\n\n1. Water weekly.\n\n```c\n// - not a bullet\n```\nUse C# here."


# ---------------------------------------------------------------- code


@needs_shared
def test_code_minify_python_drops_comments_and_blank_lines_and_keeps_the_program(real):
    md = real["python_md"]
    out = run("code_minify", md)
    old, new = body(md), body(out)
    assert comments(old) and not comments(new)
    assert "\n\n" not in new and new.startswith("from typing import List\ndef separate_paren_groups")
    assert ast.dump(ast.parse(new)) == ast.dump(ast.parse(old))  # the same program, not just valid code
    assert out[: code_blocks(out)[0].start] == md[: code_blocks(md)[0].start]  # prose untouched


@needs_shared
def test_code_comments_python_adds_and_rewords_comments_only(real):
    md = real["python_md"]
    out = run("code_comments", md, seed=5)
    new = body(out)
    assert new.split("\n")[0] in {f"# {h}" for h in code_family._CODE_HEADERS}
    assert "# Note: Example usage:" in new and "# Note: Output: ['()', '(())', '(()())']" in new
    assert ast.dump(ast.parse(new)) == ast.dump(ast.parse(body(md)))


@needs_shared
def test_code_minify_cpp_drops_comments_blank_lines_and_indentation(real):
    md = real["cpp_md"]
    old, new = body(md), body(run("code_minify", md))
    assert "//" in old and "//" not in new
    assert all(line and line == line.strip() for line in new.splitlines())
    assert 'printf("Sum: %d, Product: %d\\n", result1[0], result1[1]);' in new
    tokens = lambda code: re.findall(r"\w+|[^\w\s]", code)  # noqa: E731
    assert tokens(new) == tokens(re.sub(r"//[^\n]*", "", old))


@needs_shared
@pytest.mark.skipif(shutil.which("g++") is None, reason="g++ not installed")
def test_transformed_cpp_still_compiles(real, tmp_path):
    def compiles(code: str) -> bool:
        src = tmp_path / "a.cpp"
        src.write_text("#include <cstdio>\n" + code)  # the answer uses printf without including it
        return subprocess.run(["g++", "-fsyntax-only", str(src)], capture_output=True).returncode == 0

    assert compiles(body(real["cpp_md"]))
    for name in ("code_minify", "code_comments"):
        assert compiles(body(run(name, real["cpp_md"]))), name


@needs_shared
def test_code_comments_cpp_and_rust(real):
    cpp = body(run("code_comments", real["cpp_md"]))
    assert cpp.split("\n")[0] in {f"// {h}" for h in code_family._CODE_HEADERS}
    assert "#include <numeric> // Note: For std::accumulate" in cpp and "    // Note: Initialize sum to 0 and product to 1" in cpp
    rust = body(run("code_minify", real["rust_md"]))
    assert "// Output" not in rust and 'println!("{}", has_close_elements(numbers, threshold));' in rust


def test_comment_markers_inside_strings_are_not_comments():
    rust = '```rust\nfn pick<\'a>(s: &\'a str) -> &\'a str {\n    let u = "http://x.org // kept"; // dropped\n    let c = \'"\';\n    s\n}\n```'
    out = run("code_minify", rust)
    assert 'let u = "http://x.org // kept";\nlet c = \'"\';\ns\n}' in out and "dropped" not in out
    js = "```js\nconst a = 'it // stays'; /* gone */ const b = `multi\n\n  line // stays`;\n```"
    assert "const a = 'it // stays';   const b = `multi\n\n  line // stays`;" in run("code_minify", js)
    py = '```python\ndef f():\n    s = """keep\n\n    # this line"""  # drop\n\n    return s + "#no"\n```'
    out = run("code_minify", py)
    assert body(out) == 'def f():\n    s = """keep\n\n    # this line"""\n    return s + "#no"\n'


def test_whole_answer_code_without_fences_is_code():
    # RewardBench's hep-python answers are bare function bodies, indented.
    body_only = "    # walk the list\n    for i, x in enumerate(xs):\n\n        if x < 0:  # negative\n            return i\n    return -1\n"
    assert code_blocks(body_only)[0].kind == "python"
    out = run("code_minify", body_only)
    assert out == "    for i, x in enumerate(xs):\n        if x < 0:\n            return i\n    return -1\n"
    assert ast.dump(ast.parse(textwrap.dedent(out))) == ast.dump(ast.parse(textwrap.dedent(body_only)))
    c = "int add(int a, int b) {\n    // sum\n    return a + b;\n}\n"
    assert code_blocks(c)[0].kind == "braces" and run("code_minify", c) == "int add(int a, int b) {\nreturn a + b;\n}\n"


@needs_shared
def test_unfenced_code_inside_prose_is_found_edited_as_code_and_shielded_from_noise(real):
    # RM-Bench's plain variants write the code between prose paragraphs with no fence.
    text = real["python_plain"]
    (block,) = code_blocks(text)
    code = text[block.start : block.end]
    assert block.kind == "python" and code.startswith("from typing import List") and code.endswith("# Output: ['()', '(())', '(()())']")
    out = run("code_minify", text)
    assert out[: block.start] == text[: block.start] and out.endswith(text[block.end :])
    (new,) = code_blocks(out)
    assert ast.dump(ast.parse(out[new.start : new.end])) == ast.dump(ast.parse(code)) and not comments(out[new.start : new.end])
    for seed in range(10):
        for name in ("char_swap", "word_delete", "homoglyphs", "punct_spaces"):
            noisy = run(name, text, seed)
            assert code in noisy and noisy != text, (name, seed)


def test_labels_latex_and_set_notation_are_not_code():
    for text in (
        "Answer: yes",
        "Output: No\n\nExplanation: the premise says nothing about it.",
        "\\[\n\\text{Total} = 8 \\text{ hours} + x\n\\]",
        "The sets are:\n\nSet1 = {1, 2, 9}\nSet2 = {16, 11}",
        "Ingredients:\n\n    200g of beef liver\n    Flour, for dredging",
    ):
        assert not TRANSFORMS["code_comments"].applies(text), text
    assert has_prose_everywhere("Answer: yes") and has_prose_everywhere("    200g of beef liver\n    Flour, for dredging")


def has_prose_everywhere(text: str) -> bool:
    return spans._prose(text) == [(0, len(text))]


def test_code_transforms_skip_prose_and_languages_without_known_comments():
    for text in ("Use a loop; then return the sum.", "```bash\n# list files\nls -la\n```", '```\n{\n  "a": 1,\n  "b": [2, 3]\n}\n```'):
        assert not TRANSFORMS["code_minify"].applies(text) and not TRANSFORMS["code_comments"].applies(text)


# ---------------------------------------------------------------- math


@needs_shared
def test_math_answer_to_boxed_boxes_the_final_number_in_place(real):
    text = real["math_79"]
    out = run("math_answer_to_boxed", text)
    assert out == text.replace("The answer is 79.", "The answer is $\\boxed{79}$.")
    assert not TRANSFORMS["math_answer_to_boxed"].applies(out)  # already boxed
    assert run("math_boxed_to_answer", out).endswith("The answer is $79$.\nConfidence: 95%\n\n# Answer\n\n79")


@needs_shared
def test_math_boxed_to_answer_keeps_the_value(real):
    text = real["math_boxed"]
    out = run("math_boxed_to_answer", text)
    assert "\\boxed" not in out and out.endswith("\n\n# Answer\n\n0.57") and "is $0.57$." in out
    assert out[: text.index("\\boxed")] == text[: text.index("\\boxed")]


def test_math_prm800k_answer_format_both_ways():
    prm = "The angles sum to $180^\\circ$, so $x = 76^\\circ$.\n\n# Answer\n\n76^\\circ"
    boxed = run("math_answer_to_boxed", prm)
    assert boxed == "The angles sum to $180^\\circ$, so $x = 76^\\circ$.\n\n$\\boxed{76^\\circ}$"
    nested = "So $y = \\boxed{\\frac{1}{2}}$ exactly."
    assert run("math_boxed_to_answer", nested) == "So $y = \\frac{1}{2}$ exactly.\n\n# Answer\n\n\\frac{1}{2}"
    assert run("math_answer_to_boxed", "So the final answer is 25%.") == "So the final answer is $\\boxed{25\\%}$."
    t = TRANSFORMS["math_answer_to_boxed"]
    assert not t.applies("My confidence for this answer is 95%.") and not t.applies("The answer is Sentence A.")
    assert not TRANSFORMS["math_boxed_to_answer"].applies("No box here: \\boxed{unclosed")


# ---------------------------------------------------------------- pairs, determinism, one-sided


PLAIN = "Water the cactus every two weeks in summer. Let the soil dry out completely between waterings."
PLAIN2 = "Cacti need bright light and little water. Too much water rots the roots quickly."


def test_perturb_pairs_is_deterministic_and_independent_of_order_and_of_the_other_pairs():
    pairs = [pair(PLAIN, PLAIN2, prompt="q1"), pair(PLAIN2, PLAIN, prompt="q2"), pair("Yes.", "No.", prompt="q3")]
    a = perturb_pairs(pairs, "char_substitute", seed=0)
    assert a == perturb_pairs(pairs, "char_substitute", seed=0)
    b = perturb_pairs(pairs[::-1], "char_substitute", seed=0)
    assert [x.pair.chosen for x in a] == [x.pair.chosen for x in b[::-1]]
    c = perturb_pairs(pairs, "char_substitute", seed=1)
    assert [x.pair.chosen for x in a] != [x.pair.chosen for x in c]
    # The two answers draw from equal generators: a template choice is the same on both sides.
    for name in ("verbose_wrap", "twitter_handle_url", "ignore_above"):
        for x in perturb_pairs(pairs, name, seed=7):
            assert x.pair.chosen.replace(x.original.chosen, "") == x.pair.rejected.replace(x.original.rejected, "")


def test_coverage_skips_pairs_the_transformation_does_not_fit():
    code = "```python\n# add\nx = 1 + 2\n```"
    pairs = [pair(PLAIN, PLAIN2), pair(code, PLAIN), pair(code, code + "\n")]
    out = perturb_pairs(pairs, "code_minify")
    assert out[0] is None  # neither answer has code
    assert out[1].changed == ("chosen",) and out[1].pair.rejected == PLAIN and out[1].index == 1
    assert out[2].changed == ("chosen", "rejected") and out[2].pair.prompt == pairs[2].prompt


def test_accepts_source_pairs_and_dicts():
    sp = SourcePair.make([user("How do I water a cactus?")], PLAIN, PLAIN2, row=0, subset="chat")
    row = {"prompt": "How?", "chosen": [{"role": "assistant", "content": PLAIN}], "rejected": PLAIN2}
    a, b = perturb_pairs([sp, row], "add_quotes")
    assert a.pair.chosen == f'"{PLAIN}"' and a.pair.subset == "chat" and a.pair.prompt[-1]["content"] == "How do I water a cactus?"
    assert b.pair.rejected == f'"{PLAIN2}"'


def test_prompt_target_rewrites_the_last_user_turn_only():
    shout = Transform("shout", "upper-case the question", lambda t, rng: t.upper(), lambda t: True, target="prompt")
    p = EvalPair([{"role": "user", "content": "first"}, {"role": "assistant", "content": "ok"}, {"role": "user", "content": "why?"}], "a", "b")
    (out,) = perturb_pairs([p], shout)
    assert out.changed == ("prompt",) and [m["content"] for m in out.pair.prompt] == ["first", "ok", "WHY?"]
    assert p.prompt[-1]["content"] == "why?"  # the input is not mutated
    with pytest.raises(ValueError, match="no one-sided form"):
        one_sided_pairs([p], shout)


def test_one_sided_changes_only_the_named_side():
    pairs = [pair(PLAIN, PLAIN2)]
    (r,) = one_sided_pairs(pairs, "verbose_wrap", side="rejected")
    assert r.changed == ("rejected",) and r.pair.chosen == PLAIN and PLAIN2 in r.pair.rejected
    (c,) = one_sided_pairs(pairs, "verbose_wrap", side="chosen")
    assert c.changed == ("chosen",) and c.pair.rejected == PLAIN2
    with pytest.raises(ValueError, match="side"):
        one_sided_pairs(pairs, "verbose_wrap", side="both")


def test_ranking_flips():
    assert ranking_flips([1.0, 2.0, -1.0, 0.5], [0.5, -2.0, 1.0, 0.0]) == 0.75  # d = 0 counts as not preferring chosen
    assert ranking_flips([1.0], [3.0]) == 0.0
    with pytest.raises(ValueError, match="2 clean margins but 1"):
        ranking_flips([1.0, 2.0], [1.0])
    with pytest.raises(ValueError):
        ranking_flips([], [])


# ---------------------------------------------------------------- the report, with toy scorers of known bias


class Counting:
    """A score_fn with a known bias, recording each call's size."""

    def __init__(self, side_score):
        self.side_score = side_score
        self.calls: list[int] = []

    def __call__(self, pairs):
        self.calls.append(len(pairs))
        return [self.side_score(p.chosen) - self.side_score(p.rejected) for p in pairs]


def length_pairs() -> list[EvalPair]:
    added_max = max(map(len, formatting._PREAMBLES)) + max(map(len, formatting._CLOSINGS)) + 4
    long = PLAIN + " " + "Use a pot with a drainage hole and a gritty mix. " * 12
    assert len(long) - len(PLAIN2) > added_max  # far longer than any wrapper: no flip possible
    return [
        pair(long.strip(), PLAIN2, subset="a"),  # right by a wide margin
        pair(PLAIN, PLAIN2, subset="a"),  # right by a few characters
        pair(PLAIN2, PLAIN, subset="b"),  # wrong by a few characters
        pair(PLAIN, PLAIN2, preference=0.5, subset="b"),  # a tie: no right order
    ]


def test_report_length_scorer_wrappers_on_both_sides_change_nothing_one_sided_flips_close_pairs():
    pairs = length_pairs()
    assert 0 < len(PLAIN) - len(PLAIN2) < min(map(len, formatting._PREAMBLES)) + min(map(len, formatting._CLOSINGS))
    score = Counting(len)
    report = robustness_report(score, pairs, ["verbose_wrap", "stress_test", "add_quotes"], seed=0, one_sided=["verbose_wrap"])
    assert json.loads(json.dumps(report)) == report
    assert (report["pairs"], report["strict_pairs"], report["ties_skipped"]) == (4, 3, 1)
    assert report["clean"] == {"accuracy": 2 / 3}
    for name in ("verbose_wrap", "stress_test", "add_quotes"):
        e = report["transforms"][name]
        assert (e["covered"], e["coverage"], e["both_sides_changed"]) == (3, 1.0, 3)
        assert (e["accuracy"], e["clean_accuracy"], e["drop"], e["flip_rate"]) == (2 / 3, 2 / 3, 0.0, 0.0)
        assert e["subsets"] == {
            "a": {"n": 2, "accuracy": 1.0, "clean_accuracy": 1.0, "drop": 0.0},
            "b": {"n": 1, "accuracy": 0.0, "clean_accuracy": 0.0, "drop": 0.0},
        }
    sided = report["one_sided"]["verbose_wrap"]
    # Padding the rejected answer overturns the close right pair, never the wide one; padding the chosen one fixes the wrong pair.
    assert sided["rejected"] == {"covered": 3, "flip_rate": 1 / 3, "to_wrong": 1, "to_right": 0, "accuracy": 1 / 3, "clean_accuracy": 2 / 3}
    assert sided["chosen"] == {"covered": 3, "flip_rate": 1 / 3, "to_wrong": 0, "to_right": 1, "accuracy": 1.0, "clean_accuracy": 2 / 3}
    assert report["summary"] == {"transforms_measured": 3, "mean_accuracy": 2 / 3, "mean_drop": 0.0}
    # One scoring call for the clean pairs, one per transformation, one per one-sided side: all batched.
    assert score.calls == [3, 3, 3, 3, 3, 3]


def markdown_score(text: str) -> int:
    return len(re.findall(r"^(?:#+ |- )", text, re.M))


def test_report_markdown_scorer_drops_when_markdown_is_flattened():
    pairs = [
        pair("## Care\n\n- Water rarely.\n- Give full sun.", "Water rarely. Give full sun.", subset="x"),  # right: 3 markers to 0
        pair("Water rarely. Give full sun.", "- Water rarely and give full sun.", subset="x"),  # wrong: 0 to 1
        pair("Yes.", "No.", subset="y"),  # wrong: a tie in markers, and neither side fits either transformation
    ]
    score = Counting(markdown_score)
    report = robustness_report(score, pairs, "markdown_to_plain,plain_to_markdown", seed=0)
    flat = report["transforms"]["markdown_to_plain"]
    assert (flat["covered"], flat["both_sides_changed"], flat["accuracy"], flat["clean_accuracy"], flat["drop"]) == (2, 0, 0.0, 0.5, 0.5)
    assert flat["flip_rate"] == 0.5
    fancy = report["transforms"]["plain_to_markdown"]
    # The right pair loses its edge (3 vs 3), the wrong one gains one (3 vs 1): accuracy unchanged, both flipped.
    assert (fancy["covered"], fancy["accuracy"], fancy["clean_accuracy"], fancy["drop"], fancy["flip_rate"]) == (2, 0.5, 0.5, 0.0, 1.0)
    assert report["clean"]["accuracy"] == 1 / 3
    # Both are quality-neutral, so the one-sided mode runs for both by default.
    assert report["one_sided"]["plain_to_markdown"]["chosen"]["to_right"] == 1
    assert report["one_sided"]["plain_to_markdown"]["rejected"]["to_wrong"] == 1
    assert report["one_sided"]["markdown_to_plain"]["chosen"] == {
        "covered": 1, "flip_rate": 1.0, "to_wrong": 1, "to_right": 0, "accuracy": 0.0, "clean_accuracy": 1.0,
    }  # fmt: skip
    # Flattening the wrong pair's rejected bullet only ties the markers (0 vs 0), and a tie is no win.
    assert report["one_sided"]["markdown_to_plain"]["rejected"] == {
        "covered": 1, "flip_rate": 0.0, "to_wrong": 0, "to_right": 0, "accuracy": 0.0, "clean_accuracy": 0.0,
    }  # fmt: skip


def test_report_uncovered_transformation_and_bad_scorers():
    pairs = [pair(PLAIN, PLAIN2)]
    report = robustness_report(Counting(len), pairs, ["math_boxed_to_answer"], one_sided=[])
    e = report["transforms"]["math_boxed_to_answer"]
    assert (e["covered"], e["accuracy"], e["drop"]) == (0, None, None) and report["one_sided"] == {}
    assert report["summary"]["transforms_measured"] == 0
    with pytest.raises(ValueError, match="returned 0 margins for 1 pairs"):
        robustness_report(lambda ps: [], pairs, ["add_quotes"])
    with pytest.raises(ValueError, match="no strict pairs"):
        robustness_report(Counting(len), [pair(PLAIN, PLAIN2, preference=0.5)], ["add_quotes"])


@needs_shared
def test_report_on_real_rm_bench_pairs_covers_every_kind_of_transformation():
    code = json.loads((RM_BENCH / "code_filtered.json").read_text())[:6]
    chat = json.loads((RM_BENCH / "chat_filtered.json").read_text())[:6]
    pairs = [pair(d["chosen"][i], d["rejected"][i], prompt=d["prompt"], subset=d["subset"]) for d in code + chat for i in range(3)]
    report = robustness_report(Counting(len), pairs, "all", seed=0)
    covered = {n: e["covered"] for n, e in report["transforms"].items()}
    assert all(covered[n] == len(pairs) for n in ("add_quotes", "stress_test", "verbose_wrap", "char_swap", "homoglyphs"))
    assert covered["code_minify"] > 0 and covered["markdown_to_plain"] > 0 and covered["plain_to_markdown"] > 0
    assert report["transforms"]["stress_test"]["drop"] == 0.0  # equal padding cannot move a length scorer
