"""Audit a crome dataset with DuckDB: a run dir, a published folder, a Parquet file or hf://datasets/ORG/NAME.

The same SQL serves all four: the rows are a `pairs` view over the Parquet files (plus a
`rejections` view for a run dir). Local inputs are opened with external access switched off
except for the files being audited; DuckDB gets a memory limit and spills to a private temporary
folder (never the working directory). User SQL is in `crome.builder.hub.query`.

A folder crome marked is read as its last complete export (crome.outputs): the files its record
names, checked, and checked again after the audit, so a build that re-exports meanwhile makes the
audit fail rather than mix two exports. While a build runs in a run folder, the audit reads the
export before it and says so (`AuditSource.building`).
"""

from __future__ import annotations

import math
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
from pydantic import BaseModel, Field

from crome.builder.hub.answers import PATTERNS, answer_view
from crome.builder.hub.shortcuts import shortcut_report
from crome.builder.run.progress import read_progress
from crome.builder.store import LOCK_FILE
from crome.outputs import OutputError, lock_holder, read_export

KINDS = ("original", "causal", "neutral")
# Which kind an augmentation makes: rejections record the augmentation of the candidate, not its kind.
KIND_OF_AUGMENTATION = {"original": "original", "upgrade": "causal", "degrade": "causal",
                        "irrelevant_query": "neutral", "cross_prompt": "neutral", "shortcut_neutral": "neutral"}
REQUIRED_COLUMNS = ("id", "prompt", "chosen", "rejected", "preference", "kind", "augmentation", "attribute", "source_id")
HISTOGRAM_BINS = 24  # plus one overflow bin for the longest 1%
_HF_PATH = re.compile(r"^hf://datasets/[\w.-]+/[\w.-]+(@[^/]+)?(/.*)?$")
_SPLIT_OF_FILE = r"(\w+)-\d{5}-of-\d{5}\.parquet$"
DEFAULT_MEMORY_LIMIT = "2GB"  # DuckDB's own default is 80% of the machine's memory


class AuditError(Exception):
    """An input that cannot be audited or a query that is refused; the message says which and why."""


# ---------------------------------------------------------------- report model


class Section(BaseModel):
    """One table of the report: columns ending in `_rate` or starting with `share` are fractions."""

    key: str
    title: str
    columns: list[str]
    rows: list[list[Any]]
    note: str = ""

    def records(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, row)) for row in self.rows]


class Histogram(BaseModel):
    """Answer lengths in characters: bin i holds [i*width, (i+1)*width); the last bin everything longer."""

    bin_width: int
    counts: dict[str, dict[str, list[int]]] = Field(description="kind -> side -> counts per bin")


class AuditReport(BaseModel):
    source: str
    source_type: str  # run, folder, file, hub
    files: int
    rows: int
    sections: list[Section]
    histogram: Histogram
    samples: dict[str, list[dict[str, Any]]]
    # crome.builder.hub.shortcuts: shortcuts (strongest first), per-attribute splits, the counterfactual sample.
    shortcuts: dict[str, Any] = Field(default_factory=dict)

    def section(self, key: str) -> Section:
        for s in self.sections:
            if s.key == key:
                return s
        raise KeyError(key)

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source, "source_type": self.source_type, "files": self.files, "rows": self.rows,
            **{s.key: s.records() for s in self.sections},
            "histogram": self.histogram.model_dump(), "samples": self.samples, **self.shortcuts,
        }


# ---------------------------------------------------------------- inputs


@dataclass(frozen=True)
class AuditSource:
    label: str
    type: str  # run, folder, file, hub
    data: list[str]  # Parquet files, or one hf:// glob
    rejections: str | None = None
    folder: Path | None = None  # a folder crome marked: its export is checked again after the audit
    export_id: str | None = None
    export_written_at: str | None = None
    building: dict[str, Any] | None = None  # a build running in the run folder: pid, stage, pairs


