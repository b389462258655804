"""Build small, realistic crome run directories for tests (the layout `crome build --out` writes).

`make_run(tmp_path)` writes original, causal (degrade and upgrade, on named rubrics) and neutral
(irrelevant-query tie) rows for a handful of hand-written source pairs, plus recorded rejections and
a summary.json whose counts match the files. Tests can compute expected figures from `.rows`.

`get_call`, `iter_calls` and `iter_sources` read back what a run's store holds where crome itself
never reads it that way (one call by key, every call, the source pairs in order).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import pyarrow.parquet as pq

from crome import __version__
from crome.builder.run.export import RUN_LAYOUT
from crome.builder.store import CallRecord, RunStore
from crome.builder.store.calls import CALL_SELECT, call_from_row
from crome.builder.store.tables import SOURCE_SCHEMA, source_from_row
from crome.outputs import Export, claim
from crome.schemas import DatasetRow, Message, Provenance, Quality, Rejection, pair_id, to_table
from crome.schemas.source import SourcePair

# (prompt turns, chosen, rejected, degrade: (attribute, degraded chosen), upgrade: (attribute, upgraded rejected))
_SOURCES: list[dict[str, Any]] = [
    {
        "prompt": [("user", "What is the boiling point of water at sea level, in Celsius and Fahrenheit?")],
        "chosen": "At sea level water boils at **100 °C** (212 °F).\n\nAt higher altitudes the air pressure is lower, so it boils at a lower temperature.",
        "rejected": "Water boils at 90 degrees.",
        "degrade": ("factuality", "At sea level water boils at **90 °C** (194 °F).\n\nAt higher altitudes the air pressure is lower, so it boils at a lower temperature."),
        "upgrade": ("completeness", "Water boils at 100 °C, which is 212 °F."),
    },
    {
        "prompt": [("system", "You are a concise coding assistant."), ("user", "Write a Python function that reverses a string.")],
        "chosen": "Use slicing with a step of -1:\n\n```python\ndef reverse(s: str) -> str:\n    return s[::-1]\n```\n\n`reverse(\"abc\")` returns `\"cba\"`.",
        "rejected": "```python\ndef reverse(s):\n    return s.reverse()\n```",
        "degrade": ("correctness", "Use slicing with a step of 1:\n\n```python\ndef reverse(s: str) -> str:\n    return s[::1]\n```\n\n`reverse(\"abc\")` returns `\"cba\"`."),
        "upgrade": None,
    },
    {
        "prompt": [("user", "Give me three tips for better sleep.")],
        "chosen": "1. Keep a regular schedule, even at weekends.\n2. Keep the bedroom dark, quiet and cool.\n3. Avoid caffeine after midday.",
        "rejected": "Sleep is very important for health and there are many things people say about it, and honestly everyone is different, so you should probably just try to relax and see what works for you over time, maybe read something or not.",
        "degrade": ("relevance", "1. Keep a regular schedule, even at weekends.\n2. Buy a good pair of running shoes.\n3. Avoid caffeine after midday."),
        "upgrade": ("instruction_following", "Sleep matters for health. Three tips: keep a regular schedule, keep the bedroom dark and cool, and avoid caffeine after midday, so that what works for you becomes a habit over time."),
    },
    {
        "prompt": [("user", "Who wrote Pride and Prejudice?")],
        "chosen": "Jane Austen wrote *Pride and Prejudice*; it was published in 1813.",
        "rejected": "Pride and Prejudice was written by Charlotte Brontë in 1847. It is one of the best-known novels of the Victorian era and is still widely read today.",
        "degrade": ("factuality", "Emily Brontë wrote *Pride and Prejudice*; it was published in 1813."),
        "upgrade": ("factuality", "Pride and Prejudice was written by Jane Austen in 1813. It is one of the best-known novels of the Regency era and is still widely read today."),
    },
    {
        "prompt": [
            ("user", "I am planning a trip to Japan."),
            ("assistant", "That sounds exciting! How can I help?"),
            ("user", "Which city should I visit first, Tokyo or Kyoto?"),
        ],
        "chosen": "## Tokyo first\n\nMost international flights land in Tokyo, so start there, then take the shinkansen to Kyoto (about 2 h 15 min).",
        "rejected": "Kyoto.",
        "degrade": ("helpfulness", "## Tokyo first\n\nStart there, then go to Kyoto."),
        "upgrade": None,
    },
    {
        "prompt": [("user", "How do I make a cup of green tea?")],
        "chosen": "- Heat water to about 80 °C (not boiling).\n- Steep 1 teaspoon of leaves for 2 minutes.\n- Strain and drink.",
        "rejected": "- Boil water.\n- Put the tea in and leave it for 10 minutes so it is strong.\n- Drink.",
        "degrade": None,
        "upgrade": ("correctness", "- Heat water to about 80 °C.\n- Put the tea in and leave it for 2 minutes so it is not bitter.\n- Drink."),
    },
]

TEMPLATES = {
    name: {"version": "v1", "sha256": hashlib.sha256(f"template {name} v1".encode()).hexdigest()}
    for name in ("rubrics", "rate", "degrade", "upgrade", "verify")
}


@dataclass
class RunFixture:
    path: Path
    rows: list[DatasetRow]
    rejections: list[Rejection]
    summary: dict[str, Any]
    source_pairs: list[SourcePair]


def _prompt(turns: list[tuple[str, str]], variant: int) -> list[Message]:
    msgs = [Message(role=r, content=c) for r, c in turns]
    if variant:
        # Later cycles get their own ids: the last user turn names the variant.
        msgs[-1] = Message(role="user", content=f"{msgs[-1].content} (variant {variant})")
    return msgs


def _vary(spec: dict[str, Any], variant: int) -> dict[str, Any]:
    """Later cycles get their own answers too, as distinct source pairs have (a variant tag at the end)."""
    if not variant:
        return spec
    tag = f" (v{variant})"
    return {
        **spec, "chosen": spec["chosen"] + tag, "rejected": spec["rejected"] + tag,
        **{k: (spec[k][0], spec[k][1] + tag) if spec[k] else None for k in ("degrade", "upgrade")},
    }


def make_run(
    tmp_path: Path,
    *,
    name: str = "run",
    n_sources: int = 6,
    seed: int = 0,
    license: str | None = None,
    hub_id: str | None = None,
    options: dict[str, Any] | None = None,
    with_rejections: bool = True,
) -> RunFixture:
    """Write a run dir under tmp_path/name; n_sources > 6 cycles the hand-written pairs as variants.

    The files are written as `crome build` writes them: one export of a marked run folder.
    """
    run = tmp_path / name
    oracle = "rules"
    source_prov = Provenance(oracle="source", builder_version=__version__, seed=seed)

    def prov(template: str | None) -> Provenance:
        t = TEMPLATES.get(template or "", {})
        return Provenance(
            oracle=oracle, template=template, template_version=t.get("version"), template_sha256=t.get("sha256"),
            builder_version=__version__, seed=seed,
        )

    pairs: list[SourcePair] = []
    specs: list[dict[str, Any]] = []
    for i in range(n_sources):
        spec = _vary(_SOURCES[i % len(_SOURCES)], i // len(_SOURCES))
        pairs.append(SourcePair.make(_prompt(spec["prompt"], i // len(_SOURCES)), spec["chosen"], spec["rejected"], row=i))
        specs.append(spec)

    rows: list[DatasetRow] = []
    rejections: list[Rejection] = []
    for i, (pair, spec) in enumerate(zip(pairs, specs)):
        c, r = pair.chosen.content, pair.rejected.content
        rows.append(DatasetRow.make(
            prompt=pair.prompt, chosen=c, rejected=r, preference=1.0, kind="original",
            augmentation="original", source_id=pair.source_id, provenance=source_prov,
        ))
        if spec["degrade"]:
            attr, degraded = spec["degrade"]
            rows.append(DatasetRow.make(
                prompt=pair.prompt, chosen=c, rejected=degraded, preference=1.0, kind="causal", augmentation="degrade",
                attribute=attr, source_id=pair.source_id, provenance=prov("degrade"),
                quality=Quality(checks=["edit_ratio", "length_ratio", "surface"], edit_ratio=0.12,
                                length_ratio=round(len(degraded) / len(c), 3), surface_kept=1.0, verification="skipped"),
            ))
        if spec["upgrade"]:
            attr, upgraded = spec["upgrade"]
            rows.append(DatasetRow.make(
                prompt=pair.prompt, chosen=upgraded, rejected=r, preference=1.0, kind="causal", augmentation="upgrade",
                attribute=attr, source_id=pair.source_id, provenance=prov("upgrade"),
                quality=Quality(checks=["edit_ratio", "length_ratio"], edit_ratio=0.3,
                                length_ratio=round(len(upgraded) / len(r), 3), verification="skipped"),
            ))
        # Irrelevant Query Neutral: this pair's answers under its partner's prompt (pairs 0-1, 2-3, ...,
        # as a build's draw groups keep ties within small groups), a tie; the answer order alternates
        # so that "chosen" carries no signal.
        other = pairs[i ^ 1] if (i ^ 1) < len(pairs) else pairs[i - 1 if i else 0]
        first, second = (c, r) if i % 2 == 0 else (r, c)
        rows.append(DatasetRow.make(
            prompt=other.prompt, chosen=first, rejected=second, preference=0.5, kind="neutral",
            augmentation="irrelevant_query", source_id=pair.source_id, provenance=prov(None),
            quality=Quality(checks=["prompt_similarity"], prompt_similarity=0.04),
        ))

    if with_rejections:
        p0 = pairs[0]
        rejections = [
            Rejection(source_id=f"row:{n_sources}", stage="source", reason="identical_answers",
                      detail="chosen and rejected are the same text"),
            Rejection(source_id=p0.source_id, stage="validate", reason="edit_ratio_too_low", augmentation="degrade",
                      attribute="completeness", detail="edit ratio 0.01 < 0.05",
                      candidate_id=pair_id(p0.prompt, p0.chosen.content, p0.chosen.content + " ", 1.0)),
            Rejection(source_id=pairs[1 % n_sources].source_id, stage="verify", reason="verification_failed",
                      augmentation="upgrade", attribute="correctness", detail="verdict: no change on correctness"),
            Rejection(source_id=pairs[2 % n_sources].source_id, stage="dedup", reason="near_duplicate",
                      augmentation="irrelevant_query", detail="MinHash Jaccard 0.93", duplicate_of=rows[0].id),
            Rejection(source_id=pairs[3 % n_sources].source_id, stage="dedup", reason="exact_duplicate",
                      augmentation="degrade", attribute="factuality", detail="same pair as an earlier row",
                      duplicate_of=rows[1].id),
        ]

    export = Export(claim(run, RUN_LAYOUT, "crome build"), "crome build")
    pq.write_table(to_table(rows, DatasetRow), export.path("data/train-00000-of-00001.parquet"))
    pq.write_table(to_table(rejections, Rejection), export.path("rejections.parquet"))

    def count(values) -> dict[str, int]:
        out: dict[str, int] = {}
        for v in values:
            if v is not None:
                out[v] = out.get(v, 0) + 1
        return dict(sorted(out.items()))

    by_stage: dict[str, dict[str, int]] = {}
    for rej in rejections:
        by_stage.setdefault(rej.stage, {}).setdefault(rej.reason, 0)
        by_stage[rej.stage][rej.reason] += 1
    quarantined = sum(1 for rej in rejections if rej.stage == "source")
    summary = {
        "crome_version": __version__,
        "created_at": "2025-06-20T12:00:00+00:00",
        "source": {"name": "ultrafeedback-binarized-sample/train_clean.jsonl", "shape": "plain",
                   "hub_id": hub_id, "license": license},
        "oracle": oracle,
        "seed": seed,
        "options": {"max_attributes": 2, "causal": ["degrade", "upgrade"], "verify": False, "neutral_ratio": 1.0,
                    **(options or {})},
        "templates": TEMPLATES,
        "counts": {
            "source_rows": n_sources + quarantined, "source_pairs": n_sources, "quarantined": quarantined,
            "quarantine_reasons": count(rej.reason for rej in rejections if rej.stage == "source"),
            "rows": len(rows),
            "rows_by_kind": count(r.kind for r in rows),
            "rows_by_augmentation": count(r.augmentation for r in rows),
            "rows_by_attribute": count(r.attribute for r in rows),
            "rejections": len(rejections),
            "rejections_by_stage": by_stage,
        },
        "oracle_calls": {"total": 40, "cached": 10, "new": 30, "failed": 1,
                         "by_task": {"rubrics": 6, "rate": 12, "degrade": 11, "upgrade": 11}},
        "tokens": {"input": 12345, "output": 6789},
        "cost_usd": 0.0123,
        "accounting": {"source_rows": n_sources + quarantined, "with_rows": n_sources, "quarantined": quarantined,
                       "balanced": True},
    }
    export.path("summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    export.commit()
    (run / "config.json").write_text(json.dumps({"oracle": oracle, "seed": seed, **summary["options"]}, indent=2) + "\n",
                                     encoding="utf-8")
    return RunFixture(path=run, rows=rows, rejections=rejections, summary=summary, source_pairs=pairs)


def rewrite_export(run: Path, writers: dict[str, Callable[[Path], None]]) -> None:
    """Re-export a run with some files rewritten (path in the run -> write(path)), the others kept: as a build would."""
    owned = claim(run, RUN_LAYOUT, "crome build")
    export = Export(owned, "crome build")
    for rel in owned.export["files"]:
        if rel in writers:
            writers[rel](export.path(rel))
        else:
            export.keep(rel)
    export.commit()


# --- reading a run's store ---------------------------------------------------------------------

_SOURCE_SELECT = "SELECT " + ", ".join(f'"{c}"' for c in SOURCE_SCHEMA.names if c != "ord") + " FROM source_pairs ORDER BY ord"


def get_call(store: RunStore, key: str) -> CallRecord | None:
    """The stored call of `key`, or None."""
    return store.get_calls([key]).get(key)


def iter_calls(store: RunStore) -> Iterator[CallRecord]:
    """Every stored call, by key."""
    for row in store._stream(f"SELECT {CALL_SELECT} FROM oracle_calls ORDER BY key"):
        yield call_from_row(row)


def iter_sources(store: RunStore) -> Iterator[SourcePair]:
    """Source pairs in the order they were stored (source order), on their own cursor: the store may be written meanwhile."""
    for values in store._stream(_SOURCE_SELECT):
        yield source_from_row(values)
