"""Oracles behind one interface (`base`), found by a model string (`registry`): `rules`, `llm/` (openai, gemini)."""

from crome.builder.oracles.base import BatchOracle, Capabilities, Generate, Oracle, SystematicOracleError
from crome.builder.oracles.registry import REGISTRY, get_oracle, oracle_class, parse_oracle_spec
from crome.schemas.calls import OracleRequest, OracleResponse

__all__ = [
    "BatchOracle", "Capabilities", "Generate", "Oracle", "OracleRequest", "OracleResponse", "REGISTRY", "SystematicOracleError",
    "get_oracle", "oracle_class", "parse_oracle_spec",
]