def _building(folder: Path) -> dict[str, Any] | None:
    pid = lock_holder(folder, LOCK_FILE)
    if pid is None:
        return None
    progress = read_progress(folder) or {}
    keep = ("stage", "pairs_done", "pairs_total", "updated_at")
    return {"pid": pid or progress.get("pid"), **{k: progress.get(k) for k in keep}}


def _marked(p: Path, text: str) -> AuditSource | None:
    """A folder crome marked, as its last complete export; None for any other folder."""
    building = _building(p)
    try:
        record = read_export(p)
    except OutputError as e:
        if building:
            raise AuditError(f"{text} has no finished export to audit yet: a build is writing it now (pid {building['pid']}, "
                             f"stage {building['stage']}); audit it when the build has finished") from None
        raise AuditError(str(e)) from None
    if record is None:
        return None
    data = sorted(str(f.resolve()) for f in record.paths(r"data/.+\.parquet"))
    rejections = p / "rejections.parquet" if "rejections.parquet" in record.files else None
    if not data:
        raise AuditError(f"no Parquet files in the last export of {text} (written by `{record.written_by}`)")
    return AuditSource(
        label=text, type="folder" if record.kind == "dataset" else "run", data=data,
        rejections=str(rejections.resolve()) if rejections else None, folder=p, export_id=record.id,
        export_written_at=record.written_at, building=building,
    )


def resolve(path: str | Path) -> AuditSource:
    """Where the rows (and, for a run dir, the rejections) of PATH are."""
    text = str(path)
    if text.startswith("hf://"):
        if not _HF_PATH.match(text):
            raise AuditError(f"{text}: expected hf://datasets/ORG/NAME (optionally @REVISION and a path inside)")
        rest = text.rstrip("/")
        inner = rest.split("/", 5)[5] if rest.count("/") >= 5 else ""
        glob = rest if inner.endswith(".parquet") or "*" in inner else f"{rest}/**/*.parquet"
        return AuditSource(label=text, type="hub", data=[glob])
    p = Path(text).expanduser()
    if not p.exists():
        raise AuditError(f"{text} does not exist (give a run dir, a folder of Parquet files, a .parquet file or hf://datasets/ORG/NAME)")
    if p.is_file():
        if p.suffix != ".parquet":
            raise AuditError(f"{text} is not a .parquet file (give a run dir, a folder of Parquet files, a .parquet file or hf://datasets/ORG/NAME)")
        return AuditSource(label=text, type="file", data=[str(p.resolve())])
    marked = _marked(p, text)
    if marked is not None:
        return marked
    if (p / "summary.json").is_file() or (p / "rejections.parquet").is_file():
        files = sorted(str(f.resolve()) for f in (p / "data").glob("*.parquet"))
        rejections = p / "rejections.parquet"
        source = AuditSource(label=text, type="run", data=files,
                             rejections=str(rejections.resolve()) if rejections.is_file() else None)
    else:
        files = sorted(str(f.resolve()) for f in p.rglob("*.parquet"))
        source = AuditSource(label=text, type="folder", data=files)
    if not source.data:
        raise AuditError(f"no Parquet files under {text}" + (" /data" if source.type == "run" else ""))
    return source


def _run_folder(source: AuditSource) -> Path | None:
    """The run folder of `crome build` being audited (its store holds what rows do not: rubric definitions), if any."""
    if source.type != "run":
        return None
    return source.folder or Path(source.label).expanduser()


def check_unchanged(source: AuditSource) -> None:
    """The export the audit read is still the folder's: a build did not re-export meanwhile."""
    if source.folder is None:
        return
    try:
        record = read_export(source.folder)
    except OutputError:
        record = None
    if record is None or record.id != source.export_id:
        raise AuditError(f"{source.label} was re-exported while it was being audited: run the audit again")


def _sql_list(items: list[str]) -> str:
    return "[" + ", ".join("'" + s.replace("'", "''") + "'" for s in items) + "]"


