"""What every LLM stage shares: turning a template and variables into a request and asking."""

from __future__ import annotations

from typing import Any

from crome.builder.oracles.base import Generate
from crome.schemas.calls import OracleRequest, OracleResponse
from crome.schemas import Message


def conversation_text(messages: list[Message]) -> str:
    """The prompt as the oracle reads it: one turn alone is its text; several are labelled turns."""
    if len(messages) == 1:
        return messages[0].content
    return "\n\n".join(f"[{m.role}]\n{m.content}" for m in messages)


async def ask(generate: Generate, template: Any, variables: dict[str, Any], context: dict[str, Any]) -> OracleResponse:
    request = OracleRequest(
        task=template.name,
        template=template.spec,
        template_sha256=template.sha256,
        messages=tuple(template.render(**variables)),
        output_model=template.output_model,
        temperature=template.temperature,
        max_output_tokens=template.max_output_tokens,
        context=context,
    )
    return await generate(request)


def failure_detail(resp: OracleResponse) -> str:
    text = resp.error or resp.status
    return f"{resp.status} after {resp.attempts} attempt(s): {text}"[:500]
