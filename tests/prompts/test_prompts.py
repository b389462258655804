"""Prompt templates: registry, front matter, strict sandboxed rendering, data never evaluated."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml
from jinja2.sandbox import SandboxedEnvironment, SecurityError

from crome.prompts import ENV, TEMPLATES_DIR, TemplateError, UnknownTemplateError, list_templates, load_template
from crome.schemas.oracle import OUTPUT_MODELS, Counterfactual, Ratings, Rubric, Rubrics, Verdict

PROMPT = "user: How many moons does Mars have, and what are they called?"
ANSWER = (
    "Hi there!\n\nMars has **two** moons:\n\n1. Phobos\n2. Deimos\n\n"
    "Both are small and irregularly shaped.\n\nHope this helps!"
)
RUBRICS = [
    {"name": "factuality", "definition": "States correctly that Mars has two moons, Phobos and Deimos."},
    {"name": "completeness", "definition": "Gives both the number of moons and their names."},
    {"name": "relevance", "definition": "Sticks to the moons of Mars."},
]

VARIABLES = {
    "rubrics": {"prompt": PROMPT},
    "rate": {"prompt": PROMPT, "answer": ANSWER, "rubrics": RUBRICS},
    "degrade": {"prompt": PROMPT, "answer": ANSWER, "rubric": RUBRICS[0], "other_rubrics": RUBRICS[1:]},
    "upgrade": {"prompt": PROMPT, "answer": ANSWER, "rubric": RUBRICS[1], "other_rubrics": [RUBRICS[0], RUBRICS[2]]},
    "verify": {
        "prompt": PROMPT, "original": ANSWER, "rewrite": ANSWER.replace("two", "three"),
        "rubric": RUBRICS[0], "other_rubrics": RUBRICS[1:], "direction": "degrade",
    },
}
EXPECTED_MODEL = {"rubrics": Rubrics, "rate": Ratings, "degrade": Counterfactual, "upgrade": Counterfactual, "verify": Verdict}


def _write(directory: Path, name: str, version: str, text: str) -> Path:
    path = directory / name / f"{version}.jinja"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _front(name: str = "demo", version: str = "v1", **overrides) -> str:
    fm = {"name": name, "version": version, "output_schema": "Rubrics", "temperature": 0.0,
          "max_output_tokens": 256, "description": "a test template"}
    fm.update(overrides)
    return "---\n" + yaml.safe_dump(fm) + "---\n"


def test_every_task_has_a_template_with_its_output_model():
    assert set(VARIABLES) <= {spec.split("@")[0] for spec in list_templates()}
    for name, model in EXPECTED_MODEL.items():
        t = load_template(name)
        assert t.output_model is model
        assert t.spec == f"{t.name}@{t.version}"


@pytest.mark.parametrize("name", sorted(VARIABLES))
def test_render_realistic_variables(name):
    t = load_template(name)
    messages = t.render(**VARIABLES[name])
    assert [m["role"] for m in messages] == ["system", "user"]
    assert all(set(m) == {"role", "content"} and m["content"] == m["content"].strip() for m in messages)
    user = messages[-1]["content"]
    assert PROMPT in user
    # Every value the template takes reaches the user message unchanged.
    for var, value in VARIABLES[name].items():
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, dict):
                assert f"- {item['name']}: {item['definition']}" in user
            elif var != "direction":
                assert item in user
    # The prompt describes the fields of its JSON output.
    for field in t.output_model.model_fields:
        assert f"`{field}`" in user


def test_degrade_and_upgrade_ask_to_keep_the_surface():
    for name in ("degrade", "upgrade"):
        user = load_template(name).render(**VARIABLES[name])[-1]["content"].lower()
        for phrase in ("opening line", "closing line", "sign-off", "code fences", "tone", "length", "nothing else"):
            assert phrase in user, (name, phrase)
        assert ("clearly worse" if name == "degrade" else "clearly better") in user


def test_verify_states_the_intended_direction():
    base = VARIABLES["verify"]
    assert "becomes worse on one target" in load_template("verify").render(**base)[-1]["content"]
    assert "becomes better on one target" in load_template("verify").render(**{**base, "direction": "upgrade"})[-1]["content"]
    with pytest.raises(TemplateError, match="direction='sideways' is not one of upgrade, degrade"):
        load_template("verify").render(**{**base, "direction": "sideways"})


def test_rubric_models_render_like_dicts():
    as_models = [Rubric(**r) for r in RUBRICS]
    a = load_template("rate").render(**VARIABLES["rate"])
    b = load_template("rate").render(**{**VARIABLES["rate"], "rubrics": as_models})
    assert a == b


def test_sha256_is_the_file_sha256():
    for spec in list_templates():
        t = load_template(spec)
        assert t.sha256 == hashlib.sha256(t.path.read_bytes()).hexdigest()
        assert t.path.is_relative_to(TEMPLATES_DIR)


def test_name_at_version_and_latest_resolution(tmp_path):
    for version, temp in (("v1", 0.0), ("v2", 0.3), ("v10", 0.7)):
        _write(tmp_path, "demo", version, _front(version=version, temperature=temp) + "{% block user %}{{ prompt }}{% endblock %}\n")
    assert list_templates(tmp_path) == ["demo@v1", "demo@v2", "demo@v10"]
    # Versions order by number, not by string: v10 is the latest.
    assert load_template("demo", tmp_path).version == "v10"
    assert load_template("demo@v2", tmp_path).temperature == 0.3
    assert load_template("degrade@v1").spec == "degrade@v1"
    assert load_template("degrade").spec == f"degrade@v{max(int(s.split('@v')[1]) for s in list_templates() if s.startswith('degrade@'))}"


def test_unknown_name_or_version_lists_what_exists():
    with pytest.raises(UnknownTemplateError, match=r"unknown template 'degrad'.*degrade@v1.*verify@v1"):
        load_template("degrad")
    with pytest.raises(UnknownTemplateError, match=r"unknown version 'degrade@v99'; degrade has degrade@v1"):
        load_template("degrade@v99")
    with pytest.raises(UnknownTemplateError, match="degrade has degrade@v1"):
        load_template("degrade@latest")
    # It is a LookupError too, for callers that treat it as "not found".
    with pytest.raises(LookupError):
        load_template("nope")


@pytest.mark.parametrize("path", sorted(TEMPLATES_DIR.glob("*/*.jinja")), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_front_matter_of_every_template_file(path):
    text = path.read_text(encoding="utf-8")
    assert text.startswith("---\n")
    fm = yaml.safe_load(text.split("---\n")[1])
    assert set(fm) <= {"name", "version", "output_schema", "temperature", "max_output_tokens", "description", "choices"}
    assert fm["name"] == path.parent.name
    assert fm["version"] == path.stem and fm["version"].startswith("v")
    assert fm["output_schema"] in OUTPUT_MODELS
    assert 0.0 <= fm["temperature"] <= 2.0 and fm["max_output_tokens"] > 0 and fm["description"].strip()
    t = load_template(f"{fm['name']}@{fm['version']}")
    assert t.output_model is OUTPUT_MODELS[fm["output_schema"]]
    assert (t.temperature, t.max_output_tokens) == (fm["temperature"], fm["max_output_tokens"])


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("{% block user %}x{% endblock %}\n", "must start with YAML front matter"),
        (_front(output_schema="Essay") + "{% block user %}x{% endblock %}\n", "unknown output_schema 'Essay'"),
        (_front(name="other") + "{% block user %}x{% endblock %}\n", "does not match its folder 'demo'"),
        (_front(version="v2") + "{% block user %}x{% endblock %}\n", "does not match its file name 'v1'"),
        (_front(colour="red") + "{% block user %}x{% endblock %}\n", "colour"),
        (_front() + "stray text\n{% block user %}x{% endblock %}\n", "content outside a message block"),
        (_front() + "{% block system %}x{% endblock %}\n", "at least one user block"),
        (_front() + "{% block footer %}x{% endblock %}{% block user %}y{% endblock %}\n", "'footer' is not a message block"),
        (_front() + "{% block user %}{{ x {% endblock %}\n", "demo/v1.jinja:9: expected token"),  # the line in the file, front matter counted
        (_front(choices={"mode": ["a"]}) + "{% block user %}x{% endblock %}\n", "choices name variable(s) the body does not use: mode"),
    ],
)
def test_invalid_template_files_are_refused_with_the_reason(tmp_path, text, error):
    _write(tmp_path, "demo", "v1", text)
    with pytest.raises(TemplateError, match=error.replace("(", r"\(").replace(")", r"\)")):
        load_template("demo@v1", tmp_path)


def test_strict_undefined_names_the_missing_variable():
    with pytest.raises(TemplateError, match="template degrade@v1: missing variable.*other_rubrics, rubric"):
        load_template("degrade@v1").render(prompt=PROMPT, answer=ANSWER)
    with pytest.raises(TemplateError, match="unexpected variable.*answr"):
        load_template("rubrics@v1").render(prompt=PROMPT, answr=ANSWER)
    # A key missing inside a value is caught by StrictUndefined at render time.
    with pytest.raises(TemplateError, match="block user: 'dict object' has no attribute 'definition'"):
        load_template("degrade@v1").render(**{**VARIABLES["degrade"], "rubric": {"name": "factuality"}})


def test_strict_undefined_in_branches_not_taken(tmp_path):
    # The variable set comes from the whole body, so a variable used only in one branch is still required.
    _write(tmp_path, "demo", "v1", _front() + "{% block user %}{% if flag %}{{ extra }}{% endif %}ok{% endblock %}\n")
    t = load_template("demo", tmp_path)
    assert t.variables == {"flag", "extra"}
    with pytest.raises(TemplateError, match="missing variable.*extra"):
        t.render(flag=False)
    assert t.render(flag=False, extra="unused") == ({"role": "user", "content": "ok"},)


INJECTIONS = [
    "{{ 7*7 }}",
    "{% for x in y %}loop{% endfor %}",
    "{{ cycler.__init__.__globals__ }}",
    "{# comment #}{%- raw %}<b>&amp;</b>",
]


@pytest.mark.parametrize("name", sorted(VARIABLES))
def test_data_is_never_evaluated(name):
    payload = "\n".join(INJECTIONS)
    variables = {}
    for var, value in VARIABLES[name].items():
        if isinstance(value, str) and var != "direction":
            variables[var] = f"{value}\n{payload}"
        elif isinstance(value, dict):
            variables[var] = {"name": value["name"], "definition": payload}
        elif isinstance(value, list):
            variables[var] = [{"name": r["name"], "definition": payload} for r in value]
        else:
            variables[var] = value
    content = "\n".join(m["content"] for m in load_template(name).render(**variables))
    for text in INJECTIONS:
        assert text in content
    assert "49" not in content and "loop" not in content.replace("{% for x in y %}loop{% endfor %}", "")


def test_sandbox_refuses_attribute_access_in_template_source():
    assert isinstance(ENV, SandboxedEnvironment)
    assert ENV.autoescape is False
    with pytest.raises(SecurityError):
        ENV.from_string("{{ cycler.__init__.__globals__ }}").render()
    with pytest.raises(SecurityError):
        ENV.from_string("{{ ''.__class__.__mro__[1].__subclasses__() }}").render()
    # Immutable sandbox: a template cannot mutate the data it is given.
    data = [1]
    with pytest.raises(SecurityError):
        ENV.from_string("{{ data.append(2) }}").render(data=data)
    assert data == [1]


def test_request_carries_template_identity_and_settings():
    t = load_template("degrade@v1")
    req = t.request(context={"side": "chosen"}, **VARIABLES["degrade"])
    assert (req.task, req.template, req.template_sha256) == ("degrade", "degrade@v1", t.sha256)
    assert req.messages == t.render(**VARIABLES["degrade"])
    assert (req.output_model, req.temperature, req.max_output_tokens) == (Counterfactual, t.temperature, t.max_output_tokens)
    assert req.context == {"side": "chosen"}
    # Same template and data, same cache key; another template version would change the messages.
    reads = {"side", "donor", "seed"}  # what the rules oracle reads beyond the rendered text
    assert req.cache_key("rules", "rules", reads) == t.request(context={"side": "chosen"}, **VARIABLES["degrade"]).cache_key("rules", "rules", reads)
    # Context an oracle reads is in its key; context it does not read is not (an LLM reads none).
    other = t.request(context={"side": "rejected", "donor": "an unrelated answer"}, **VARIABLES["degrade"])
    assert other.cache_key("rules", "rules", reads) != req.cache_key("rules", "rules", reads)
    assert other.cache_key("openai", "gpt-4o-mini", ()) == req.cache_key("openai", "gpt-4o-mini", ())
