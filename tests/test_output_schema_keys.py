"""The JSON schema of each oracle output model is part of every cache key (the provider sees it).

Changing a model's schema, its docstring (the schema's description) or a field description
included, makes every stored call of its task miss the cache: a user resuming or growing a run
pays for all of them again. That may be what a change needs; then it is a decision, made here
by updating the pinned hash and saying so in the README, never a side effect of editing a comment.
"""

from __future__ import annotations

import hashlib
import json

import pytest

from crome.schemas.calls import output_schema
from crome.schemas.oracle import Counterfactual, Ratings, Rubrics, Verdict

PINNED = {
    Counterfactual: "5c4afbb7a5073bd3",
    Ratings: "8de5db2ef1b2a98b",
    Rubrics: "1dcd176becd77999",
    Verdict: "4e5f52eb52197846",
}


@pytest.mark.parametrize("model", list(PINNED), ids=lambda m: m.__name__)
def test_output_schemas_and_so_cache_keys_do_not_change_by_accident(model):
    digest = hashlib.sha256(json.dumps(output_schema(model), sort_keys=True).encode()).hexdigest()[:16]
    assert digest == PINNED[model], (
        f"the JSON schema of {model.__name__} changed: every stored {model.__name__} call would be sent (and paid) again"
    )
