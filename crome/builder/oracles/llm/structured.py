"""Structured output: JSON Schemas adapted from the pydantic models, JSON extraction, re-ask messages.

The schema always comes from `output_model.model_json_schema()`; these functions only adapt it
to what each API accepts. Whatever the server promises, the output is validated by pydantic.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from typing import Any

from pydantic import BaseModel, ValidationError

from crome.schemas.calls import output_schema

# Keywords OpenAI strict mode rejects (it supports pattern/format on strings, minItems/maxItems on
# arrays, numeric bounds); pydantic still enforces them when validating the answer.
_OPENAI_STRICT_UNSUPPORTED = frozenset(
    {"minLength", "maxLength", "minProperties", "maxProperties", "uniqueItems", "contains", "patternProperties", "propertyNames", "default", "examples"}
)
# Gemini's OpenAPI-subset `responseSchema` has no $ref, additionalProperties or const.
_GEMINI_OPENAPI_UNSUPPORTED = frozenset({"additionalProperties", "title", "$defs", "definitions", "default", "examples", "const"})

SCHEMA_INSTRUCTION = (
    "Respond with only a JSON object, no other text, that conforms to this JSON Schema:\n```json\n{schema}\n```"
)


def _resolve(schema: Any, root: dict[str, Any]) -> Any:
    """Inline every $ref (the pydantic schemas here are not recursive)."""
    if isinstance(schema, list):
        return [_resolve(s, root) for s in schema]
    if not isinstance(schema, dict):
        return schema
    if "$ref" in schema:
        target: Any = root
        for part in schema["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        merged = {**copy.deepcopy(target), **{k: v for k, v in schema.items() if k != "$ref"}}
        return _resolve(merged, root)
    return {k: (v if k in ("$defs", "definitions") else _resolve(v, root)) for k, v in schema.items()}


def _rewrite(model: type[BaseModel], drop: frozenset[str], finish) -> dict[str, Any]:
    """The model's schema with $refs inlined, `drop` keywords removed and `finish(original, out)` per node."""
    root = output_schema(model)
    schema = _resolve(root, root)

    def fix(node: Any) -> Any:
        if isinstance(node, list):
            return [fix(n) for n in node]
        if not isinstance(node, dict):
            return node
        out = {}
        for key, value in node.items():
            if key == "properties" and isinstance(value, dict):
                out[key] = {name: fix(sub) for name, sub in value.items()}  # property names are data
            elif key not in drop:
                out[key] = fix(value)
        finish(node, out)
        return out

    return fix(schema)


def openai_strict_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON Schema in the form OpenAI `strict: true` accepts.

    Every object closed (additionalProperties false) with all its properties required, $refs
    inlined, and keywords strict mode rejects dropped.
    """

    def close(node: dict[str, Any], out: dict[str, Any]) -> None:
        if out.get("type") == "object" or "properties" in out:
            out["additionalProperties"] = False
            out["required"] = list((out.get("properties") or {}).keys())

    return _rewrite(model, frozenset(_OPENAI_STRICT_UNSUPPORTED) | {"$defs", "definitions"}, close)


def gemini_json_schema(model: type[BaseModel]) -> dict[str, Any]:
    """For Gemini `response_json_schema`, which takes JSON Schema with $defs/$ref as pydantic writes it."""
    return copy.deepcopy(output_schema(model))  # the cached schema is shared: hand out a copy


def gemini_openapi_schema(model: type[BaseModel]) -> dict[str, Any]:
    """For Gemini `response_schema` (the older OpenAPI subset): refs inlined, unsupported keywords dropped."""

    def const_as_enum(node: dict[str, Any], out: dict[str, Any]) -> None:
        if "const" in node and "enum" not in out:
            out["enum"] = [node["const"]]

    return _rewrite(model, frozenset(_GEMINI_OPENAPI_UNSUPPORTED), const_as_enum)


@functools.lru_cache(maxsize=32)
def schema_instruction(model: type[BaseModel]) -> str:
    """The schema spelled out in the prompt, for servers that cannot take it as a parameter."""
    return SCHEMA_INSTRUCTION.format(schema=json.dumps(output_schema(model), ensure_ascii=False))


def with_schema_instruction(messages: list[dict[str, str]], model: type[BaseModel]) -> list[dict[str, str]]:
    """Messages with the schema instruction added to the system message (or as a new one)."""
    instruction = schema_instruction(model)
    out = [dict(m) for m in messages]
    if out and out[0].get("role") == "system":
        out[0]["content"] = f"{out[0]['content']}\n\n{instruction}"
    else:
        out.insert(0, {"role": "system", "content": instruction})
    return out


_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.DOTALL)


def extract_json(text: str) -> Any:
    """Parse the JSON in a model's answer: the whole text, else a fenced block, else the first {...}."""
    stripped = text.strip()
    try:
        return json.loads(stripped)
    except json.JSONDecodeError as exc:
        first_error = exc
    for match in _FENCE.finditer(stripped):
        try:
            return json.loads(match.group(1).strip())
        except json.JSONDecodeError:
            continue
    # Only outermost candidates: the first "{" and any "{" opening a line. Trying every "{" would
    # turn a cut-off answer into one of its inner objects and hide that the JSON is broken.
    decoder = json.JSONDecoder()
    starts = [stripped.find("{")] + [m.start() + 1 for m in re.finditer(r"\n\{", stripped)]
    for start in sorted({s for s in starts if s >= 0}):
        try:
            value, _ = decoder.raw_decode(stripped, start)
            return value
        except json.JSONDecodeError:
            continue
    raise first_error


def parse_output(text: str, model: type[BaseModel], context: dict[str, Any] | None = None) -> BaseModel:
    """Validate an answer against the output model and the request's validation `context`.

    Raises ValueError (JSON) or ValidationError; the caller re-asks with `reask_message`.
    """
    return model.model_validate(extract_json(text), context=context or None)


def describe_error(exc: Exception) -> str:
    """The validation problem in a few lines the model can act on (no URLs, no echo of huge inputs)."""
    if isinstance(exc, ValidationError):
        lines = []
        for err in exc.errors(include_url=False)[:20]:
            loc = ".".join(str(p) for p in err.get("loc", ())) or "(root)"
            lines.append(f"- {loc}: {err.get('msg')}")
        return f"{exc.error_count()} validation error(s) for {exc.title}:\n" + "\n".join(lines)
    if isinstance(exc, json.JSONDecodeError):
        return f"the answer is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
    return str(exc)


def reask_message(exc: Exception) -> str:
    return (
        "Your previous answer could not be used: "
        + describe_error(exc)
        + "\nCorrect it and answer again with only the JSON object that conforms to the schema."
    )
