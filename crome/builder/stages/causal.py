"""Stage 3: causal augmentations. Degrade the chosen answer on a rubric where it is strong, upgrade the
rejected answer on one where it is weak; each rewrite changes that rubric and nothing else.

Selection (the paper leaves it open): per source pair up to `max_attributes` rubrics are drawn with a
seeded RNG from those on which at least one requested intervention applies (chosen strong for
degrade, rejected weak for upgrade); on each drawn rubric every applicable intervention is made.
Rubrics the oracle declares it cannot intervene on (safety for `rules`) are not drawn, and a
requested intervention the oracle cannot make at all (upgrade for `rules`) is recorded as an
`unsupported` rejection instead of being faked.
"""

from __future__ import annotations

import asyncio
import re
from typing import Iterable, Sequence

from crome.builder.stages.base import PlannedCall, Stage, conversation_text, directions, failure_detail, pair_rng, prefetch, wants_causal
from crome.builder.stages.rate import assumed_rubrics
from crome.builder.stages.records import Candidate, PairContext
from crome.schemas import SourcePair
from crome.schemas.calls import estimate_tokens

SAFETY_RUBRICS = {"safety", "harmlessness", "harm_avoidance"}
REWRITE_OVERHEAD = 60  # tokens a rewrite adds to the answer's own length (its `change` note)
DONOR_DRAWS = 20
_WORD = re.compile(r"\w+", re.UNICODE)


def _word_jaccard(a: str, b: str) -> float:
    wa, wb = set(_WORD.findall(a.lower())), set(_WORD.findall(b.lower()))
    return len(wa & wb) / len(wa | wb) if wa | wb else 1.0


def draw_donor(ctx: PairContext, pool: Sequence[PairContext], rng, max_similarity: float) -> PairContext | None:
    """Another source pair whose last user turn shares few words with ctx's (word-set Jaccard), or None.

    Kept exactly as it was when IQN used it (threshold: the run's `neutral_max_similarity`, over
    word sets): the donor text is part of every rewrite request's context, hence of its cache key,
    and a different draw would re-send (and re-pay) every rewrite of an existing LLM run. IQN draws
    moved to `neutral.Drawer` (content similarity, draw groups).
    """
    if len(pool) < 2:
        return None
    for _ in range(DONOR_DRAWS):
        other = pool[rng.randrange(len(pool))]
        text = other.pair.prompt_text
        if other.pair.source_id == ctx.pair.source_id or text == ctx.pair.prompt_text:
            continue
        if _word_jaccard(ctx.pair.prompt_text, text) < max_similarity:
            return other
    return None


def select_attributes(ctx: PairContext, directions: list[str], k: int, seed: int, supports_safety: bool) -> list[str]:
    def applies(name: str) -> bool:
        if not supports_safety and name in SAFETY_RUBRICS:
            return False
        return ("degrade" in directions and ctx.ratings.get("chosen", {}).get(name) == "strong") or (
            "upgrade" in directions and ctx.ratings.get("rejected", {}).get(name) == "weak"
        )

    eligible = [r.name for r in ctx.rubrics if applies(r.name)]
    rng = pair_rng(seed, ctx.pair.source_id, "attributes")
    return rng.sample(eligible, min(k, len(eligible)))


