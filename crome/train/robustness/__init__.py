r"""Robustness of a reward model to meaning-preserving transformations (after reWordBench, Wu et al. 2025).

`crome eval MODEL --data PATH --perturb all` applies each transformation to both answers of every
RewardBench-style pair it fits, scores the copies and reports accuracy per transformation next to
the clean accuracy on the same pairs (the drop). The one-sided mode applies a quality-neutral
change to one answer only and reports how often the ranking flips: a robust RM keeps its order.

Every transformation is a small pure function `(text, rng) -> text` in the `TRANSFORMS` registry,
with a one-line description and an `applies(text)` filter. Its random choices come from a
`random.Random` seeded by (seed, pair content, transformation name); each side gets its own
generator from that one seed, so a template choice (preamble, handle, header) is the same on both
answers of a pair while noise positions depend only on each text. Word-level noise never touches
code, inline code, URLs, links or math. Code is a fenced block or, in an answer without fences,
the whole answer or a run of code paragraphs (RM-Bench's plain variants, RewardBench's hep-*
answers): Python is recognised by `ast`, C-family code by its shape; code transformations edit
Python and C-family code only (languages whose comment syntax they know) and leave the program the
same (Python: same AST; C-family: same tokens less comments).

A pair is covered by a transformation when at least one text changes; a side it does not fit is
left as it is. Ties (preference 0.5) have no right order and are left out of the report.

| transform | applies to | what it does |
|---|---|---|
| `add_quotes` | any answer | wrap the answer in double quotes |
| `punct_spaces` | answers with prose | put spaces around punctuation in prose (decimals and list markers kept) |
| `twitter_handle_url` | any answer | prefix a random @handle and append a random t.co URL |
| `stress_test` | any answer | append the tautology " and true is true" five times (Naik et al. 2018) |
| `ignore_above` | any answer | prepend an unrelated sentence followed by "Ignore the text above." |
| `ignore_below` | any answer | append "Ignore the text below." followed by an unrelated sentence |
| `char_swap` | answers with prose | swap two adjacent letters in 5% of prose words (at least one) |
| `char_insert` | answers with prose | insert a random letter into 5% of prose words (at least one) |
| `char_delete` | answers with prose | delete one letter from 5% of prose words (at least one) |
| `char_substitute` | answers with prose | replace one letter with another in 5% of prose words (at least one) |
| `word_delete` | answers with prose | delete 5% of prose words (at least one) |
| `homoglyphs` | answers with prose | swap Latin letters for Cyrillic look-alikes in 5% of prose words (at least one) |
| `plain_to_markdown` | plain multi-sentence answers | add a header and turn each sentence into a bullet |
| `markdown_to_plain` | markdown answers | drop headers, bullets, bold and rules; code fences stay |
| `verbose_wrap` | any answer | add a "Sure! Here's ..." preamble and an "I hope this helps!" closing |
| `code_minify` | answers with code | drop comments and blank lines (C-family: indentation too); code stays valid |
| `code_comments` | answers with code | add a comment at the top of each code block and prefix existing comments with "Note:" |
| `math_boxed_to_answer` | answers with \boxed{} | unbox the final \boxed{X} and end with "# Answer\n\nX" (PRM800K style) |
| `math_answer_to_boxed` | answers with a final answer | turn "# Answer\n\nX" or "the answer is X" into $\boxed{X}$ |

Public API:
    TRANSFORMS, Transform, transform (decorator), resolve_names("all" | "a,b"), markdown_table()
    perturb_pairs(pairs, name, seed) -> list[PerturbedPair | None]
    one_sided_pairs(pairs, name, side, seed) -> list[PerturbedPair | None]
    ranking_flips(clean_margins, perturbed_margins) -> float
    robustness_report(score_fn, pairs, names, seed) -> JSON-serialisable dict
`score_fn(list[EvalPair]) -> list[float]` returns d = r(chosen) - r(rejected) per pair (EvalPair from
`crome.train.pairs`), e.g. `lambda ps: score_pairs(model, tokenizer, ps)` from `crome.train.evaluate`.

Modules: `registry` (Transform, TRANSFORMS, the decorator, names, the table); one per family of
transformations, each registering into the registry: `formatting`, `noise`, `distractors`, `code`,
`maths`; `detect` (where code is, which language) and `spans` (prose vs protected spans) for
them; `report` (applying transformations to pairs, the report).
"""

from __future__ import annotations

# Importing the family modules registers their transformations (in registry.ORDER, whatever the import order).
from crome.train.robustness import code, distractors, formatting, maths, noise  # noqa: F401
from crome.train.robustness.detect import BRACES_LANGS, PYTHON_LANGS, CodeBlock, code_blocks, has_code, is_python, looks_like_braces_code
from crome.train.robustness.formatting import is_markdown, is_plain_multi_sentence
from crome.train.robustness.maths import last_boxed
from crome.train.robustness.noise import HOMOGLYPHS, NOISE_RATE
from crome.train.robustness.registry import ORDER, TRANSFORMS, Target, Transform, markdown_table, resolve_names, transform
from crome.train.robustness.report import (
    SIDES,
    PerturbedPair,
    Side,
    one_sided_pairs,
    pair_seed,
    perturb_pairs,
    ranking_flips,
    robustness_report,
)
from crome.train.robustness.spans import has_prose

__all__ = [
    "BRACES_LANGS", "HOMOGLYPHS", "NOISE_RATE", "ORDER", "PYTHON_LANGS", "SIDES", "TRANSFORMS", "CodeBlock",
    "PerturbedPair", "Side", "Target", "Transform", "code_blocks", "has_code", "has_prose", "is_markdown",
    "is_plain_multi_sentence", "is_python", "last_boxed", "looks_like_braces_code", "markdown_table",
    "one_sided_pairs", "pair_seed", "perturb_pairs", "ranking_flips", "resolve_names", "robustness_report",
    "transform",
]  # fmt: skip
