"""The one small interface every oracle (rules, openai, gemini) implements.

The generation logic never talks to a provider: it hands an `OracleRequest` to a `generate`
callable that already carries the cache (the run store), the limiter and the retries, and gets
an `OracleResponse` back. Tests swap in a fake.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, ClassVar, Literal, Protocol, runtime_checkable

from pydantic import BaseModel

from crome.schemas.hashing import stable_hash

# ok: parsed output present. The rest are recorded as what they are and never retried forever.
Status = Literal["ok", "refused", "blocked", "truncated", "invalid", "unsupported", "error"]


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


class SystematicOracleError(RuntimeError):
    """An error that will hit every call (bad key, unknown model): stop the run at once."""


@runtime_checkable
class Oracle(Protocol):
    provider: ClassVar[str]
    model: str
    # What the backend can do, declared rather than discovered by failing.
    supports_upgrade: ClassVar[bool]
    supports_safety: ClassVar[bool]

    @property
    def name(self) -> str: ...

    async def agenerate(self, request: OracleRequest) -> OracleResponse: ...


Generate = Callable[[OracleRequest], Awaitable[OracleResponse]]