class CausalStage(Stage):
    """Rewrites for the drawn rubrics go to `ctx.rewrites`; failed calls become rejections."""

    name = "causal"
    tasks = ("degrade", "upgrade")

    def donor(self, ctx: PairContext) -> str:
        """An answer written for an unrelated prompt (relevance interventions of the rules oracle)."""
        rng = pair_rng(self.options.seed, ctx.pair.source_id, "donor")
        other = draw_donor(ctx, self.env.pool, rng, self.options.neutral_max_similarity)
        return other.pair.chosen.content if other is not None else ""

    def prepare(self, batch: Sequence[PairContext]) -> None:
        """The first donor draw of each pair of the batch (later draws, rarely needed, are fetched one by one)."""
        pool = self.env.pool
        if len(pool) >= 2:
            seed = self.options.seed
            prefetch(pool, (pair_rng(seed, c.pair.source_id, "donor").randrange(len(pool)) for c in batch if wants_causal(c.pair, self.options)))

    async def __call__(self, ctx: PairContext) -> bool:
        caps, seed, k = self.env.capabilities, self.options.seed, self.options.max_attributes
        wanted = list(self.options.causal)
        if not caps.upgrade and "upgrade" in wanted:
            ctx.reject_pair("causal", "unsupported", "the oracle cannot write upgrades (rules); no upgrade pairs", augmentation="upgrade")
        wanted = directions(self.options, caps)
        if not caps.safety and any(r.name in SAFETY_RUBRICS for r in ctx.rubrics):
            ctx.reject_pair("causal", "unsupported", "the oracle cannot intervene on safety; rubric not drawn", attribute="safety")
        # The whole seeded order: the first k are used; a rubric the oracle cannot intervene on for this
        # answer (every job `unsupported`) is replaced by the next one, so k is reached when it can be.
        order = select_attributes(ctx, wanted, len(ctx.rubrics), seed, caps.safety)
        if not order:
            ctx.reject_pair("causal", "no_eligible_rubric", f"no rubric rated for {'/'.join(wanted) or 'any intervention'}")
            return False

        conversation = conversation_text(ctx.pair.prompt)
        by_name = {r.name: r for r in ctx.rubrics}
        donor: list[str] = []

        def jobs_for(name: str) -> list[tuple[str, str, str]]:
            jobs = []
            for direction, side in (("degrade", "chosen"), ("upgrade", "rejected")):
                want = "strong" if direction == "degrade" else "weak"
                if direction in wanted and ctx.ratings.get(side, {}).get(name) == want:
                    jobs.append((name, direction, side))
            return jobs

        async def one(name: str, direction: str, side: str):
            if not donor:
                donor.append(self.donor(ctx))
            answer = getattr(ctx.pair, side).content
            others = [r.model_dump() for r in ctx.rubrics if r.name != name]
            resp = await self.ask(
                direction,
                {"prompt": conversation, "answer": answer, "rubric": by_name[name].model_dump(), "other_rubrics": others},
                {"prompt": ctx.pair.prompt_text, "answer": answer, "rubric": name, "donor": donor[0], "seed": seed},
            )
            return name, direction, side, resp

        results = []
        used = 0
        queue = list(order)
        while queue and used < k:
            active, queue = queue[: k - used], queue[k - used :]
            batch = await asyncio.gather(*(one(*j) for name in active for j in jobs_for(name)))
            results.extend(batch)
            used += len({name for name, _, _, resp in batch if resp.status != "unsupported"})

        for name, direction, side, resp in results:
            if not resp.ok:
                reason = "unsupported" if resp.status == "unsupported" else f"oracle_{resp.status}"
                ctx.reject_pair("causal", reason, failure_detail(resp), augmentation=direction, attribute=name)
                continue
            rewrite = resp.parsed.rewrite  # type: ignore[union-attr]
            original = getattr(ctx.pair, side).content
            chosen, rejected = (original, rewrite) if direction == "degrade" else (rewrite, original)
            ctx.rewrites.append(
                Candidate(
                    source=ctx.pair,
                    kind="causal",
                    augmentation=direction,
                    attribute=name,
                    prompt=list(ctx.pair.prompt),
                    chosen=chosen,
                    rejected=rejected,
                    template=self.env.templates[direction],
                    original_answer=original,
                    rewrite=rewrite,
                )
            )
        return bool(ctx.rewrites)

    def planned(self, pair: SourcePair) -> Iterable[PlannedCall]:
        """Upper bound: every drawn rubric (up to the assumed count) gets every requested intervention."""
        if not wants_causal(pair, self.options):
            return
        rubrics = assumed_rubrics()
        conversation = conversation_text(pair.prompt)
        for direction in directions(self.options, self.env.capabilities):
            answer = pair.chosen.content if direction == "degrade" else pair.rejected.content
            request = self.request(direction, {"prompt": conversation, "answer": answer, "rubric": rubrics[0], "other_rubrics": rubrics[1:]}, {})
            for _ in range(min(self.options.max_attributes, len(rubrics))):
                yield PlannedCall(request, exact=False, output_tokens=estimate_tokens(answer) + REWRITE_OVERHEAD)
