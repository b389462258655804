"""Stage 5: Irrelevant Query Neutrals (IQN) and, optionally, RRM-style cross-prompt pairs.

IQN: an answer pair of a source pair (its original pair or one of its kept causal pairs, drawn
with a seeded RNG) is re-attached to the prompt of another source pair. Under that prompt neither
answer addresses the question, so the pair is a tie (preference 0.5) and the two answers are put
in random order. Candidates whose prompt is too similar to the original are skipped: similarity
is the Jaccard index of the lower-cased word sets of the two last user turns, and a draw is
accepted only below `neutral_max_similarity` (default 0.2: unrelated prompts share few words
beyond function words; paraphrases of the same question score well above it). Up to 20 draws
are made before the neutral is recorded as a rejection.

Cross-prompt (RRM, Liu et al. 2024): the chosen answer of a pair beats an answer written for an
unrelated prompt, under the pair's own prompt (kind causal, attribute relevance).
"""

from __future__ import annotations

import re
from typing import Sequence

from crome.builder.stages.base import Stage, pair_rng
from crome.builder.stages.records import Candidate, PairContext

MAX_DRAWS = 20
_WORD = re.compile(r"\w+", re.UNICODE)


def prompt_similarity(a: str, b: str) -> float:
    wa, wb = set(_WORD.findall(a.lower())), set(_WORD.findall(b.lower()))
    if not wa and not wb:
        return 1.0
    return len(wa & wb) / len(wa | wb)


def draw_irrelevant(
    ctx: PairContext, contexts: Sequence[PairContext], rng, max_similarity: float, exclude: frozenset[str] = frozenset()
) -> tuple[PairContext | None, float]:
    """Another pair whose prompt is unrelated to ctx's (or None after MAX_DRAWS tries), and the similarity.

    `exclude` holds prompts already used for this pair, so two neutrals of one pair never share a prompt.
    """
    if len(contexts) < 2:
        return None, 1.0
    best = 1.0
    for _ in range(MAX_DRAWS):
        other = contexts[rng.randrange(len(contexts))]
        text = other.pair.prompt_text
        if other.pair.source_id == ctx.pair.source_id or text == ctx.pair.prompt_text or text in exclude:
            continue
        sim = prompt_similarity(ctx.pair.prompt_text, other.pair.prompt_text)
        if sim < max_similarity:
            return other, sim
        best = min(best, sim)
    return None, best


def neutrals(ctx: PairContext, kept: list[Candidate], contexts: Sequence[PairContext], *, ratio: float, seed: int, max_similarity: float) -> list[Candidate]:
    """IQN candidates for one source pair, drawn from its kept original and causal pairs."""
    rng = pair_rng(seed, ctx.pair.source_id, "neutral")
    n = int(ratio) + (1 if rng.random() < ratio - int(ratio) else 0)
    pool = [c for c in kept if c.kind in ("original", "causal") and c.augmentation != "cross_prompt"]
    out: list[Candidate] = []
    used: set[str] = set()
    for i in range(n):
        if not pool:
            ctx.reject_pair("neutral", "no_answer_pair", "no kept pair of this source to re-attach", augmentation="irrelevant_query")
            break
        base = pool[rng.randrange(len(pool))]
        other, sim = draw_irrelevant(ctx, contexts, rng, max_similarity, frozenset(used))
        if other is None:
            ctx.reject_pair(
                "neutral",
                "no_irrelevant_prompt",
                f"no prompt with word Jaccard < {max_similarity} in {MAX_DRAWS} draws (closest {sim:.2f})",
                augmentation="irrelevant_query",
            )
            continue
        used.add(other.pair.prompt_text)
        first, second = (base.chosen, base.rejected) if rng.random() < 0.5 else (base.rejected, base.chosen)
        out.append(
            Candidate(
                source=ctx.pair,
                kind="neutral",
                augmentation="irrelevant_query",
                attribute=None,
                prompt=list(other.pair.prompt),
                chosen=first,
                rejected=second,
                preference=0.5,
                quality={"prompt_similarity": round(sim, 4)},
                checks=["irrelevant_prompt"],
            )
        )
    return out


def cross_prompt(ctx: PairContext, contexts: Sequence[PairContext], *, seed: int, max_similarity: float) -> list[Candidate]:
    rng = pair_rng(seed, ctx.pair.source_id, "cross_prompt")
    other, sim = draw_irrelevant(ctx, contexts, rng, max_similarity)
    if other is None:
        ctx.reject_pair("neutral", "no_irrelevant_prompt", f"cross-prompt: no unrelated prompt (closest {sim:.2f})", augmentation="cross_prompt")
        return []
    off_topic = other.pair.chosen.content if rng.random() < 0.5 else other.pair.rejected.content
    return [
        Candidate(
            source=ctx.pair,
            kind="causal",
            augmentation="cross_prompt",
            attribute="relevance",
            prompt=list(ctx.pair.prompt),
            chosen=ctx.pair.chosen.content,
            rejected=off_topic,
            quality={"prompt_similarity": round(sim, 4)},
            checks=["irrelevant_prompt"],
        )
    ]


class NeutralStage(Stage):
    """IQN ties for every strict source pair (`neutral_ratio` per pair), from its kept pairs."""

    name = "neutral"
    ordered = True  # after the pair's own stages: its kept pairs are known

    async def __call__(self, ctx: PairContext) -> bool:
        o = self.options
        if o.neutral_ratio > 0 and ctx.pair.preference == 1.0:
            ctx.candidates.extend(neutrals(ctx, ctx.candidates, self.env.pool, ratio=o.neutral_ratio, seed=o.seed, max_similarity=o.neutral_max_similarity))
        return True


class CrossPromptStage(Stage):
    """With `--cross-prompt`: the RRM baseline's pairs."""

    name = "cross_prompt"
    ordered = True

    async def __call__(self, ctx: PairContext) -> bool:
        o = self.options
        if o.cross_prompt and ctx.pair.preference == 1.0:
            ctx.candidates.extend(cross_prompt(ctx, self.env.pool, seed=o.seed, max_similarity=o.neutral_max_similarity))
        return True
