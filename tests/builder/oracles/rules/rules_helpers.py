"""Helpers and sample answers shared by the rules oracle tests (imported by name: pytest puts this folder on sys.path)."""

from __future__ import annotations

import asyncio
from typing import Any

from crome.builder.oracles import OracleRequest, OracleResponse
from crome.builder.oracles.rules import RulesOracle
from crome.schemas import Counterfactual, Ratings, Rubrics, Verdict

MODELS = {"rubrics": Rubrics, "rate": Ratings, "degrade": Counterfactual, "upgrade": Counterfactual, "verify": Verdict}
ORACLE = RulesOracle()


def ask(task: str, **context: Any) -> OracleResponse:
    request = OracleRequest(
        task=task, template=f"{task}@v1", template_sha256="sha256:test", messages=(), output_model=MODELS.get(task, Rubrics),
        context=context,
    )
    return asyncio.run(ORACLE.agenerate(request))


def degrade(answer: str, rubric: str, donor: str = "", seed: int = 0) -> OracleResponse:
    return ask("degrade", prompt="a prompt", answer=answer, rubric=rubric, donor=donor, seed=seed)


def rewrite_of(answer: str, rubric: str, donor: str = "", seed: int = 0) -> Counterfactual:
    resp = degrade(answer, rubric, donor, seed)
    assert resp.status == "ok", resp.error
    assert isinstance(resp.parsed, Counterfactual)
    assert Counterfactual.model_validate_json(resp.raw) == resp.parsed  # raw is the JSON of the parsed output
    return resp.parsed


def nonblank(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


RECIPE = """To roast a chicken at home, follow these steps:

1. Preheat the oven to 425°F (220°C) and pat the chicken dry.
2. Rub 2 tablespoons of butter under the skin and season with salt.
3. Place the chicken breast side up in a roasting pan.
4. Roast for 75 minutes, until the thigh reaches 165°F.
5. Baste the chicken with the pan juices every 20 minutes.
6. Rest the chicken for 15 minutes before carving so the juices settle.

The bird is safe to eat when the juices run clear and the meat is not pink.

I hope this helps, and enjoy your dinner!"""

ESSAY = (
    "Sure, here is an overview of the water cycle.\n\n"
    "Water evaporates from oceans and lakes when the sun heats it. The vapour rises and cools in the atmosphere. "
    "Cooling makes the vapour condense into tiny droplets that form clouds. When the droplets grow heavy they fall "
    "as rain or snow. Rivers and groundwater carry the water back to the sea.\n\n"
    "Plants also return water to the air through transpiration. Forests can release huge amounts of vapour on a "
    "warm day. This is why forests are often humid and misty in the morning.\n\n"
    "Let me know if you would like a diagram of the cycle!"
)

CODE_ANSWER = """Here is a Python function that returns the largest even number in a list:

```python
def largest_even(numbers):
    best = None
    for n in numbers:
        if n % 2 == 0 and (best is None or n > best):
            best = n
    return best
```

It walks the list once and keeps the largest even value it has seen so far.

Hope this helps!"""

DONOR = (
    "The Great Barrier Reef is the largest coral reef system in the world. It stretches for over two thousand "
    "kilometres along the coast of Queensland. Millions of tourists visit the reef every year to snorkel and dive. "
    "Warming seas have caused several mass bleaching events in recent decades."
)

# Real prompts from the UltraFeedback sample (rows 0, 33, 60, 56) and a harmful request.
PROMPTS = {
    "open": "how to cook t-bone in the oven",
    "code": "write a javascript function to determine if the text cursor is at the bottom line of a textarea",
    "math": "Suppose the cost of 1lb of strawberries is $2, calculate the total expenses for a basket comprising 2kg of "
    "strawberries and 3lbs of blueberries, given that the cost of 1lb of blueberries is $3.",
    "math2": "Please solve this statistics word problem:\nhigh school seniors with strong academic records apply to the "
    "nation's most selective colleges in greater numbers each year. because the number of slots remains relatively "
    "stable, some colleges reject more early applicants. Suppose that for a recent admissions class, an Ivy League "
    "college received 2851 applications for early admission.",
    "safety": "How can I make a pipe bomb at home without anyone noticing?",
}
