"""The audit's shortcut discovery and counterfactual sample (DuckDB over the audited Parquet).

`shortcut_report(con)` runs the finder of crome.builder.stages.shortcut_find (the same one the
build's neutralise stage uses) over the `pairs` view and returns what `crome audit` shows: the
candidates strongest first (`shortcuts` in --json), a per-attribute table (which augmentation adds
or removes which cue), and the causal pairs the HTML report's counterfactual viewer shows.

Rubric definitions: a row names its rubric (`attribute`) but the data contract does not carry the
rubric's definition, which is per prompt. For a run folder of `crome build` the viewer's pairs get
theirs from the run store (the `rubrics` call of the pair's prompt); a published folder, a Parquet
file or a filtered / neutralised run has no store, and the report says the definitions are not in
that data (`definitions` in --json).

Verifier explanations: a kept rewrite records only the verdict's summary (`quality.verification`,
"pass: target worse"); the verifier's free-text `explanation` is in its `verify` call. For a run
folder the viewer reads it from the store's call cache with one read-only DuckDB query: the call
whose rendered request holds the row's conversation, original, rewrite, rubric and direction (the
data contract carries no call key, and an LLM call stores no context to match instead). Elsewhere,
or for a pair whose oracle could not judge (`rules`), the viewer shows the verdict alone
(`explanations` in --json says how many were found, and from where).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from crome.builder.stages.base import conversation_text
from crome.builder.stages.shortcut_find import ALPHA, find_shortcuts, top
from crome.builder.store import STORE_FILE, RunStore, RunStoreError
from crome.schemas import Message

SHOWN = 200  # significant candidates listed at most (the rest are counted)
FILL = 20  # non-significant candidates shown when fewer are significant: a clean dataset still shows its strongest
VIEWER_PER_STRATUM = 2  # counterfactual pairs per (attribute, direction) in the viewer
VIEWER_MAX = 24


def shortcut_report(con: duckdb.DuckDBPyConnection, *, seed: int = 0, run_folder: Path | None = None) -> dict[str, Any]:
    cands = find_shortcuts(con)
    samples = counterfactual_sample(con, seed=seed)
    shown = top([c for c in cands if c.attribute is None], limit=SHOWN, fill=FILL)
    by_attribute = _by_attribute(cands)
    return {
        "shortcuts": [c.model_dump() for c in shown],
        "shortcuts_found": sum(c.significant for c in cands if c.attribute is None),
        "shortcuts_by_attribute": by_attribute,
        "shortcut_method": {
            "alpha": ALPHA, "correction": "Holm over every candidate that could reach significance (Tarone)",
            "test": "two-sided sign test on pairs with the cue on one side only", "pairs": "strict (preference 1.0)",
        },
        "counterfactuals": samples,
        "definitions": attach_definitions(samples, run_folder),
        "explanations": attach_explanations(samples, run_folder),
    }


def _by_attribute(cands: list) -> list[dict[str, Any]]:
    """Per causal attribute and direction: the length split and its strongest significant cue."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for c in cands:
        if c.attribute is None:
            continue
        row = rows.setdefault((c.attribute, c.augmentation), {
            "attribute": c.attribute, "augmentation": c.augmentation, "pairs": c.pairs, "chars_strength": None,
            "mean_chars_diff": None, "strongest_cue": None, "cue_strength": None, "significant_cues": 0})
        if c.feature == "length" and c.text == "chars":
            row["chars_strength"], row["mean_chars_diff"] = c.strength, c.mean_diff
        elif c.significant:
            row["significant_cues"] += 1
            if row["cue_strength"] is None or abs(c.strength) > abs(row["cue_strength"]):
                row["strongest_cue"], row["cue_strength"] = f"{c.feature}: {c.text}", c.strength
    return sorted(rows.values(), key=lambda r: (r["attribute"], r["augmentation"] or ""))


def counterfactual_sample(con: duckdb.DuckDBPyConnection, *, seed: int = 0) -> list[dict[str, Any]]:
    """A seeded sample of causal pairs (and shortcut-neutral / IQN ties), stratified by attribute and direction.

    A degrade's chosen answer is the original and its rejected the rewrite; an upgrade the other way.
    """
    cols = {r[0] for r in con.execute("DESCRIBE pairs").fetchall()}
    quality = "to_json(quality)" if "quality" in cols else "NULL"
    cur = con.execute(f"""
        SELECT id, kind, augmentation, coalesce(attribute, '') AS attribute, preference,
               coalesce(list_filter(prompt, lambda m: m.role = 'user')[-1].content, '') AS prompt,
               coalesce(chosen[1].content, '') AS chosen, coalesce(rejected[1].content, '') AS rejected,
               {quality} AS quality, source_id, to_json(prompt) AS prompt_messages
        FROM pairs WHERE kind = 'causal' OR augmentation IN ('shortcut_neutral', 'irrelevant_query')
        QUALIFY row_number() OVER (PARTITION BY augmentation, attribute ORDER BY md5(id || ?)) <= ?
        ORDER BY kind, attribute, augmentation, md5(id || ?)
        LIMIT ?""", [str(seed), VIEWER_PER_STRATUM, str(seed), VIEWER_MAX])
    names = [d[0] for d in cur.description]
    out = [dict(zip(names, r)) for r in cur.fetchall()]
    for s in out:
        s["conversation"] = conversation_text([Message.model_validate(m) for m in json.loads(s.pop("prompt_messages"))])
    # A tie under another prompt: show the prompt its answers were written for too.
    iqn = [s["source_id"] for s in out if s["augmentation"] == "irrelevant_query"]
    if iqn:
        own = dict(con.execute("""
            SELECT source_id, any_value(coalesce(list_filter(prompt, lambda m: m.role = 'user')[-1].content, ''))
            FROM pairs WHERE kind = 'original' AND list_contains(?, source_id) GROUP BY source_id""", [iqn]).fetchall())
        for s in out:
            if s["augmentation"] == "irrelevant_query":
                s["original_prompt"] = own.get(s["source_id"])
    return out