def _load_httpfs(con: duckdb.DuckDBPyConnection) -> None:
    """hf:// needs DuckDB's httpfs extension; installing it needs the network once."""
    try:
        con.execute("LOAD httpfs")
        return
    except duckdb.Error as first:
        error = first
    if os.environ.get("HF_HUB_OFFLINE", "").lower() not in ("1", "true", "yes"):
        try:
            con.execute("INSTALL httpfs")
            con.execute("LOAD httpfs")
            return
        except duckdb.Error as second:
            error = second
    raise AuditError(
        "reading hf:// needs DuckDB's httpfs extension, which could not be loaded "
        f"({str(error).splitlines()[0]}). Install it once with network access: "
        "python -c \"import duckdb; duckdb.sql('INSTALL httpfs')\" (or download the dataset and audit the folder)"
    )


@contextmanager
def session(source: AuditSource, *, memory_limit: str = DEFAULT_MEMORY_LIMIT) -> Iterator[duckdb.DuckDBPyConnection]:
    """An in-memory DuckDB with `pairs` (and `rejections`) views; local inputs locked to their own files."""
    with tempfile.TemporaryDirectory(prefix="crome-audit-") as spill:
        try:
            con = duckdb.connect(config={"autoinstall_known_extensions": False, "memory_limit": memory_limit,
                                         "temp_directory": spill})
        except duckdb.Error as e:
            raise AuditError(f"--memory-limit {memory_limit!r}: {str(e).splitlines()[0]} (expected a size such as 2GB)") from None
        try:
            _prepare(con, source)
            yield con
        finally:
            con.close()


def _prepare(con: duckdb.DuckDBPyConnection, source: AuditSource) -> None:
    if source.type == "hub":
        _load_httpfs(con)
        try:
            # Private repos: the token of HF_TOKEN or the user's saved login, read by DuckDB, never by us.
            con.execute("CREATE SECRET crome_hf (TYPE huggingface, PROVIDER credential_chain)")
        except duckdb.Error:
            pass
    files = _sql_list(source.data)
    con.execute(
        f"CREATE VIEW pairs AS SELECT * EXCLUDE (filename), "
        f"coalesce(nullif(regexp_extract(filename, '{_SPLIT_OF_FILE}', 1), ''), 'train') AS split "
        f"FROM read_parquet({files}, filename = true)"
    )
    if source.rejections:
        con.execute(f"CREATE VIEW rejections AS SELECT * FROM read_parquet({_sql_list([source.rejections])})")
    if source.type != "hub":
        allowed = source.data + ([source.rejections] if source.rejections else [])
        con.execute(f"SET allowed_paths = {_sql_list(allowed)}")
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
    try:
        columns = {r[0] for r in con.execute("DESCRIBE pairs").fetchall()}
    except duckdb.Error as e:
        raise AuditError(f"cannot read the Parquet files of {source.label}: {str(e).splitlines()[0]}") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise AuditError(f"{source.label} is not a crome dataset: columns {missing} are missing")
    answer_view(con)


# ---------------------------------------------------------------- the audit


def _section(con: duckdb.DuckDBPyConnection, key: str, title: str, sql: str, params: list | None = None, note: str = "") -> Section:
    cur = con.execute(sql, params or [])
    columns = [d[0] for d in cur.description]
    rows = [[_plain(v) for v in row] for row in cur.fetchall()]
    return Section(key=key, title=title, columns=columns, rows=rows, note=note)


def _plain(v: Any) -> Any:
    """JSON-ready scalars: DuckDB hands back Decimal for some aggregates."""
    if v is None or isinstance(v, (bool, int, str)):
        return v
    if isinstance(v, float):
        return None if math.isnan(v) else v
    try:
        return float(v)
    except (TypeError, ValueError):
        return str(v)


_KIND_SORT = "CASE kind WHEN 'original' THEN 0 WHEN 'causal' THEN 1 WHEN 'neutral' THEN 2 WHEN 'all' THEN 9 ELSE 5 END"


