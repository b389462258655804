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
import random
from typing import Callable

from crome.builder.oracles.base import Generate
from crome.builder.stages.records import Candidate, PairContext
from crome.builder.stages.common import ask, conversation_text, failure_detail
from crome.schemas.hashing import stable_hash

SAFETY_RUBRICS = {"safety", "harmlessness", "harm_avoidance"}


def pair_rng(seed: int, source_id: str, salt: str) -> random.Random:
    """A per-pair RNG: the same pair gets the same draws whatever the order or sharding of the run."""
    return random.Random(stable_hash([seed, source_id, salt]))


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


async def causal(
    ctx: PairContext,
    generate: Generate,
    templates: dict,
    *,
    directions: list[str],
    k: int,
    seed: int,
    supports_upgrade: bool,
    supports_safety: bool,
    donor: Callable[[PairContext], str],
) -> list[Candidate]:
    """Rewrites for the drawn rubrics, as candidates (failed calls become rejections on ctx)."""
    if not supports_upgrade and "upgrade" in directions:
        ctx.reject_pair("causal", "unsupported", "the oracle cannot write upgrades (rules); no upgrade pairs", augmentation="upgrade")
        directions = [d for d in directions if d != "upgrade"]
    if not supports_safety and any(r.name in SAFETY_RUBRICS for r in ctx.rubrics):
        ctx.reject_pair("causal", "unsupported", "the oracle cannot intervene on safety; rubric not drawn", attribute="safety")
    # The whole seeded order: the first k are used; a rubric the oracle cannot intervene on for this
    # answer (every job `unsupported`) is replaced by the next one, so k is reached when it can be.
    order = select_attributes(ctx, directions, len(ctx.rubrics), seed, supports_safety)
    if not order:
        ctx.reject_pair("causal", "no_eligible_rubric", f"no rubric rated for {'/'.join(directions) or 'any intervention'}")
        return []

    conversation = conversation_text(ctx.pair.prompt)
    by_name = {r.name: r for r in ctx.rubrics}

    def jobs_for(name: str) -> list[tuple[str, str, str]]:
        jobs = []
        for direction, side in (("degrade", "chosen"), ("upgrade", "rejected")):
            want = "strong" if direction == "degrade" else "weak"
            if direction in directions and ctx.ratings.get(side, {}).get(name) == want:
                jobs.append((name, direction, side))
        return jobs

    async def one(name: str, direction: str, side: str):
        answer = getattr(ctx.pair, side).content
        others = [r.model_dump() for r in ctx.rubrics if r.name != name]
        template = templates[direction]
        resp = await ask(
            generate,
            template,
            {"prompt": conversation, "answer": answer, "rubric": by_name[name].model_dump(), "other_rubrics": others},
            {"prompt": ctx.pair.prompt_text, "answer": answer, "rubric": name, "donor": donor(ctx), "seed": seed},
        )
        return name, direction, side, template, resp

    results = []
    used = 0
    queue = list(order)
    while queue and used < k:
        active, queue = queue[: k - used], queue[k - used :]
        batch = await asyncio.gather(*(one(*j) for name in active for j in jobs_for(name)))
        results.extend(batch)
        used += len({name for name, _, _, _, resp in batch if resp.status != "unsupported"})

    out: list[Candidate] = []
    for name, direction, side, template, resp in results:
        if not resp.ok:
            reason = "unsupported" if resp.status == "unsupported" else f"oracle_{resp.status}"
            ctx.reject_pair("causal", reason, failure_detail(resp), augmentation=direction, attribute=name)
            continue
        rewrite = resp.parsed.rewrite  # type: ignore[union-attr]
        original = getattr(ctx.pair, side).content
        chosen, rejected = (original, rewrite) if direction == "degrade" else (rewrite, original)
        out.append(
            Candidate(
                source=ctx.pair,
                kind="causal",
                augmentation=direction,
                attribute=name,
                prompt=list(ctx.pair.prompt),
                chosen=chosen,
                rejected=rejected,
                template=template,
                original_answer=original,
                rewrite=rewrite,
            )
        )
    return out
