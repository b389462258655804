"""Stage 5: every rewrite is checked against its original (crome.builder.stages.checks); survivors become pairs."""

from __future__ import annotations

from crome.builder.stages.base import Stage
from crome.builder.stages.checks import validate_rewrite
from crome.builder.stages.records import PairContext


class ValidateStage(Stage):
    name = "validate"

    async def __call__(self, ctx: PairContext) -> bool:
        for c in ctx.rewrites:
            # A response the oracle reported cut off never gets here (causal rejects it as oracle_truncated);
            # validation still catches a rewrite that ends mid-sentence or inside a code fence.
            result = validate_rewrite(c.original_answer or "", c.rewrite or "", cfg=self.options.validation)
            c.quality.update(result.quality_fields())
            if result.passed:
                c.checks.extend(result.passed_names())
                ctx.candidates.append(c)
            else:
                ctx.rejections.append(c.reject("validate", result.reason, result.detail[:500]))
        ctx.rewrites = []
        return True
