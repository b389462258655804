"""Versioned prompt templates: `crome/prompts/<name>/v<N>.jinja`, front matter + message blocks.

A template file is YAML front matter between `---` lines (name, version, output_schema,
temperature, max_output_tokens, description, optional choices) followed by a Jinja body made of
message blocks, one per chat message, in order: `{% block system %}`, `{% block user %}`, and
for few-shot turns `user_2`, `assistant_2`, ... Released files are never edited: a change is a
new version file, so a template's sha256 identifies exactly the text an oracle call saw.

Data reaches a template only as variables of an immutable sandboxed, strict environment: a
variable's value is output as text and never evaluated, a missing variable is an error naming
it, and a template cannot reach Python internals (`__class__`, `__globals__`, ...).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
import yaml
from jinja2 import meta, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from crome.schemas.hashing import file_sha256
from crome.schemas.oracle import OUTPUT_MODELS

if TYPE_CHECKING:
    from crome.schemas.calls import OracleRequest

TEMPLATES_DIR = Path(__file__).resolve().parent
_VERSION = re.compile(r"^v([1-9][0-9]*)$")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
# Block name -> chat role; a suffix (`user_2`) allows several turns of one role (few-shot examples).
_BLOCK = re.compile(r"^(system|user|assistant)(?:_[0-9]+)?$")


class TemplateError(ValueError):
    """A template file is malformed, or rendering it failed (missing variable, bad value)."""


class UnknownTemplateError(TemplateError, LookupError):
    """No template file matches the requested name or version."""


def make_environment() -> ImmutableSandboxedEnvironment:
    """The one Jinja environment templates render in: sandboxed, strict, no autoescape (output is not HTML)."""
    return ImmutableSandboxedEnvironment(
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


ENV = make_environment()


class FrontMatter(BaseModel):
    """The YAML header of a template file."""

    model_config = ConfigDict(extra="forbid")

    name: str
    version: str
    output_schema: str = Field(description="one of crome.schemas.oracle.OUTPUT_MODELS")
    temperature: float = Field(ge=0.0, le=2.0)
    max_output_tokens: int = Field(gt=0)
    description: str = Field(min_length=1)
    # Variables that take one of a few values: a wrong value would otherwise render silently.
    choices: dict[str, list[str]] = Field(default_factory=dict)

    @field_validator("output_schema")
    @classmethod
    def _known_schema(cls, v: str) -> str:
        if v not in OUTPUT_MODELS:
            raise ValueError(f"unknown output_schema {v!r}; expected one of {sorted(OUTPUT_MODELS)}")
        return v


# eq=False: templates are compared and hashed by identity; load_template returns one object per file content.
@dataclass(frozen=True, eq=False)
class Template:
    """One released template version, ready to render into chat messages."""

    name: str
    version: str
    sha256: str  # hex sha256 of the file's bytes, front matter included
    output_model: type[BaseModel]
    temperature: float
    max_output_tokens: int
    description: str = field(repr=False)
    path: Path = field(repr=False)
    variables: frozenset[str] = field(repr=False)  # the variables the body uses: exactly what render() requires
    choices: dict[str, tuple[str, ...]] = field(default_factory=dict, repr=False)
    _jinja: jinja2.Template = field(default=None, repr=False)  # type: ignore[assignment]
    _blocks: tuple[tuple[str, str], ...] = field(default=(), repr=False)  # (block name, role) in file order

    @property
    def spec(self) -> str:
        return f"{self.name}@{self.version}"

    def render(self, **variables: Any) -> tuple[dict[str, str], ...]:
        """Chat messages `({"role", "content"}, ...)`; each block's surrounding whitespace is stripped."""
        missing = sorted(self.variables - variables.keys())
        if missing:
            raise TemplateError(f"template {self.spec}: missing variable(s) {', '.join(missing)}")
        unexpected = sorted(variables.keys() - self.variables)
        if unexpected:
            raise TemplateError(
                f"template {self.spec}: unexpected variable(s) {', '.join(unexpected)}; "
                f"it takes {', '.join(sorted(self.variables))}"
            )
        for var, allowed in self.choices.items():
            if variables[var] not in allowed:
                raise TemplateError(f"template {self.spec}: {var}={variables[var]!r} is not one of {', '.join(allowed)}")
        messages = []
        for block, role in self._blocks:
            context = self._jinja.new_context(variables)
            try:
                content = "".join(self._jinja.blocks[block](context)).strip()
            except jinja2.UndefinedError as e:
                raise TemplateError(f"template {self.spec}, block {block}: {e}") from e
            if not content:
                raise TemplateError(f"template {self.spec}: block {block} rendered empty")
            messages.append({"role": role, "content": content})
        return tuple(messages)

    def request(
        self, *, context: dict[str, Any] | None = None, validation: dict[str, Any] | None = None, task: str | None = None, **variables: Any
    ) -> "OracleRequest":
        """An `OracleRequest` carrying this template's messages, settings, output model and identity.

        `validation` is what the answer is checked against beyond its schema (see `OracleRequest.validation`).
        """
        from crome.schemas.calls import OracleRequest

        return OracleRequest(
            task=task or self.name,
            template=self.spec,
            template_sha256=self.sha256,
            messages=self.render(**variables),
            output_model=self.output_model,
            temperature=self.temperature,
            max_output_tokens=self.max_output_tokens,
            context=dict(context or {}),
            validation=dict(validation or {}),
        )


