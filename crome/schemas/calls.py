"""One oracle call as the contract sees it: the request a stage sends and the response it gets back.

A request is what the provider sees (rendered messages, settings, output schema) plus the
`context` an offline oracle works on directly (never rendered into text) and the `validation`
context its answer is checked with. Its cache key is the hash the run store files the call under:
what the provider sees and only the context fields the oracle declares it reads
(`Capabilities.context_keys`), so data an LLM never reads (a donor text, the seed) cannot make a
paid call miss the cache. A response lists every request that was sent for it (`sent`): retries
and re-asks are billed too, and the spend is their sum.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from typing import Any, Iterable, Literal, Mapping, NamedTuple

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
    # Data an offline oracle works on directly (never rendered into text): e.g. the answer to
    # rewrite, the rubric, the side (chosen/rejected), a donor text. Only the fields the oracle
    # declares it reads are part of the cache key.
    context: dict[str, Any] = field(default_factory=dict)
    # What an answer is checked against beyond its schema: pydantic validation context for the output
    # model (a verdict's `{"other_rubrics": [names]}`). Not part of the cache key: it only restates what
    # the rendered messages already ask, and a stored answer is checked against it again when replayed.
    validation: dict[str, Any] = field(default_factory=dict)

    def cache_key(self, provider: str, model: str, context_keys: Iterable[str]) -> str:
        """Hash of provider, model, rendered messages, generation settings, output schema and the context fields read.

        `context_keys` is the oracle's `Capabilities.context_keys`: an LLM oracle reads none (the
        messages are all it sees), the rules oracle the few fields its output depends on that the
        rendered text does not carry.
        """
        return stable_hash(
            {
                "provider": provider,
                "model": model,
                "messages": list(self.messages),
                "settings": {"temperature": self.temperature, "max_output_tokens": self.max_output_tokens},
                "schema": output_schema(self.output_model),
                "context": {k: self.context[k] for k in sorted(context_keys) if k in self.context},
            }
        )

    @property
    def estimated_input_tokens(self) -> int:
        return estimate_input_tokens(self.messages)


class Attempt(NamedTuple):
    """One request sent to the provider for a call, with the usage it reported: what the provider bills.

    `outcome`: ok | invalid (re-asked or given up) | refused | blocked | truncated | error (no answer:
    rate limit, server error, timeout, dropped connection, garbled body). `reported` is False when
    no usage came back: an answer's tokens are then estimated from its text, a failure's are 0.
    """

    outcome: str
    input_tokens: int = 0
    output_tokens: int = 0
    reported: bool = True


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
    # Every request sent for this response, first to last (retries and re-asks included); input_tokens
    # and output_tokens above are their sums. Empty for an oracle that sends nothing (rules) or
    # that does not itemise (then the response itself counts as one attempt).
    sent: list[Attempt] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "ok" and self.parsed is not None

    def billed(self) -> list[Attempt]:
        """The requests this response was billed for: its itemised `sent`, or itself when it has usage and no list."""
        if self.sent:
            return list(self.sent)
        if self.input_tokens or self.output_tokens:
            return [Attempt(self.status, self.input_tokens, self.output_tokens)]
        return []

    def replace(self, **kw: Any) -> "OracleResponse":
        return dataclasses.replace(self, **kw)


__all__ = ["Attempt", "OracleRequest", "OracleResponse", "Status", "estimate_input_tokens", "estimate_tokens", "output_schema"]
