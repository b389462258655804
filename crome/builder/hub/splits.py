"""A leak-free train/test split: no prompt text and no answer text of test occurs anywhere in train.

Holding out whole source pairs is not enough: an IQN tie carries one source pair's answers under
another pair's prompt, a cross-prompt pair an answer of another pair, and a source may repeat a
prompt or an answer across pairs. So rows are joined into connected groups: two rows are in one
group when they share a source pair, a prompt (the whole conversation) or an answer text, directly
or through other rows. Whole groups go to test, in the order of a seeded hash of their first source
id, as long as each brings the held-out share of source pairs closer to `test_fraction`.

What makes that possible: a build draws a tie's irrelevant prompt within a fixed random group of
about `neutral_group_size` source pairs, so groups stay that small. A run built before draw groups
(ties drawn from the whole source) forms one giant group, and publishing a test split of it fails
with a message instead of leaking.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from crome.schemas import DatasetRow
from crome.schemas.hashing import stable_hash

RULE = (
    "whole connected groups held out: rows that share a source pair, a prompt or an answer text (IQN ties and "
    "cross-prompt pairs included) are never split, so no prompt or answer text of test occurs in train"
)


class SplitError(Exception):
    """No test split can be held out without sharing text with train."""


def prompt_text(row: DatasetRow) -> str:
    """A prompt as one text: a single turn is its content, several turns their roles and contents (as JSON)."""
    if len(row.prompt) == 1:
        return row.prompt[0].content
    return json.dumps([[m.role, m.content] for m in row.prompt], ensure_ascii=False)


def row_texts(row: DatasetRow) -> list[str]:
    """The prompt text and the answer texts of a row: what a split must not share."""
    return [prompt_text(row), *(m.content for m in row.chosen), *(m.content for m in row.rejected)]


def split_score(source_id: str, seed: int) -> float:
    """A uniform draw in [0, 1) from the seed and a source pair's id alone."""
    digest = stable_hash({"split": "test", "seed": seed, "source_id": source_id}).split(":", 1)[1]
    return int(digest[:15], 16) / 16**15


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        root = self.parent.setdefault(x, x)
        while root != self.parent[root]:
            root = self.parent[root]
        while x != root:  # path compression
            self.parent[x], x = root, self.parent[x]
        return root

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def groups(rows: list[DatasetRow]) -> list[list[int]]:
    """Indices of `rows`, grouped into connected groups (shared source pair, prompt or answer text)."""
    uf = _UnionFind()
    for r in rows:
        anchor = f"s:{r.source_id}"
        for text in row_texts(r):
            uf.union(anchor, f"t:{text}")
    out: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        out.setdefault(uf.find(f"s:{r.source_id}"), []).append(i)
    return list(out.values())


@dataclass
class SplitReport:
    """What the card says about the split."""

    test_fraction: float  # asked for
    seed: int
    source_pairs: int
    test_source_pairs: int
    groups: int
    largest_group: int  # source pairs in the largest group
    shared_prompts: int  # test prompt texts found in train: 0 by construction, checked
    shared_answers: int
    rule: str = RULE

    @property
    def achieved(self) -> float:
        return self.test_source_pairs / self.source_pairs if self.source_pairs else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "achieved": round(self.achieved, 4)}


def overlap(train: list[DatasetRow], test: list[DatasetRow]) -> tuple[int, int]:
    """(test prompt texts, test answer texts) that also occur anywhere in train, as a prompt or an answer."""
    seen = {t for r in train for t in row_texts(r)}
    prompts = {prompt_text(r) for r in test}
    answers = {m.content for r in test for m in (*r.chosen, *r.rejected)}
    return len(prompts & seen), len(answers & seen)


def split_rows(rows: list[DatasetRow], test_fraction: float, seed: int) -> tuple[dict[str, list[DatasetRow]], SplitReport, list[str]]:
    """{"train": [...], "test": [...]} with no text shared between them, the report, and warnings."""
    found = groups(rows)
    sources = [sorted({rows[i].source_id for i in g}) for g in found]
    total = sum(len(s) for s in sources)
    order = sorted(range(len(found)), key=lambda k: (split_score(sources[k][0], seed), sources[k][0]))
    target = test_fraction * total
    chosen: list[int] = []
    held = 0
    for k in order:
        n = len(sources[k])
        if abs(held + n - target) < abs(held - target):
            chosen.append(k)
            held += n
    warnings: list[str] = []
    largest = max((len(s) for s in sources), default=0)
    if not chosen:
        smallest = min(order, key=lambda k: len(sources[k]))
        if len(found) < 2:
            raise SplitError(
                f"--test-fraction {test_fraction:g}: the run's {total} source pairs form one connected group (they share prompts "
                "or answers, e.g. IQN ties drawn across the whole source by a build older than draw groups): a test split "
                "would share text with train. Rebuild the run with this crome (ties drawn within --neutral-group-size groups)"
            )
        chosen, held = [smallest], len(sources[smallest])
        warnings.append(f"--test-fraction {test_fraction:g} held out no source pair of {total}; held out one group of {held}")
    if held == total:
        raise SplitError(f"--test-fraction {test_fraction:g} holds out all {total} source pairs: lower it")
    if abs(held / total - test_fraction) > 0.05 and test_fraction > 0:
        warnings.append(
            f"the test split holds {held / total:.1%} of the source pairs, not {test_fraction:g}: whole groups of connected rows "
            f"are held out and the largest has {largest} source pairs"
        )
    in_test = {i for k in chosen for i in found[k]}
    test = [r for i, r in enumerate(rows) if i in in_test]
    train = [r for i, r in enumerate(rows) if i not in in_test]
    shared_prompts, shared_answers = overlap(train, test)
    if shared_prompts or shared_answers:  # cannot happen by construction; a split that leaks is never written
        raise SplitError(f"internal error: the split shares {shared_prompts} prompt(s) and {shared_answers} answer(s) with train")
    report = SplitReport(test_fraction=test_fraction, seed=seed, source_pairs=total, test_source_pairs=held, groups=len(found),
                         largest_group=largest, shared_prompts=shared_prompts, shared_answers=shared_answers)
    return {"train": train, "test": test}, report, warnings


__all__ = ["RULE", "SplitError", "SplitReport", "groups", "overlap", "prompt_text", "row_texts", "split_rows", "split_score"]
