"""Oracles are found by a model string through a registry: `rules`, `openai:MODEL`, `gemini:MODEL`."""

from __future__ import annotations

import importlib
from typing import Any

from crome.builder.oracles.base import Oracle

# provider -> "module:Class"; imported lazily so `rules` never imports the provider SDKs.
REGISTRY: dict[str, str] = {
    "rules": "crome.builder.oracles.rules:RulesOracle",
    "openai": "crome.builder.oracles.llm.openai:OpenAIOracle",
    "gemini": "crome.builder.oracles.llm.gemini:GeminiOracle",
}


def parse_oracle_spec(spec: str) -> tuple[str, str]:
    """'openai:gpt-4o-mini' -> ('openai', 'gpt-4o-mini'); 'rules' -> ('rules', 'rules')."""
    provider, _, model = spec.partition(":")
    provider = provider.strip().lower()
    if provider not in REGISTRY:
        raise ValueError(f"unknown oracle {spec!r}: expected one of rules, openai:MODEL, gemini:MODEL")
    if provider != "rules" and not model:
        raise ValueError(f"oracle {spec!r} needs a model, e.g. {provider}:{'gpt-4o-mini' if provider == 'openai' else 'gemini-2.0-flash'}")
    return provider, model or "rules"


def oracle_class(provider: str) -> type | None:
    """The registered class of a provider (its declared capabilities without making one), or None."""
    target = REGISTRY.get(provider)
    if target is None:
        return None
    module_name, _, cls_name = target.partition(":")
    return getattr(importlib.import_module(module_name), cls_name)


def get_oracle(spec: str, **options: Any) -> Oracle:
    provider, model = parse_oracle_spec(spec)
    cls = oracle_class(provider)
    return cls(model=model, **options)