def _kind_of_rejection_sql() -> str:
    cases = " ".join(f"WHEN '{a}' THEN '{k}'" for a, k in KIND_OF_AUGMENTATION.items())
    return f"CASE augmentation {cases} ELSE CASE WHEN stage = 'source' THEN 'source' ELSE 'other' END END"


def audit(path: str | Path, *, samples: int = 3, seed: int = 0, memory_limit: str = DEFAULT_MEMORY_LIMIT,
          source: AuditSource | None = None) -> AuditReport:
    source = source or resolve(path)
    with session(source, memory_limit=memory_limit) as con:
        try:
            report = _audit(con, source, samples=samples, seed=seed)
        except duckdb.Error as e:
            raise AuditError(f"cannot audit {source.label}: {str(e).splitlines()[0]}") from None
    check_unchanged(source)
    return report


def _audit(con: duckdb.DuckDBPyConnection, source: AuditSource, *, samples: int, seed: int) -> AuditReport:
    total = con.execute("SELECT count(*) FROM pairs").fetchone()[0]
    # The per-answer figures once, for the lengths, the formatting and the histogram: one scan of the answers, not four.
    con.execute(f"CREATE OR REPLACE TEMP TABLE answer_stats AS SELECT kind, side, chars, words, "
                f"{', '.join(f'has_{name}' for name in PATTERNS)} FROM answers")
    sections = [
        _section(con, "by_split", "Rows by split",
                 "SELECT split, count(*) AS rows FROM pairs GROUP BY split ORDER BY split = 'test', split"),
        _section(con, "by_kind", "Rows by kind", f"""
            SELECT kind, count(*) AS rows, count(*) / sum(count(*)) OVER () AS share
            FROM pairs GROUP BY kind ORDER BY {_KIND_SORT}"""),
        _section(con, "by_augmentation", "Rows by augmentation", f"""
            SELECT kind, augmentation, count(*) AS rows FROM pairs GROUP BY kind, augmentation ORDER BY {_KIND_SORT}, rows DESC, augmentation"""),
        _section(con, "by_attribute", "Causal rows by attribute (rubric)", """
            SELECT attribute, count(*) AS rows,
                   count(*) FILTER (augmentation = 'upgrade') AS upgrade,
                   count(*) FILTER (augmentation = 'degrade') AS degrade
            FROM pairs WHERE attribute IS NOT NULL GROUP BY attribute ORDER BY rows DESC, attribute"""),
        _section(con, "preference", "Preference balance", f"""
            SELECT kind, preference, count(*) AS rows,
                   count(*) / sum(count(*)) OVER (PARTITION BY kind) AS share_of_kind
            FROM pairs GROUP BY kind, preference ORDER BY {_KIND_SORT}, preference DESC""",
                 note="1.0: chosen is better; 0.5: tie. Only neutral rows should be ties."),
        _section(con, "lengths", "Answer length by kind and side", f"""
            SELECT kind, side, count(*) AS answers,
                   avg(chars) AS mean_chars, median(chars) AS median_chars,
                   avg(words) AS mean_words, median(words) AS median_words
            FROM answer_stats GROUP BY kind, side ORDER BY {_KIND_SORT}, side"""),
        _section(con, "length_shortcut", "Length shortcut: strict pairs whose chosen answer is longer", f"""
            SELECT * FROM (
                SELECT coalesce(kind, 'all') AS kind, count(*) AS strict_pairs,
                       count(*) FILTER (c > r) AS chosen_longer,
                       count(*) FILTER (c = r) AS same_length,
                       count(*) FILTER (c < r) AS chosen_shorter,
                       count(*) FILTER (c > r) / count(*) AS share_chosen_longer
                FROM (SELECT kind, length(coalesce(chosen[1].content, '')) AS c,
                             length(coalesce(rejected[1].content, '')) AS r
                      FROM pairs WHERE preference = 1.0)
                GROUP BY GROUPING SETS ((kind), ())
            ) ORDER BY {_KIND_SORT}""",
                 note="Characters. Far above 50% teaches a reward model that longer is better; causal pairs should pull it toward 50%."),
        _section(con, "formatting", "Markdown and list formatting by side", f"""
            SELECT kind, side,
                   avg(has_header::INT) AS header_rate, avg(has_bold::INT) AS bold_rate,
                   avg(has_code::INT) AS code_rate,
                   avg((has_header OR has_bold OR has_code)::INT) AS markdown_rate,
                   avg(has_list::INT) AS list_rate
            FROM answer_stats GROUP BY kind, side ORDER BY {_KIND_SORT}, side""",
                 note="markdown = a header, bold text or a code fence; list = a bulleted or numbered line."),
    ]
    if source.rejections:
        sections.append(_section(con, "rejections", "Rejections by stage and reason", """
            SELECT stage, reason, count(*) AS rows FROM rejections GROUP BY stage, reason ORDER BY rows DESC, stage, reason"""))
    sections.append(_duplicates(con, source))
    if con.execute("SELECT count(DISTINCT split) FROM pairs").fetchone()[0] > 1:
        sections.append(_split_overlap(con))

    histogram = _histogram(con)
    sample_rows = con.execute(f"""
        SELECT kind, id, split, augmentation, attribute, preference,
               coalesce(list_filter(prompt, lambda m: m.role = 'user')[-1].content, '') AS prompt,
               len(prompt) AS prompt_turns,
               coalesce(chosen[1].content, '') AS chosen, coalesce(rejected[1].content, '') AS rejected
        FROM pairs
        QUALIFY row_number() OVER (PARTITION BY kind ORDER BY md5(id || ?)) <= ?
        ORDER BY {_KIND_SORT}, md5(id || ?)""", [str(seed), samples, str(seed)])
    columns = [d[0] for d in sample_rows.description]
    sample_map: dict[str, list[dict[str, Any]]] = {}
    for row in sample_rows.fetchall():
        record = dict(zip(columns, row))
        sample_map.setdefault(record.pop("kind"), []).append(record)

    return AuditReport(
        source=source.label, source_type=source.type, files=len(source.data), rows=total,
        sections=sections, histogram=histogram, samples=sample_map, shortcuts=shortcut_report(con, seed=seed, run_folder=_run_folder(source)),
    )