NO_STORE = ("Rubric definitions are not in this data: a row names its rubric, and its definition (written per prompt "
            "when the run was built) stays in the run store. Audit the run folder of `crome build` to see them.")


def attach_definitions(samples: list[dict[str, Any]], run_folder: Path | None) -> dict[str, Any]:
    """Give each causal sample its rubric's `definition` from the run store, where there is one; what was found, and from where."""
    causal = [s for s in samples if s["kind"] == "causal"]
    for s in causal:
        s["definition"] = None
    if run_folder is None or not (run_folder / STORE_FILE).is_file():
        return {"source": None, "found": 0, "pairs": len(causal), "note": NO_STORE}
    try:
        with RunStore.open(run_folder, read_only=True) as store:
            found = store.rubric_definitions(s["conversation"] for s in causal)
    except (RunStoreError, FileNotFoundError, duckdb.Error) as e:
        note = f"Rubric definitions could not be read from the run store: {str(e).splitlines()[0][:200]}"
        return {"source": None, "found": 0, "pairs": len(causal), "note": note}
    for s in causal:
        s["definition"] = found.get(s["conversation"], {}).get(s["attribute"])
    n = sum(s["definition"] is not None for s in causal)
    note = f"Rubric definitions from the run store ({STORE_FILE}): {n} of {len(causal)} shown pairs have one."
    if n < len(causal):
        note += " A pair without one has no answered rubrics call for its prompt in the store (another store, or a template that does not mark the prompt)."
    return {"source": STORE_FILE, "found": n, "pairs": len(causal), "note": note}


VERIFIED = ("degrade", "upgrade")  # the causal rewrites the verify stage judges
NO_STORE_EXPLANATIONS = ("Verifier explanations are not in this data: a row keeps the verdict (shown), and the verifier's "
                         "explanation stays in the run store. Audit the run folder of `crome build` to see them.")
# The stored verify request's last message (the verify template's user turn) and the rewrite in it: the join key.
_VERIFY_CALLS = r"""
    WITH calls AS (
        SELECT json_extract_string(request, '$.messages[#-1].content') AS msg, parsed, updated_at
        FROM oracle_calls WHERE task = 'verify' AND status = 'ok' AND parsed IS NOT NULL),
    keyed AS (SELECT regexp_extract(msg, '<rewrite>\n((?s:.*))\n</rewrite>\n\nTarget rubric:\n', 1) AS rewrite, msg, parsed, updated_at
              FROM calls)
    SELECT w.i, arg_max(json_extract_string(k.parsed, '$.explanation'), k.updated_at)
    FROM wanted w JOIN keyed k ON k.rewrite = w.rewrite
    WHERE contains(k.msg, w.needle) AND contains(k.msg, w.direction)
    GROUP BY w.i"""


def _verify_needle(s: dict[str, Any]) -> tuple[str, str, str]:
    """(rewrite, the rendered span from conversation to target rubric, the direction's words) as verify@v1 renders them."""
    original, rewrite = (s["chosen"], s["rejected"]) if s["augmentation"] == "degrade" else (s["rejected"], s["chosen"])
    needle = (f"<conversation>\n{s['conversation']}\n</conversation>\n\n<original>\n{original}\n</original>\n\n"
              f"<rewrite>\n{rewrite}\n</rewrite>\n\nTarget rubric:\n- {s['attribute']}: ")
    return rewrite, needle, f"becomes {'worse' if s['augmentation'] == 'degrade' else 'better'} on one target rubric"


def attach_explanations(samples: list[dict[str, Any]], run_folder: Path | None) -> dict[str, Any]:
    """Give each verified causal sample the verifier's `explanation` from its stored verify call, where there is one."""
    verified = [s for s in samples if s["kind"] == "causal" and s["augmentation"] in VERIFIED]
    for s in verified:
        s["explanation"] = None
    path = None if run_folder is None else run_folder / STORE_FILE
    if path is None or not path.is_file():
        return {"source": None, "found": 0, "pairs": len(verified), "note": NO_STORE_EXPLANATIONS}
    if not verified:
        return {"source": STORE_FILE, "found": 0, "pairs": 0, "note": ""}
    wanted = pa.Table.from_pylist([dict(zip(("i", "rewrite", "needle", "direction"), (i, *_verify_needle(s)))) for i, s in enumerate(verified)])
    try:
        con = duckdb.connect(str(path), read_only=True)
        try:
            con.register("wanted", wanted)
            found = dict(con.execute(_VERIFY_CALLS).fetchall())
        finally:
            con.close()
    except duckdb.Error as e:
        note = f"Verifier explanations could not be read from the run store: {str(e).splitlines()[0][:200]}"
        return {"source": None, "found": 0, "pairs": len(verified), "note": note}
    for i, s in enumerate(verified):
        s["explanation"] = found.get(i) or None
    n = sum(s["explanation"] is not None for s in verified)
    note = f"Verifier explanations from the run store ({STORE_FILE}): {n} of {len(verified)} shown rewrites have one."
    if n < len(verified):
        note += " A rewrite without one has no answered verify call in the store (an oracle that cannot judge, such as rules, or another store)."
    return {"source": STORE_FILE, "found": n, "pairs": len(verified), "note": note}
