"""`--dry-run`: how many oracle calls, tokens and dollars a build would take, without calling anything.

Rubric calls are known exactly (their requests are rendered and looked up in the cache, so a
resumed run is charged only for what is missing); ratings are counted per answer; rewrites and verifications depend on the ratings, so they are counted at their upper
bound (every drawn rubric gets every requested intervention). Tokens are ~4 characters each;
output tokens use per-task guesses written below.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from crome.schemas.calls import OracleRequest
from crome.builder.stages.common import conversation_text

# Typical output sizes (tokens): a rubric list, a rating per rubric, a verdict; rewrites ~ the answer.
OUTPUT_GUESS = {"rubrics": 250, "rate": 160, "verify": 150}
ASSUMED_RUBRICS = 4


def _tokens(text_chars: int) -> int:
    return text_chars // 4 + 1


def estimate(builder, pairs, quarantined, source_info: dict[str, Any]) -> dict[str, Any]:
    cfg = builder.cfg
    t = builder.templates
    provider, model = builder.oracle.provider, builder.oracle.model
    calls: dict[str, int] = {k: 0 for k in ("rubrics", "rate", "degrade", "upgrade", "verify")}
    cached: dict[str, int] = dict(calls)
    tin: dict[str, int] = dict(calls)
    tout: dict[str, int] = dict(calls)
    dummy_rubrics = [{"name": f"rubric_{i}", "definition": "x" * 80} for i in range(ASSUMED_RUBRICS)]

    def count(task: str, messages, out_tokens: int, context: dict | None = None) -> None:
        if context is not None:  # the request is known exactly: a cached call costs nothing
            req = OracleRequest(task=task, template=t[task].spec, template_sha256=t[task].sha256, messages=tuple(messages),
                                output_model=t[task].output_model, temperature=t[task].temperature,
                                max_output_tokens=t[task].max_output_tokens, context=context)
            rec = builder.store.get_call(req.cache_key(provider, model))
            if rec is not None and rec.replayable:
                cached[task] += 1
                return
        calls[task] += 1
        tin[task] += _tokens(sum(len(m["content"]) for m in messages))
        tout[task] += out_tokens

    seen_prompts: set[str] = set()
    directions = [d for d in cfg.causal if d != "upgrade" or builder.oracle.capabilities.upgrade]
    for p in pairs:
        if p.preference != 1.0 or cfg.max_attributes == 0 or not directions:
            continue
        conv = conversation_text(p.prompt)
        if conv not in seen_prompts:
            seen_prompts.add(conv)
            count("rubrics", t["rubrics"].render(prompt=conv), OUTPUT_GUESS["rubrics"], {"prompt": p.prompt_text, "conversation": conv})
        for answer in (p.chosen.content, p.rejected.content):
            count("rate", t["rate"].render(prompt=conv, answer=answer, rubrics=dummy_rubrics), OUTPUT_GUESS["rate"])
        for direction in directions:
            answer = p.chosen.content if direction == "degrade" else p.rejected.content
            msgs = t[direction].render(prompt=conv, answer=answer, rubric=dummy_rubrics[0], other_rubrics=dummy_rubrics[1:])
            for _ in range(min(cfg.max_attributes, ASSUMED_RUBRICS)):
                count(direction, msgs, _tokens(len(answer)) + 60)
                if cfg.verify_enabled:
                    vm = t["verify"].render(prompt=conv, original=answer, rewrite=answer, rubric=dummy_rubrics[0],
                                            other_rubrics=dummy_rubrics[1:], direction=direction)
                    count("verify", vm, OUTPUT_GUESS["verify"])

    total_in, total_out = sum(tin.values()), sum(tout.values())
    cost = 0.0
    if provider != "rules":
        from crome.builder.oracles.llm.pricing import estimate_cost

        cost = estimate_cost(model, total_in, total_out, batch=cfg.batch)  # --batch: batch prices
    return {
        "status": "dry_run",
        "oracle": builder.oracle.name,
        "source": source_info,
        "source_pairs": len(pairs),
        "quarantined": len(quarantined),
        "calls": calls,
        "calls_total": sum(calls.values()),
        "cached": cached,
        "tokens": {"input": total_in, "output": total_out},
        "cost_usd": cost,
        "note": "rubric calls are exact (cached ones excluded); ratings assume 4 rubrics; rewrites and verifications are upper bounds",
    }


def print_estimate(summary: dict[str, Any], console: Console) -> None:
    t = Table(title=f"dry run: {summary['oracle']} (nothing was called)", show_header=True)
    t.add_column("task")
    t.add_column("calls", justify="right")
    for task, n in summary["calls"].items():
        t.add_row(task, f"{n:,}")
    t.add_row("total", f"{summary['calls_total']:,}")
    console.print(t)
    tok = summary["tokens"]
    cost = summary["cost_usd"]
    console.print(f"tokens: in ~{tok['input']:,} / out ~{tok['output']:,}; estimated cost: "
                  + ("unknown (model not in the price table)" if cost is None else f"${cost:.4f}"))
    console.print(summary["note"])
