"""Irrelevant Query Neutrals (IQN) and, optionally, RRM-style cross-prompt pairs: ordered stages after dedup.

IQN: an answer pair of a source pair (its original pair or one of its causal pairs, among those
dedup kept) is re-attached to the prompt of another source pair. Under that prompt neither answer
addresses the question, so the pair is a tie (preference 0.5) and the two answers are put in random
order. The draws, the choices the paper leaves open:

- **Unrelated** is judged on content: the TF-IDF cosine of the two whole conversations' content
  words (`relatedness.py`) must stay below `neutral_max_similarity` (default 0.2). Measured by
  `benchmarks/iqn_threshold.py` on real prompts of ../shared/data: 45 prompts with a hand-written
  paraphrase each score 0.25 to 1.0 against it (all refused at any threshold up to 0.25; 0.2
  leaves a margin), while 20,000 random pairs of the UltraFeedback sample are refused at 0.2 in
  0.3% of cases (the few refused share a task template) and random short questions in 0.5%. The
  old measure (word-set Jaccard of the last turn, stopwords in) let 6.7% of the paraphrases through
  at 0.2 and refused 1.7% of the short questions. A lexical measure cannot see a paraphrase that
  shares no content word ("a loaf" for "bread"); none of the 45 did. Up to 20 draws are made before
  the neutral is recorded as a rejection.
- **Where irrelevant prompts come from**: every source pair belongs to one draw group, a fixed
  random set of `neutral_group_size` (default 16) to twice that minus one source pairs (by seeded
  hash of the source id, over the whole source, so every shard and a merge see the same groups); a tie's prompt is
  drawn from its own group only. A tie therefore links only pairs of one group, and a published
  test split can hold out whole groups: no prompt or answer text shared with train.
- **From kept pairs only**: the stage runs after dedup, on the pair's surviving original and causal
  rows, and the ties it makes are deduplicated in turn.
- **Independent draws**: each neutral i of a pair has its own seeded streams (how many neutrals, the
  prompt draws, the answer order), and its answer pair is chosen by rendezvous hashing over the kept
  pairs' ids, so a pair's neutrals do not change when validation keeps one rewrite more or less,
  unless the rewrite removed or added is the very one chosen.

Cross-prompt (RRM, Liu et al. 2024): the chosen answer of a pair beats an answer written for an
unrelated prompt of the same group, under the pair's own prompt (kind causal, attribute relevance).
"""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

from crome.builder.stages.base import Stage, StageEnv, pair_rng, prefetch
from crome.builder.stages.records import Candidate, PairContext
from crome.builder.stages.relatedness import Relatedness
from crome.schemas import SourcePair
from crome.schemas.hashing import stable_hash

MAX_DRAWS = 20


def conversation_document(pair: SourcePair) -> str:
    """What relatedness reads of a prompt: every turn, so a follow-up is read with what it follows."""
    return "\n".join(m.content for m in pair.prompt)


