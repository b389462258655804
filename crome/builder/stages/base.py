"""One interface for every stage: a name, the oracle tasks it sends, and `await stage(ctx)`.

A stage works on one source pair's `PairContext`: it reads what earlier stages left there, adds
candidates or rejections, and returns False when the pair should go no further through the
per-pair stages. Stages that are not `ordered` run concurrently across pairs (each pair's chain
is one coroutine, so a slow call holds up only its own pair); `ordered` stages run after every
per-pair stage is done, over the pairs in source order (dedup: the first in source order wins).
A pair waiting on a batch job or stopped by the budget (`ctx.pending`) skips the ordered stages.

`prepare(batch)` runs before a batch of pairs reaches the stage (per-pair stages: before the batch
is started; ordered stages: before it goes through them): a stage that reads the run store (draws
from the pool, the dedup index) fetches what the batch will need there in one query, instead of
one per pair. It changes no result, only how often the store is asked.

`planned(pair)` lists the calls a stage would send for a pair, for `--dry-run`: exact requests
where they can be known before the earlier stages answer, upper bounds otherwise.
"""

from __future__ import annotations

import abc
import random
from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterable, Mapping, Protocol, Sequence

from crome.builder.oracles.base import Capabilities, Generate
from crome.builder.stages.records import PairContext
from crome.builder.stages.checks import ValidationConfig
from crome.schemas import Message, SourcePair
from crome.schemas.calls import OracleRequest, OracleResponse
from crome.schemas.hashing import stable_hash


class MethodOptions(Protocol):
    """The build options the stages read (the run's `BuildConfig` has them all)."""

    seed: int
    max_attributes: int
    causal: list[str]
    verify_enabled: bool
    neutral_ratio: float
    neutral_max_similarity: float
    neutral_group_size: int
    cross_prompt: bool
    validation: ValidationConfig
    dedup_threshold: float
    neutralize_shortcuts: bool
    shortcut_phrases: list[dict[str, str]]
    shortcut_min_strength: float
    shortcut_max_per_phrase: int


@dataclass
class StageEnv:
    """What a run hands its stages, once."""

    options: MethodOptions
    generate: Generate  # carries the cache, the budget and the retries
    templates: Mapping[str, Any]  # task -> crome.prompts.Template
    capabilities: Capabilities  # of the oracle the run uses
    pool: Sequence[PairContext]  # every source pair, in source order: irrelevant prompts and donors are drawn from here
    # Run-wide state that stages listed more than once share (the dedup index, the IQN drawer), by name.
    shared: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PlannedCall:
    """A call a stage expects to send for a pair (for estimates)."""

    request: OracleRequest
    exact: bool  # the request is the one the stage will send (a cached one costs nothing)
    output_tokens: int  # expected size of the answer


class Stage(abc.ABC):
    name: ClassVar[str]
    tasks: ClassVar[tuple[str, ...]] = ()  # oracle tasks (template names) it sends
    ordered: ClassVar[bool] = False

    def __init__(self, env: StageEnv) -> None:
        self.env = env

    @property
    def options(self) -> MethodOptions:
        return self.env.options

    @abc.abstractmethod
    async def __call__(self, ctx: PairContext) -> bool:
        """Work on one pair; False stops its per-pair chain (the ordered stages still run)."""

    def planned(self, pair: SourcePair) -> Iterable[PlannedCall]:
        """The calls this stage would send for `pair` (none for stages that call no oracle)."""
        return ()

    def prepare(self, batch: Sequence[PairContext]) -> None:
        """Fetch what `batch` will read from the run store, in one go (most stages read nothing there)."""

    async def ask(self, task: str, variables: dict[str, Any], context: dict[str, Any], validation: dict[str, Any] | None = None) -> OracleResponse:
        return await self.env.generate(self.request(task, variables, context, validation))

    def request(self, task: str, variables: dict[str, Any], context: dict[str, Any], validation: dict[str, Any] | None = None) -> OracleRequest:
        """The rendered request; `validation` is what its answer must also satisfy (pydantic validation context)."""
        return self.env.templates[task].request(context=context, validation=validation, **variables)


def conversation_text(messages: list[Message]) -> str:
    """The prompt as the oracle reads it: one turn alone is its text; several are labelled turns."""
    if len(messages) == 1:
        return messages[0].content
    return "\n\n".join(f"[{m.role}]\n{m.content}" for m in messages)


def failure_detail(resp: OracleResponse) -> str:
    text = resp.error or resp.status
    return f"{resp.status} after {resp.attempts} attempt(s): {text}"[:500]


def directions(options: MethodOptions, capabilities: Capabilities) -> list[str]:
    """The interventions this run makes: those asked for that the oracle can make."""
    return [d for d in options.causal if d != "upgrade" or capabilities.upgrade]


def wants_causal(pair: SourcePair, options: MethodOptions) -> bool:
    """A strict pair with causal rewrites asked for: only those get rubrics, ratings and rewrites."""
    return pair.preference == 1.0 and bool(options.causal) and options.max_attributes > 0


def pair_rng(seed: int, source_id: str, salt: str) -> random.Random:
    """A per-pair RNG: the same pair gets the same draws whatever the order or sharding of the run."""
    return random.Random(stable_hash([seed, source_id, salt]))


def prefetch(pool: Any, keys: Iterable[Any]) -> None:
    """Ask a store-backed pool or draw group to load `keys` at once; an in-memory one has nothing to do."""
    fetch = getattr(pool, "prefetch", None)
    if fetch is not None:
        fetch(list(keys))
