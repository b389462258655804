"""Keep the augmentations a baseline reward model gets wrong or is unsure about (Crome's filtering step).

A baseline RM, trained on the original rows only, scores every augmented pair, d = r(chosen) -
r(rejected). Two rules, each with its own threshold, because they pull opposite ways:

- a strict augmented pair (causal: upgrade, degrade, cross-prompt) is kept when the baseline
  misranks it (d <= 0) or ranks it with a margin below tau (d < tau): raising tau keeps more;
- an augmented tie (neutral: IQN) is kept when the baseline is not yet invariant to it,
  |d| > tie tau: raising tie tau keeps fewer.

Each threshold is given either in the baseline's reward units (`keep_margin`, `tie_margin`, >= 0)
or as the share of that kind to keep (`keep_fraction`, `tie_fraction` in [0, 1]), which does not
depend on the baseline's scale: tau is then the margin below which that share of the strict pairs
lie (misranked pairs are kept whatever the share), tie tau the |margin| above which that share of
the ties lie. The summary records what was given, the tau it meant, the margins by kind and what
each rule kept and dropped.

Never scored, never dropped: originals, decided by `augmentation == "original"` (so a source tie,
kind neutral, is an original), and every row of a `test` split (a filter tuned on a model must not
choose what it is evaluated on). Kept augmented rows carry the margin in `quality.baseline_margin`
and the check `baseline_filter`; every dropped pair becomes a Rejection (stage "filter", margin and
threshold in the detail), so counts still add up.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import ValidationError

from crome import __version__
from crome.outputs import Export, Layout, claim, folder_lock, read_export
from crome.schemas import DatasetRow, Rejection, arrow_schema, to_table
from crome.train.data import _SHARD, DataError, data_files

FILTER_CHECK = "baseline_filter"
UNFILTERED_SPLITS = ("test",)
RULES = {
    "causal": "keep strict augmented pairs with margin < tau, or margin <= 0 (misranked)",
    "neutral": "keep augmented ties with |margin| > tie tau",
    "original": "augmentation original (source ties included): kept, not scored",
    "test": "rows of a test split: kept, not scored",
}
LOCK_FILE = "crome.lock"  # the same writer lock as a run folder's, so publish and filter exclude each other


def _older_filtered(folder: Path) -> bool:
    """A filtered run an older crome wrote (no marker): its summary has a `filter` section."""
    try:
        return "filter" in json.loads((folder / "summary.json").read_text())
    except (OSError, ValueError, TypeError):
        return False


# What `crome filter --out` holds: a run folder without a store (its export is the whole of it).
FILTERED_LAYOUT = Layout(
    kind="filtered", what="`crome filter`", lock=LOCK_FILE, own=(LOCK_FILE, "data"),
    exports=r"data/[^/]+\.parquet|rejections\.parquet|summary\.json|config\.json", legacy=_older_filtered,
)


@dataclass(frozen=True)
class Threshold:
    """One rule's threshold: an absolute margin, or the share of the rule's pairs to keep."""

    margin: float | None = None
    fraction: float | None = None

    def check(self, name: str, flags: tuple[str, str]) -> None:
        if self.margin is not None and self.fraction is not None:
            raise ValueError(f"give {flags[0]} or {flags[1]} for {name} pairs, not both")
        if self.margin is not None and not (self.margin >= 0 and math.isfinite(self.margin)):
            raise ValueError(f"{flags[0]} must be a finite number >= 0, got {self.margin}")
        if self.fraction is not None and not 0.0 <= self.fraction <= 1.0:
            raise ValueError(f"{flags[1]} must be in [0, 1], got {self.fraction}")

    @property
    def given(self) -> dict[str, float] | None:
        if self.margin is not None:
            return {"margin": self.margin}
        return None if self.fraction is None else {"fraction": self.fraction}


def strict_tau(margins: list[float], t: Threshold) -> float:
    """tau of the strict rule: the margin given, or the one below which `fraction` of `margins` lie."""
    if t.margin is not None:
        return t.margin
    ranked = sorted(margins)
    k = math.ceil(t.fraction * len(ranked))  # type: ignore[operator]
    return math.inf if k >= len(ranked) else ranked[k]


def tie_tau(margins: list[float], t: Threshold) -> float:
    """tau of the tie rule: the margin given, or the |margin| above which `fraction` of the ties lie."""
    if t.margin is not None:
        return t.margin
    ranked = sorted((abs(m) for m in margins), reverse=True)
    k = math.ceil(t.fraction * len(ranked))  # type: ignore[operator]
    return -math.inf if k >= len(ranked) else ranked[k]


def keeps_strict(margin: float, tau: float) -> bool:
    return margin <= 0 or margin < tau


def keeps_tie(margin: float, tau: float) -> bool:
    return abs(margin) > tau


def is_original(row: DatasetRow) -> bool:
    """What the filter never scores: source pairs as they are, source ties included."""
    return row.augmentation == "original"


def read_rows(path: Path) -> list[DatasetRow]:
    """Rows of one Parquet shard, validated against the data contract (errors name the row)."""
    rows = []
    for i, record in enumerate(pq.read_table(path).to_pylist()):
        try:
            rows.append(DatasetRow.model_validate(record))
        except ValidationError as e:
            raise DataError(f"{path.name} row {i} (id {record.get('id')}): {e.errors()[0]['loc']}: {e.errors()[0]['msg']}") from e
    return rows


def _rejection(row: DatasetRow, margin: float, tau: float, given: dict[str, float]) -> Rejection:
    how = ", ".join(f"{k} {v:g}" for k, v in given.items())
    if row.preference == 0.5:
        reason, detail = "baseline_invariant", f"|margin| {abs(margin):.4f} <= tie tau {tau:.4g} (tie {how}; margin {margin:.4f})"
    else:
        reason, detail = "baseline_confident", f"margin {margin:.4f} >= tau {tau:.4g} (keep {how})"
    return Rejection(
        source_id=row.source_id, stage="filter", reason=reason, detail=detail, candidate_id=row.id,
        augmentation=row.augmentation, attribute=row.attribute,
        candidate={
            "prompt": [m.model_dump() for m in row.prompt], "chosen": row.chosen[0].content, "rejected": row.rejected[0].content,
            "preference": row.preference, "baseline_margin": margin,
        },
    )


def _counts(rows: list[DatasetRow], rejections: pa.Table) -> dict[str, Any]:
    by_stage: dict[str, Counter] = {}
    for stage, reason in zip(rejections.column("stage").to_pylist(), rejections.column("reason").to_pylist()):
        by_stage.setdefault(stage, Counter())[reason] += 1
    return {
        "rows": len(rows),
        "rows_by_kind": dict(Counter(r.kind for r in rows)),
        "rows_by_augmentation": dict(Counter(r.augmentation for r in rows)),
        "rows_by_attribute": dict(Counter(r.attribute for r in rows if r.attribute is not None)),
        "rejections": rejections.num_rows,
        "rejections_by_stage": {s: dict(c) for s, c in by_stage.items()},
    }


def margin_stats(values: list[float]) -> dict[str, float] | None:
    """n, mean, min, deciles-ish quantiles and max of the margins, the share misranked (d <= 0), and |d| quantiles."""
    if not values:
        return None
    v, a = sorted(values), sorted(abs(x) for x in values)

    def q(xs: list[float], p: float) -> float:
        return xs[min(len(xs) - 1, int(p * len(xs)))]

    return {
        "n": len(v), "mean": sum(v) / len(v), "min": v[0], "p10": q(v, 0.1), "p25": q(v, 0.25), "p50": q(v, 0.5),
        "p75": q(v, 0.75), "p90": q(v, 0.9), "max": v[-1], "share_misranked": sum(x <= 0 for x in v) / len(v),
        "abs_p50": q(a, 0.5), "abs_p90": q(a, 0.9),
    }


def _split_of(shard: Path) -> str:
    """The split a shard belongs to, from its name (`test-00000-of-00001.parquet`); other names are train."""
    m = _SHARD.match(shard.name)
    return m.group("split") if m else "train"


def filter_run(
    run_dir: str | Path,
    out_dir: str | Path,
    *,
    baseline: str,
    keep_margin: float | None = None,
    keep_fraction: float | None = None,
    tie_margin: float | None = None,
    tie_fraction: float | None = None,
    batch_size: int = 16,
    max_length: int | None = 1024,
    dtype: str = "auto",
    device: str | None = None,
    scorer: tuple[Any, Any] | None = None,
) -> dict[str, Any]:
    """Write a filtered copy of `run_dir` to `out_dir` and return its summary. `scorer` = (model, tokenizer) if loaded.

    The strict rule needs `keep_margin` or `keep_fraction` when there are strict augmented pairs to
    score, the tie rule `tie_margin` or `tie_fraction` when there are augmented ties (1.0 keeps all).
    """
    from crome.train.evaluate import load_scorer, score_pairs_with_truncation
    from crome.train.pairs import as_eval_pair

    run, out = Path(run_dir), Path(out_dir)
    strict, tie = Threshold(keep_margin, keep_fraction), Threshold(tie_margin, tie_fraction)
    strict.check("causal", ("--keep-margin", "--keep-fraction"))
    tie.check("neutral", ("--tie-margin", "--tie-fraction"))
    if out.resolve() == run.resolve():
        raise ValueError("the filtered run must go to a new directory, not over its input")
    claim(out, FILTERED_LAYOUT, "crome filter", create=False)  # before scoring: a folder that is not ours stops here
    record = read_export(run) if run.is_dir() else None
    if record is not None:
        # The files of the run's last export, checked and read under its writer lock: no build re-exports meanwhile.
        with folder_lock(run, LOCK_FILE, what="run"):
            record = read_export(run)
            shards = {p: read_rows(p) for p in record.paths(r"data/[^/]+\.parquet")}
            old = pq.read_table(run / "rejections.parquet") if "rejections.parquet" in record.files else None
            summary = json.loads((run / "summary.json").read_text()) if "summary.json" in record.files else None
    else:  # a folder crome did not mark (an older crome, or rows from elsewhere): its data/ as it is
        files = [f for split in (data_files(run) if run.is_dir() else {}).values() for f in split]
        shards = {Path(f): read_rows(Path(f)) for f in files}
        old = pq.read_table(run / "rejections.parquet") if (run / "rejections.parquet").exists() else None
        summary = json.loads((run / "summary.json").read_text()) if (run / "summary.json").exists() else None
    if not shards:
        raise DataError(f"{run}: no data/*.parquet (expected a crome run dir)")

    shards = {s: (_split_of(s), rows) for s, rows in shards.items()}
    scored = [(s, i) for s, (split, rows) in shards.items() if split not in UNFILTERED_SPLITS
              for i, r in enumerate(rows) if not is_original(r)]
    rule_of = {key: ("neutral" if shards[key[0]][1][key[1]].preference == 0.5 else "causal") for key in scored}
    rules = {"causal": strict, "neutral": tie}
    for name, n in Counter(rule_of.values()).items():
        if rules[name].given is None:
            flags = ("--keep-margin", "--keep-fraction") if name == "causal" else ("--tie-margin", "--tie-fraction")
            raise ValueError(f"{run} has {n} {name} pairs to filter: give {flags[0]} or {flags[1]} ({flags[1]} 1 keeps them all)")

    model, tokenizer = scorer or load_scorer(baseline, dtype=dtype, device=device)
    pairs = [as_eval_pair(shards[s][1][i], where=f"{s.name} row {i}") for s, i in scored]
    margins, truncated = score_pairs_with_truncation(model, tokenizer, pairs, batch_size, max_length) if pairs else ([], [])
    margin_of = dict(zip(scored, margins))
    by_rule: dict[str, list[float]] = {"causal": [], "neutral": []}
    for key, m in margin_of.items():
        by_rule[rule_of[key]].append(m)
    taus = {"causal": strict_tau(by_rule["causal"], strict), "neutral": tie_tau(by_rule["neutral"], tie)}
    keeps = {"causal": keeps_strict, "neutral": keeps_tie}

    kept_rows: dict[Path, list[DatasetRow]] = {}
    new_rejections: list[Rejection] = []
    kept, dropped, unscored = Counter(), Counter(), Counter()
    for shard, (split, rows) in shards.items():
        kept_rows[shard] = []
        for i, row in enumerate(rows):
            if (shard, i) not in margin_of:
                unscored["test" if split in UNFILTERED_SPLITS else "source_tie" if row.preference == 0.5 else "original"] += 1
                kept_rows[shard].append(row)
                continue
            margin, rule = margin_of[(shard, i)], rule_of[(shard, i)]
            if keeps[rule](margin, taus[rule]):
                quality = row.quality.model_copy(update={"baseline_margin": margin, "checks": [*row.quality.checks, FILTER_CHECK]})
                kept_rows[shard].append(row.model_copy(update={"quality": quality}))
                kept[rule] += 1
            else:
                new_rejections.append(_rejection(row, margin, taus[rule], rules[rule].given or {}))
                dropped[rule] += 1

    schema = arrow_schema(Rejection)
    old = old if old is not None else schema.empty_table()
    rejections = pa.concat_tables([old.select(schema.names).cast(schema), to_table(new_rejections, Rejection)])

    summary = summary if summary is not None else {"crome_version": __version__}
    all_rows = [r for rows in kept_rows.values() for r in rows]
    summary.setdefault("counts", {}).update(_counts(all_rows, rejections))
    summary["filter"] = {
        "baseline": baseline,
        "rules": RULES,
        "thresholds": {
            name: {"given": rules[name].given, "tau": None if math.isinf(taus[name]) else taus[name],
                   "scored": len(by_rule[name]), "kept": kept[name], "dropped": dropped[name]}
            for name in ("causal", "neutral")
        },
        "input_run": run.name,
        "input_export": record.id if record is not None else None,
        "max_length": max_length,
        "scored": len(pairs),
        "truncated_pairs": sum(truncated),
        "kept": dict(kept),
        "dropped": dict(dropped),
        "unscored": dict(unscored),
        "margins": {name: margin_stats(v) for name, v in by_rule.items() if v},
        "crome_version": __version__,
    }
    owned = claim(out, FILTERED_LAYOUT, "crome filter")
    with folder_lock(out, LOCK_FILE, what="filtered run"):
        owned = claim(out, FILTERED_LAYOUT, "crome filter")  # read again under the lock
        export = Export(owned, "crome filter")
        try:
            for shard, rows in kept_rows.items():
                pq.write_table(to_table(rows, DatasetRow), export.path(f"data/{shard.name}"))
            pq.write_table(rejections, export.path("rejections.parquet"))
            if (run / "config.json").is_file():
                export.copy("config.json", run / "config.json")
            (export.path("summary.json")).write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
        except BaseException:
            export.abort()
            raise
        export.commit()
    return summary
