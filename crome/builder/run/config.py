"""Build options. Every choice the paper leaves open is an explicit option with a default, recorded in the run."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from crome.builder.stages.checks import ValidationConfig




class BuildConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # --- source
    source: str = Field(description="local file or Hub dataset id")
    out: str = Field(description="run directory")
    split: str | None = None
    config_name: str | None = None
    revision: str | None = None
    mapping: dict[str, str] | None = Field(default=None, description="explicit column mapping, e.g. prompt=question")
    limit: int | None = Field(default=None, ge=1, description="read at most N source rows")
    shard: tuple[int, int] | None = Field(default=None, description="(i, N): build only the i-th of N slices by source id")
    # One outsized answer can cost more than the rest of a build: longer ones are quarantined (answer_too_long).
    max_answer_chars: int = Field(default=100_000, ge=1, description="quarantine a pair whose chosen or rejected answer is longer")

    # --- oracle
    oracle: str = "rules"
    base_url: str | None = None
    concurrency: int = Field(default=16, ge=1)
    rpm: int | None = Field(default=None, ge=1)
    tpm: int | None = Field(default=None, ge=1)
    timeout: float | None = Field(default=None, gt=0, description="seconds per oracle request (default 60)")
    schema_mode: str = Field(default="auto", description="structured output: auto, or a fixed mode such as json_schema, json_object, text")
    max_cost: float | None = Field(default=None, ge=0, description="stop cleanly before the estimated cost passes this (USD)")
    max_failures: int = Field(default=50, ge=0, description="stop when this many oracle calls have failed in this run")
    dry_run: bool = False
    templates: dict[str, str] = Field(default_factory=dict, description="task -> name@version; latest when absent")
    templates_dir: str | None = Field(default=None, description="folder of your own template versions (NAME/vN.jinja), searched first")

    # --- scale out
    batch: bool = Field(default=False, description="send each pass's oracle calls as one provider batch job (half price); re-run to collect")
    batch_wait: bool = Field(default=False, description="with batch: keep polling and passing until the build completes")
    poll_interval: float = Field(default=60.0, gt=0, description="with batch_wait: seconds between polls of the jobs in flight")

    # --- method
    seed: int = 0
    max_attributes: int = Field(default=2, ge=0, description="rubrics intervened on per source pair (paper: unspecified)")
    causal: list[Literal["degrade", "upgrade"]] = Field(default_factory=lambda: ["degrade", "upgrade"])
    verify: bool | None = Field(default=None, description="verify rewrites with the oracle; default on for LLM oracles, off for rules")
    neutral_ratio: float = Field(default=1.0, ge=0, description="IQN neutrals per source pair (fractional part drawn at random)")
    # IQN prompts must not ask the same thing: TF-IDF cosine of the two conversations' content words
    # must stay below this (crome/builder/stages/neutral.py says how 0.2 was chosen).
    neutral_max_similarity: float = Field(default=0.2, ge=0, le=1)
    neutral_group_size: int = Field(
        default=16, ge=2,
        description="IQN draws a tie's prompt within a fixed random group of about this many source pairs, so a test split can hold out whole groups",
    )
    cross_prompt: bool = Field(default=False, description="add RRM-style cross-prompt pairs (on-prompt answer beats an off-prompt one)")
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    dedup_threshold: float = Field(default=0.85, gt=0, le=1, description="MinHash Jaccard above which two texts are near-duplicates")
    # --- shortcut neutralisation (crome.builder.stages.shortcut)
    neutralize_shortcuts: bool = Field(default=False, description="add ties that differ only in a phrase shortcut found in the source")
    shortcut_phrases: list[dict[str, str]] = Field(default_factory=list, description="given / vetoed phrases: {action: opening|closing|veto, text}")
    shortcut_min_strength: float = Field(default=0.1, ge=0, le=1, description="found phrases moving fewer pairs than this are reported, not neutralised")
    shortcut_max_per_phrase: int = Field(default=1000, ge=1, description="shortcut-neutral ties per phrase at most")

    @field_validator("causal")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        return list(dict.fromkeys(v))

    @field_validator("templates_dir")
    @classmethod
    def _templates_folder(cls, v: str | None) -> str | None:
        """A folder that is not there, or holds no template, would build with the packaged templates without a word."""
        if v is None:
            return v
        from crome.prompts import list_templates

        folder = Path(v)
        found = ("no such folder" if not folder.exists() else "a file, not a folder" if not folder.is_dir()
                 else None if list_templates(folder) else "a folder with no NAME/vN.jinja in it")
        if found:
            raise ValueError(f"expected a folder of template versions (NAME/vN.jinja), found {found}: {v}")
        return v

    @model_validator(mode="after")
    def _batchable(self) -> "BuildConfig":
        if self.batch and self.is_rules:
            raise ValueError("--batch needs an LLM oracle (openai:MODEL or gemini:MODEL): the rules oracle runs offline, there is nothing to batch")
        return self

    @property
    def is_rules(self) -> bool:
        return self.oracle.strip().lower() == "rules"

    @property
    def verify_enabled(self) -> bool:
        return (not self.is_rules) if self.verify is None else self.verify

    def public_options(self) -> dict:
        """Options recorded in config.json, the summary and the card: no secrets, no local paths."""
        # batch_wait and poll_interval only say how long this process keeps going: not build options.
        data = self.model_dump(mode="json", exclude={"source", "base_url", "out", "templates_dir", "batch_wait", "poll_interval"})
        data["source"] = display_source(self.source)
        data["verify"] = self.verify_enabled
        data["base_url"] = "set" if self.base_url else None
        data["templates_dir"] = Path(self.templates_dir).name if self.templates_dir else None
        return data


def display_source(spec: str) -> str:
    """A source name without the building machine's directories: parent folder and file name, or the Hub id."""
    p = Path(spec)
    if p.exists():
        return f"{p.resolve().parent.name}/{p.name}" if p.is_file() else p.resolve().name
    return spec