def _split_front_matter(text: str, path: Path) -> tuple[dict[str, Any], str]:
    """(front matter dict, body); the body keeps the header's line count so Jinja errors give file lines."""
    lines = text.splitlines(keepends=True)
    if not lines or lines[0].rstrip("\r\n") != "---":
        raise TemplateError(f"{path}: a template must start with YAML front matter between '---' lines")
    for end in range(1, len(lines)):
        if lines[end].rstrip("\r\n") == "---":
            break
    else:
        raise TemplateError(f"{path}: front matter is not closed by a '---' line")
    try:
        header = yaml.safe_load("".join(lines[1:end]))
    except yaml.YAMLError as e:
        raise TemplateError(f"{path}: front matter is not valid YAML: {e}") from e
    if not isinstance(header, dict):
        raise TemplateError(f"{path}: front matter must be a YAML mapping")
    body = "\n" * (end + 1) + "".join(lines[end + 1 :])
    return header, body


def _message_blocks(ast: nodes.Template, path: Path) -> tuple[tuple[str, str], ...]:
    """Check the body is only message blocks (and whitespace) and return (block, role) in order."""
    blocks = []
    for node in ast.body:
        if isinstance(node, nodes.Block):
            match = _BLOCK.match(node.name)
            if not match:
                raise TemplateError(
                    f"{path}:{node.lineno}: block {node.name!r} is not a message block "
                    "(system, user, assistant, optionally with a _N suffix)"
                )
            blocks.append((node.name, match.group(1)))
        elif isinstance(node, nodes.Output) and all(
            isinstance(n, nodes.TemplateData) and not n.data.strip() for n in node.nodes
        ):
            continue
        else:
            raise TemplateError(f"{path}:{node.lineno}: content outside a message block would never be sent")
    if len(list(ast.find_all(nodes.Block))) != len(blocks):
        raise TemplateError(f"{path}: message blocks cannot be nested")
    if not any(role == "user" for _, role in blocks):
        raise TemplateError(f"{path}: a template needs at least one user block")
    return tuple(blocks)


def _parse(path: Path, raw: bytes) -> Template:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise TemplateError(f"{path}: not UTF-8 text: {e}") from e
    header, body = _split_front_matter(text, path)
    try:
        fm = FrontMatter.model_validate(header)
    except ValidationError as e:
        raise TemplateError(f"{path}: invalid front matter: {e}") from e
    if fm.name != path.parent.name:
        raise TemplateError(f"{path}: front matter name {fm.name!r} does not match its folder {path.parent.name!r}")
    if fm.version != path.stem:
        raise TemplateError(f"{path}: front matter version {fm.version!r} does not match its file name {path.stem!r}")
    try:
        ast = ENV.parse(body, name=fm.name, filename=str(path))
        jinja_template = ENV.from_string(ast)
    except jinja2.TemplateSyntaxError as e:
        raise TemplateError(f"{path}:{e.lineno}: {e.message}") from e
    blocks = _message_blocks(ast, path)
    variables = frozenset(meta.find_undeclared_variables(ast) - set(ENV.globals))
    unknown_choices = sorted(set(fm.choices) - variables)
    if unknown_choices:
        raise TemplateError(f"{path}: choices name variable(s) the body does not use: {', '.join(unknown_choices)}")
    return Template(
        name=fm.name,
        version=fm.version,
        sha256=file_sha256(str(path)),
        output_model=OUTPUT_MODELS[fm.output_schema],
        temperature=fm.temperature,
        max_output_tokens=fm.max_output_tokens,
        description=fm.description,
        path=path,
        variables=variables,
        choices={k: tuple(v) for k, v in fm.choices.items()},
        _jinja=jinja_template,
        _blocks=blocks,
    )


# Parsed templates by (path, file bytes): a file changed on disk is parsed again, never served stale.
_CACHE: dict[tuple[Path, bytes], Template] = {}


def _versions(directory: Path) -> dict[str, dict[int, Path]]:
    """name -> {version number -> file} for every `<name>/v<N>.jinja` under directory."""
    found: dict[str, dict[int, Path]] = {}
    for path in sorted(directory.glob("*/*.jinja")):
        match = _VERSION.match(path.stem)
        if match and _NAME.match(path.parent.name):
            found.setdefault(path.parent.name, {})[int(match.group(1))] = path
    return found


def list_templates(directory: str | Path | None = None) -> list[str]:
    """Every template version that exists, as `name@vN` specs sorted by name then version."""
    found = _versions(Path(directory) if directory else TEMPLATES_DIR)
    return [f"{name}@v{n}" for name in sorted(found) for n in sorted(found[name])]


def load_template(spec: str, directory: str | Path | None = None) -> Template:
    """`"degrade"` (latest version) or `"degrade@v1"` (that version) from the packaged templates."""
    name, _, version = spec.strip().partition("@")
    found = _versions(Path(directory) if directory else TEMPLATES_DIR)
    if name not in found:
        raise UnknownTemplateError(
            f"unknown template {spec!r}; available: {', '.join(list_templates(directory)) or 'none'}"
        )
    if version:
        match = _VERSION.match(version)
        if not match or int(match.group(1)) not in found[name]:
            have = ", ".join(f"{name}@v{n}" for n in sorted(found[name]))
            raise UnknownTemplateError(f"unknown version {spec!r}; {name} has {have}")
        path = found[name][int(match.group(1))]
    else:
        path = found[name][max(found[name])]
    raw = path.read_bytes()
    key = (path, raw)
    if key not in _CACHE:
        _CACHE[key] = _parse(path, raw)
    return _CACHE[key]
