"""The `rules` oracle: offline and deterministic, the default that makes the quickstart and CI run with no key.

It reads `request.context` (never the rendered prompt) and answers each task by heuristics:

- rubrics (`rubrics`): a generic rubric set refined by the prompt type (code, math, safety-sensitive, open-ended);
- rate (`oracle`): follows the source label (see `rate`);
- degrade (`oracle`, one module per intervention): honest single-attribute edits on the text model
  of `doc` that keep the answer's surface (opening and closing sentence, markdown, lists, code
  fences, and its length where the rubric allows): `completeness` drops the later part of the
  body, `factuality` (also correctness) perturbs numbers, units, negations and comparisons,
  `relevance` swaps part of the middle for text of an unrelated answer, `clarity` scrambles
  sentence and list order;
- upgrade, verify, safety and unknown rubrics: `unsupported`, never faked.

Every draw comes from `random.Random(seed ^ hash(answer, rubric))`, so the same request always
gets the same rewrite, whatever the order of calls.
"""

from crome.builder.oracles.rules.doc import Unsupported
from crome.builder.oracles.rules.factuality import perturb_numbers
from crome.builder.oracles.rules.oracle import ALIASES, INTERVENTIONS, RulesOracle, degrade, rate
from crome.builder.oracles.rules.rubrics import RUBRIC_SETS, classify_prompt, rubrics_for

__all__ = [
    "ALIASES", "INTERVENTIONS", "RUBRIC_SETS", "RulesOracle", "Unsupported", "classify_prompt", "degrade", "perturb_numbers",
    "rate", "rubrics_for",
]