def _duplicates(con: duckdb.DuckDBPyConnection, source: AuditSource) -> Section:
    """Per kind: repeated ids, identical sides, answer pairs seen twice, and candidates dropped as duplicates."""
    rows = {
        r[0]: list(r[1:])
        for r in con.execute("""
            WITH p AS (
                SELECT kind, id, coalesce(chosen[1].content, '') AS c, coalesce(rejected[1].content, '') AS r FROM pairs
            ), g AS (
                SELECT kind, least(c, r) AS a, greatest(c, r) AS b, count(*) AS n FROM p GROUP BY ALL
            )
            SELECT p.kind, count(*) AS rows, count(*) - count(DISTINCT id) AS repeated_ids,
                   count(*) FILTER (c = r) AS identical_answers,
                   (SELECT coalesce(sum(n), 0) FROM g WHERE g.kind = p.kind AND n > 1) AS repeated_answer_pairs
            FROM p GROUP BY p.kind
        """).fetchall()
    }
    dropped: dict[str, int] = {}
    if source.rejections:
        dropped = dict(con.execute(f"""
            SELECT {_kind_of_rejection_sql()} AS kind, count(*) FROM rejections
            WHERE reason ILIKE '%duplicate%' GROUP BY ALL""").fetchall())
    kinds = [k for k in KINDS if k in rows or k in dropped] + sorted((set(rows) | set(dropped)) - set(KINDS))
    out = []
    for k in kinds:
        published = rows.get(k, [0, 0, 0, 0])
        out.append([k, *[int(v) for v in published], *([dropped.get(k, 0)] if source.rejections else [])])
    columns = ["kind", "rows", "repeated_ids", "identical_answers", "repeated_answer_pairs"]
    if source.rejections:
        columns.append("rejected_as_duplicate")
    return Section(
        key="duplicates", title="Duplicates", columns=columns, rows=out,
        note="repeated_answer_pairs: rows whose two answers (in either order) occur in another row of the same kind; "
             "rejected_as_duplicate: candidates the build dropped with a duplicate reason.",
    )