def draw_groups(pool: Sequence[PairContext], seed: int, size: int) -> dict[str, list[PairContext]]:
    """source id -> the pairs of its draw group: the pool in seeded-hash order, dealt into len // size groups.

    Dealing (k-th pair to group k mod g) makes every group hold `size` to 2 * `size` - 1 pairs, never
    a lone pair with nowhere to draw from. The groups depend only on the source and the seed.
    """
    ranked = sorted(pool, key=lambda c: stable_hash([seed, "iqn-group", c.pair.source_id]))
    n_groups = max(1, len(ranked) // max(1, size))
    groups: list[list[PairContext]] = [[] for _ in range(n_groups)]
    for k, ctx in enumerate(ranked):
        groups[k % n_groups].append(ctx)
    for g in groups:  # source order inside a group: draws do not depend on the hash order
        g.sort(key=lambda c: c.pair.source_id)
    return {c.pair.source_id: g for g in groups for c in g}


class Drawer:
    """Irrelevant prompts for a pair: from its draw group, unrelated by content.

    A build passes `groups` (source id -> a sequence of the group's pairs, read from the run store
    as drawn, the same groups `draw_groups` makes) and `documents` (every prompt of the pool, streamed
    once to fit the idf); otherwise both are made from `pool` in memory.
    """

    def __init__(self, pool: Sequence[PairContext], seed: int, group_size: int, max_similarity: float, *,
                 groups: Mapping[str, Sequence[PairContext]] | None = None, documents: Iterable[str] | None = None):
        self.max_similarity = max_similarity
        self.groups = groups if groups is not None else draw_groups(pool, seed, group_size)
        self.relatedness = Relatedness(documents if documents is not None else (conversation_document(c.pair) for c in pool))

    def first_draws(self, draws: Iterable[tuple[PairContext, object]]) -> None:
        """Have the groups load the first draw each (pair, rng) will make (the usual one: later draws are rare), at once."""
        keys = []
        for ctx, rng in draws:
            group = self.groups.get(ctx.pair.source_id, [])
            if len(group) >= 2:
                keys.append((ctx.pair.source_id, rng.randrange(len(group))))  # type: ignore[attr-defined]
        prefetch(self.groups, keys)

    def draw(self, ctx: PairContext, rng, exclude: frozenset[str] = frozenset()) -> tuple[PairContext | None, float]:
        """Another pair of ctx's group whose prompt is unrelated to ctx's (or None after MAX_DRAWS tries), and the similarity.

        `exclude` holds prompts already used for this pair, so two neutrals of one pair never share a prompt.
        """
        group = self.groups.get(ctx.pair.source_id, [])
        if len(group) < 2:
            return None, 1.0
        mine = conversation_document(ctx.pair)
        best = 1.0
        for _ in range(MAX_DRAWS):
            other = group[rng.randrange(len(group))]
            text = conversation_document(other.pair)
            if other.pair.source_id == ctx.pair.source_id or text == mine or text in exclude:
                continue
            sim = self.relatedness.similarity(mine, text)
            if sim < self.max_similarity:
                return other, sim
            best = min(best, sim)
        return None, best


def choose(pool: list[Candidate], seed: int, source_id: str, i: int) -> Candidate:
    """Rendezvous hashing: the kept pair with the lowest hash for (seed, pair, neutral i); stable as others come and go."""
    return min(pool, key=lambda c: stable_hash([seed, source_id, "neutral-base", i, c.id]))


def neutral_count(ratio: float, seed: int, source_id: str) -> int:
    rng = pair_rng(seed, source_id, "neutral-count")
    return int(ratio) + (1 if rng.random() < ratio - int(ratio) else 0)


def neutrals(ctx: PairContext, kept: list[Candidate], drawer: Drawer, *, ratio: float, seed: int) -> list[Candidate]:
    """IQN candidates for one source pair, from its kept original and causal pairs."""
    sid = ctx.pair.source_id
    pool = [c for c in kept if c.kind in ("original", "causal") and c.augmentation != "cross_prompt"]
    out: list[Candidate] = []
    used: set[str] = set()
    for i in range(neutral_count(ratio, seed, sid)):
        if not pool:
            ctx.reject_pair("neutral", "no_answer_pair", "no kept pair of this source to re-attach", augmentation="irrelevant_query")
            break
        base = choose(pool, seed, sid, i)
        other, sim = drawer.draw(ctx, pair_rng(seed, sid, f"neutral-prompt-{i}"), frozenset(used))
        if other is None:
            ctx.reject_pair(
                "neutral",
                "no_irrelevant_prompt",
                f"no prompt of its draw group with content similarity < {drawer.max_similarity} in {MAX_DRAWS} draws (closest {sim:.2f})",
                augmentation="irrelevant_query",
            )
            continue
        used.add(conversation_document(other.pair))
        swap = pair_rng(seed, sid, f"neutral-order-{i}").random() < 0.5
        first, second = (base.rejected, base.chosen) if swap else (base.chosen, base.rejected)
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


def cross_prompt(ctx: PairContext, drawer: Drawer, *, seed: int) -> list[Candidate]:
    rng = pair_rng(seed, ctx.pair.source_id, "cross_prompt")
    other, sim = drawer.draw(ctx, rng)
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


class _DrawStage(Stage):
    """Shares one `Drawer` per run (groups and idf are fitted once, on first use)."""

    ordered = True  # after the pair's own stages and dedup: its kept pairs are known

    def __init__(self, env: StageEnv) -> None:
        super().__init__(env)
        self._drawer: Drawer | None = None

    @property
    def drawer(self) -> Drawer:
        if self._drawer is None:
            o = self.options
            shared = self.env.shared
            documents = shared.get("documents")  # a build's: every prompt of the pool, streamed from the run store
            self._drawer = shared.get("drawer") or Drawer(self.env.pool, o.seed, o.neutral_group_size, o.neutral_max_similarity,
                                                          groups=shared.get("groups"), documents=documents() if documents else None)
            self.env.shared["drawer"] = self._drawer
        return self._drawer


class NeutralStage(_DrawStage):
    """IQN ties for every strict source pair (`neutral_ratio` per pair), from its kept pairs."""

    name = "neutral"

    def prepare(self, batch: Sequence[PairContext]) -> None:
        o = self.options
        if o.neutral_ratio > 0:
            self.drawer.first_draws(
                (ctx, pair_rng(o.seed, ctx.pair.source_id, f"neutral-prompt-{i}"))
                for ctx in batch if ctx.pair.preference == 1.0 and not ctx.pending
                for i in range(neutral_count(o.neutral_ratio, o.seed, ctx.pair.source_id))
            )

    async def __call__(self, ctx: PairContext) -> bool:
        o = self.options
        if o.neutral_ratio > 0 and ctx.pair.preference == 1.0:
            ctx.candidates.extend(neutrals(ctx, ctx.candidates, self.drawer, ratio=o.neutral_ratio, seed=o.seed))
        return True


class CrossPromptStage(_DrawStage):
    """With `--cross-prompt`: the RRM baseline's pairs."""

    name = "cross_prompt"

    def prepare(self, batch: Sequence[PairContext]) -> None:
        if self.options.cross_prompt:
            seed = self.options.seed
            self.drawer.first_draws((ctx, pair_rng(seed, ctx.pair.source_id, "cross_prompt"))
                                    for ctx in batch if ctx.pair.preference == 1.0 and not ctx.pending)

    async def __call__(self, ctx: PairContext) -> bool:
        o = self.options
        if o.cross_prompt and ctx.pair.preference == 1.0:
            ctx.candidates.extend(cross_prompt(ctx, self.drawer, seed=o.seed))
        return True
