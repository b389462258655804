"""What the fake server saw, as the run store should see it: the cache key of a request body, repeats, billed usage.

`provider_key` re-derives a call's key from the body an OpenAI-compatible server received (model,
messages, temperature, max_tokens, the output schema it asked for) and nothing else: a key the
store holds for that body proves the key is exactly what the provider sees.
"""

from __future__ import annotations

from crome.schemas.hashing import canonical_json, stable_hash
from crome.schemas.oracle import OUTPUT_MODELS
from fake_llm_server import RequestRecord


def provider_key(record: RequestRecord) -> str:
    body = record.body
    assert record.endpoint == "openai" and record.mode == "json_schema", "derived only for OpenAI json_schema bodies"
    model = OUTPUT_MODELS[record.schema["title"]]
    return stable_hash({
        "provider": "openai", "model": body["model"],
        "messages": [{"role": m["role"], "content": m["content"]} for m in body["messages"]],
        "settings": {"temperature": body["temperature"], "max_output_tokens": body.get("max_tokens", body.get("max_completion_tokens"))},
        "schema": model.model_json_schema(), "context": {},
    })


def body_text(record: RequestRecord) -> str:
    return canonical_json(record.body)


def sent_again_after_an_answer(records: list[RequestRecord]) -> list[str]:
    """Bodies sent again after (or alongside) a request with the same body that got an answer: each a call paid twice.

    An answer is a success, a refusal, a block or a cut-off. Retries before the first answer are
    fine (those requests got no answer); identical requests in flight together are not (the first
    to arrive is answered, the second arrived after it).
    """
    first_answered: dict[str, int] = {}
    for r in records:
        if r.answered:
            first_answered.setdefault(body_text(r), r.index)
    return sorted({r.messages[-1][1][:120] for r in records if first_answered.get(body_text(r), r.index) < r.index})


def usage_returned(records: list[RequestRecord]) -> tuple[int, int]:
    """Input and output tokens of every response that reported usage: what a provider bills."""
    return sum(r.usage[0] for r in records if r.usage), sum(r.usage[1] for r in records if r.usage)
