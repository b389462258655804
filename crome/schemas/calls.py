"""One oracle call as the contract sees it: the request a stage sends and the response it gets back.

A request is what the provider sees (rendered messages, settings, output schema) plus the
`context` an offline oracle works on directly (never rendered into text) and the `validation`
context its answer is checked with. Its cache key is the hash the run store files the call under.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from typing import Any, Iterable, Literal, Mapping

from pydantic import BaseModel

from crome.schemas.hashing import stable_hash

# ok: parsed output present. The rest are recorded as what they are and never retried forever.
Status = Literal["ok", "refused", "blocked", "truncated", "invalid", "unsupported", "error"]

CHARS_PER_TOKEN = 4  # a rough average for English text under BPE tokenizers
MESSAGE_OVERHEAD_TOKENS = 4  # role markers and separators per chat message


def estimate_tokens(text: str) -> int:
    """Tokens in `text` before a provider counts them: characters / 4, rounded up."""
    return (len(text) + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN


def estimate_input_tokens(messages: Iterable[Mapping[str, str]]) -> int:
    """Prompt size of chat messages: their text plus a few tokens of role markers each."""
    return sum(estimate_tokens(m.get("content") or "") + MESSAGE_OVERHEAD_TOKENS for m in messages)


@functools.lru_cache(maxsize=None)
def output_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The JSON Schema of an output model, generated once per model (pydantic takes ~1 ms each time)."""
    return model.model_json_schema()


@dataclass(frozen=True)
class OracleRequest:
    task: str  # rubrics | rate | upgrade | degrade | verify
    template: str  # name@version, e.g. "degrade@v1"
    template_sha256: str
    messages: tuple[dict[str, str], ...]  # rendered chat messages [{role, content}]
    output_model: type[BaseModel]
    temperature: float = 0.0
    max_output_tokens: int = 2048
    # Data an offline oracle works on directly (never rendered into text, still part of the key):
    # e.g. the answer to rewrite, the rubric, the side (chosen/rejected), a donor text.
    context: dict[str, Any] = field(default_factory=dict)
    # What an answer is checked against beyond its schema: pydantic validation context for the output
    # model (a verdict's `{"other_rubrics": [names]}`). Not part of the cache key: it only restates what
    # the rendered messages already ask, and a stored answer is checked against it again when replayed.
    validation: dict[str, Any] = field(default_factory=dict)

    def cache_key(self, provider: str, model: str) -> str:
        """Hash of provider, model, rendered messages, generation settings and output schema."""
        return stable_hash(
            {
                "provider": provider,
                "model": model,
                "messages": list(self.messages),
                "settings": {"temperature": self.temperature, "max_output_tokens": self.max_output_tokens},
                "schema": output_schema(self.output_model),
                "context": self.context,
            }
        )

    @property
    def estimated_input_tokens(self) -> int:
        return estimate_input_tokens(self.messages)


@dataclass
class OracleResponse:
    status: Status
    parsed: BaseModel | None = None
    raw: str = ""  # raw response text (never contains request headers or keys)
    input_tokens: int = 0
    output_tokens: int = 0
    latency_s: float = 0.0
    attempts: int = 1
    error: str | None = None
    cached: bool = False

    @property
    def ok(self) -> bool:
        return self.status == "ok" and self.parsed is not None

    def replace(self, **kw: Any) -> "OracleResponse":
        return dataclasses.replace(self, **kw)


__all__ = ["OracleRequest", "OracleResponse", "Status", "estimate_input_tokens", "estimate_tokens", "output_schema"]
