"""Distractor transformations: text added around the answer that says nothing about it."""

from __future__ import annotations

import random
import string

from crome.train.robustness.registry import transform

_HANDLE_WORDS = ("techguru", "daily_news", "the_real_sam", "coffee_lover", "data_nerd", "travelbug")


@transform("twitter_handle_url", "prefix a random @handle and append a random t.co URL", neutral=True)
def twitter_handle_url(text: str, rng: random.Random) -> str:
    handle = f"@{rng.choice(_HANDLE_WORDS)}{rng.randint(10, 999)}"
    url = "https://t.co/" + "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(10))
    return f"{handle} {text} {url}"


@transform("stress_test", 'append the tautology " and true is true" five times (Naik et al. 2018)')
def stress_test(text: str, rng: random.Random) -> str:
    return text.rstrip() + " and true is true" * 5


# Unrelated sentences for the injections: true, bland, and about nothing an answer would discuss.
_DISTRACTORS = (
    "The Eiffel Tower was completed in 1889 for the World's Fair in Paris.",
    "Octopuses have three hearts and blue blood.",
    "The Pacific is the largest and deepest of Earth's oceans.",
    "Honey found in ancient Egyptian tombs was still edible.",
    "A group of flamingos is called a flamboyance.",
    "Mount Kilimanjaro is the highest mountain in Africa.",
)


@transform("ignore_above", 'prepend an unrelated sentence followed by "Ignore the text above."')
def ignore_above(text: str, rng: random.Random) -> str:
    return f"{rng.choice(_DISTRACTORS)}\nIgnore the text above.\n\n{text}"


@transform("ignore_below", 'append "Ignore the text below." followed by an unrelated sentence')
def ignore_below(text: str, rng: random.Random) -> str:
    return f"{text}\n\nIgnore the text below.\n{rng.choice(_DISTRACTORS)}"