def _split_overlap(con: duckdb.DuckDBPyConnection) -> Section:
    """Per split and kind: rows whose prompt or an answer text occurs in another split (as a prompt or an answer)."""
    return _section(con, "split_overlap", "Overlap between splits", f"""
        WITH r AS (
            SELECT split, kind, coalesce(chosen[1].content, '') AS c, coalesce(rejected[1].content, '') AS rj,
                   CASE WHEN len(prompt) = 1 THEN prompt[1].content ELSE prompt::VARCHAR END AS p
            FROM pairs
        ), texts AS (
            SELECT DISTINCT split, text FROM (
                SELECT split, p AS text FROM r UNION ALL SELECT split, c FROM r UNION ALL SELECT split, rj FROM r)
        ), flagged AS (
            SELECT r.split, r.kind,
                   EXISTS (SELECT 1 FROM texts t WHERE t.text = r.p AND t.split <> r.split) AS shares_prompt,
                   EXISTS (SELECT 1 FROM texts t WHERE (t.text = r.c OR t.text = r.rj) AND t.split <> r.split) AS shares_answer
            FROM r
        )
        SELECT split, coalesce(kind, 'all') AS kind, count(*) AS rows,
               count(*) FILTER (shares_prompt) AS prompt_in_other_split,
               count(*) FILTER (shares_answer) AS answer_in_other_split
        FROM flagged GROUP BY GROUPING SETS ((split, kind), (split))
        ORDER BY split = 'test', split, {_KIND_SORT}""",
                    note="Rows whose prompt, or one of whose answers, occurs in another split as a prompt or an answer (IQN ties "
                         "included). A test split published by crome shows 0: it holds out whole groups of rows that share text.")


def _histogram(con: duckdb.DuckDBPyConnection) -> Histogram:
    cap = con.execute("SELECT coalesce(quantile_disc(chars, 0.99), 0) FROM answer_stats").fetchone()[0]
    raw = max(1.0, cap / HISTOGRAM_BINS)
    # A round bin width (1, 2 or 5 times a power of ten) so that axis labels read well.
    magnitude = 10 ** math.floor(math.log10(raw))
    width = int(next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw))
    counts: dict[str, dict[str, list[int]]] = {}
    for kind, side, b, n in con.execute(
        "SELECT kind, side, least(chars // ?, ?) AS bin, count(*) FROM answer_stats GROUP BY ALL", [width, HISTOGRAM_BINS]
    ).fetchall():
        sides = counts.setdefault(kind, {"chosen": [0] * (HISTOGRAM_BINS + 1), "rejected": [0] * (HISTOGRAM_BINS + 1)})
        sides[side][int(b)] = int(n)
    ordered = {k: counts[k] for k in [*[k for k in KINDS if k in counts], *sorted(set(counts) - set(KINDS))]}
    return Histogram(bin_width=width, counts=ordered)


def format_value(column: str, value: Any) -> str:
    """How a report cell reads to a person: fractions as percentages, means to one decimal."""
    if value is None:
        return "—"
    if isinstance(value, bool) or isinstance(value, str):
        return str(value)
    if column.endswith("_rate") or column.startswith("share"):
        return f"{100 * value:.1f}%"
    if column == "preference":
        return f"{value:.1f}"
    if isinstance(value, float):
        return f"{value:,.0f}" if value.is_integer() else f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)
