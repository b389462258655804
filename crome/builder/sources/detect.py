"""The shapes a source can have, the normaliser for each, and how a row's shape is recognised."""

from __future__ import annotations

from typing import Any

from crome.builder.sources.fields import _HH_MARKER, Normaliser
from crome.builder.sources.shapes.generic import _generic
from crome.builder.sources.shapes.llmbar import _llmbar
from crome.builder.sources.shapes.rmbench import _rmbench
from crome.builder.sources.shapes.rmgallery import _rmgallery
from crome.builder.sources.shapes.sharegpt import _sharegpt

SHAPES: dict[str, str] = {
    "plain": "prompt/chosen/rejected strings",
    "conversational": "prompt/chosen/rejected message lists",
    "implicit_prompt": "chosen/rejected conversations; the prompt is their shared prefix",
    "hh_transcript": "chosen/rejected Human/Assistant transcripts; the prompt is the shared turns",
    "sharegpt": "conversations of {from, value} with chosen/rejected message objects",
    "llmbar": "input/output_1/output_2 with label 1 or 2 naming the better output",
    "rmgallery": "RM-Gallery evaluation_sample.input with outputs labelled chosen/rejected",
    "rmbench": "RM-Bench prompt with 3 chosen x 3 rejected style variants (9 pairs per prompt)",
    "mapped": "columns given by an explicit mapping",
}

NORMALISERS: dict[str, Normaliser] = {
    "plain": _generic(has_prompt=True),
    "conversational": _generic(has_prompt=True),
    "implicit_prompt": _generic(has_prompt=False),
    "hh_transcript": _generic(has_prompt=False),
    "sharegpt": _sharegpt,
    "llmbar": _llmbar,
    "rmgallery": _rmgallery,
    "rmbench": _rmbench,
}


def _detect_row(row: Any) -> str | None:
    """The shape one row looks like, or None when it does not say (null values, unknown columns)."""
    if not isinstance(row, dict):
        return None
    keys = set(row)
    if "evaluation_sample" in keys:
        return "rmgallery"
    if {"conversations", "chosen", "rejected"} <= keys:
        return "sharegpt"
    if {"input", "output_1", "output_2", "label"} <= keys:
        return "llmbar"
    if not {"chosen", "rejected"} <= keys:
        return None
    chosen = row["chosen"]
    if "prompt" in keys:
        if isinstance(chosen, list) and chosen and all(isinstance(c, str) for c in chosen):
            return "rmbench"
        if isinstance(chosen, list) or isinstance(row["prompt"], list):
            return "conversational"
        if isinstance(chosen, str):
            return "plain"
        return None
    if isinstance(chosen, str) and _HH_MARKER.search(chosen):
        return "hh_transcript"
    if isinstance(chosen, list) and chosen and isinstance(chosen[0], dict):
        return "implicit_prompt"
    return None
