"""crome audit: figures checked by hand on a small run, read-only SQL, inputs, JSON and the HTML report."""

from __future__ import annotations

import json
import re
import statistics
from html.parser import HTMLParser

import duckdb
import pyarrow.parquet as pq
import pytest
from helpers_runs import make_run, rewrite_export
from typer.testing import CliRunner

from crome.builder.hub.audit import AuditError, audit, resolve
from crome.builder.hub.query import run_query
from crome.builder.hub.audit_html import render_html
from crome.builder.hub.publish import publish
from crome.cli import app
from crome.schemas import DatasetRow, Provenance, to_table
from crome.schemas.messages import user


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture
def run(tmp_path):
    return make_run(tmp_path)


def _by(records: list[dict], *keys: str) -> dict:
    return {tuple(r[k] for k in keys) if len(keys) > 1 else r[keys[0]]: r for r in records}


def test_counts_balance_and_rejections_match_the_run(run):
    report = audit(run.path, samples=0)
    assert report.rows == 21 and report.source_type == "run"
    assert {r["kind"]: r["rows"] for r in report.section("by_kind").records()} == {"original": 6, "causal": 9, "neutral": 6}
    assert {(r["kind"], r["augmentation"]): r["rows"] for r in report.section("by_augmentation").records()} == {
        ("original", "original"): 6, ("causal", "degrade"): 5, ("causal", "upgrade"): 4, ("neutral", "irrelevant_query"): 6}
    attrs = {r["attribute"]: (r["rows"], r["upgrade"], r["degrade"]) for r in report.section("by_attribute").records()}
    assert attrs == {"factuality": (3, 1, 2), "correctness": (2, 1, 1), "completeness": (1, 1, 0),
                     "helpfulness": (1, 0, 1), "relevance": (1, 0, 1), "instruction_following": (1, 1, 0)}
    assert [(r["kind"], r["preference"], r["rows"]) for r in report.section("preference").records()] == [
        ("original", 1.0, 6), ("causal", 1.0, 9), ("neutral", 0.5, 6)]
    assert {(r["stage"], r["reason"]): r["rows"] for r in report.section("rejections").records()} == {
        ("source", "identical_answers"): 1, ("validate", "edit_ratio_too_low"): 1, ("verify", "verification_failed"): 1,
        ("dedup", "near_duplicate"): 1, ("dedup", "exact_duplicate"): 1}


def test_length_shortcut_and_formatting_by_hand(run):
    report = audit(run.path, samples=0)
    # By hand from helpers_runs: the rejected answer is the longer one in sources 2 (rambling sleep answer) and 3
    # (Brontë); the degrade of source 3 (Emily Brontë) and the upgrades of sources 2 and 3 are longer than what they beat.
    shortcut = _by(report.section("length_shortcut").records(), "kind")
    assert (shortcut["original"]["strict_pairs"], shortcut["original"]["chosen_longer"], shortcut["original"]["chosen_shorter"]) == (6, 4, 2)
    assert (shortcut["causal"]["strict_pairs"], shortcut["causal"]["chosen_longer"], shortcut["causal"]["chosen_shorter"]) == (9, 6, 3)
    assert shortcut["all"]["share_chosen_longer"] == pytest.approx(10 / 15)
    assert "neutral" not in shortcut  # ties have no better side

    fmt = _by(report.section("formatting").records(), "kind", "side")
    # Original chosen: a header (Tokyo), bold (100 °C), a code fence (reverse) and lists in sleep and tea answers.
    oc = fmt[("original", "chosen")]
    assert (oc["header_rate"], oc["bold_rate"], oc["code_rate"], oc["markdown_rate"], oc["list_rate"]) == pytest.approx(
        (1 / 6, 1 / 6, 1 / 6, 3 / 6, 2 / 6))
    orj = fmt[("original", "rejected")]  # only the broken code answer has a fence; only the tea answer a list
    assert (orj["header_rate"], orj["bold_rate"], orj["code_rate"], orj["markdown_rate"], orj["list_rate"]) == pytest.approx(
        (0, 0, 1 / 6, 1 / 6, 1 / 6))


def test_length_statistics_match_plain_python(run):
    report = audit(run.path, samples=0)
    lengths = _by(report.section("lengths").records(), "kind", "side")
    for kind in ("original", "causal", "neutral"):
        rows = [r for r in run.rows if r.kind == kind]
        for side in ("chosen", "rejected"):
            texts = [getattr(r, side)[0].content for r in rows]
            got = lengths[(kind, side)]
            assert got["answers"] == len(texts)
            assert got["mean_chars"] == pytest.approx(statistics.mean(len(t) for t in texts))
            assert got["median_chars"] == pytest.approx(statistics.median(len(t) for t in texts))
            assert got["mean_words"] == pytest.approx(statistics.mean(len(t.split()) for t in texts))
            assert got["median_words"] == pytest.approx(statistics.median(len(t.split()) for t in texts))
    # The histogram counts every answer once per side.
    for kind, sides in report.histogram.counts.items():
        n = sum(1 for r in run.rows if r.kind == kind)
        assert sum(sides["chosen"]) == n and sum(sides["rejected"]) == n


EDGE_TEXTS = [
    "\nStarts with a line end", "Ends with line ends\n\n", "  two   spaces\tand a tab ", "form\ffeed and\vvertical tab", "", "   ",
    "Title\n=====\nbody", "Title\n---\nbody", "a = b -- c", "# Header", "#hashtag only", "x ** y ** z", "__init__ and __main__",
    "**bold**", "~~~\ncode\n~~~", "  ```py\nx\n```", "- item", "1. first", "3) third", "a-b * c", "• bullet",
]


def test_word_counts_and_gated_format_flags_on_edge_cases(tmp_path):
    """Words are `str.split()` tokens (line ends at the end are no word: the regex split counted one); a format flag whose regex runs only on answers holding
    one of its substrings is the regex's own answer on every text."""
    from crome.builder.hub.audit import PATTERNS

    prov = Provenance(oracle="source", builder_version="0.1.0", seed=0)
    rows = [DatasetRow.make(prompt=[user(f"q{i}")], chosen=t, rejected=f"other {i}", preference=1.0, kind="original",
                            augmentation="original", source_id=f"sha256:{i}", provenance=prov) for i, t in enumerate(EDGE_TEXTS)]
    path = tmp_path / "edge.parquet"
    pq.write_table(to_table(rows, DatasetRow), path)
    report = audit(path, samples=0)
    got = _by(report.section("lengths").records(), "kind", "side")[("original", "chosen")]
    assert got["mean_words"] == pytest.approx(statistics.mean(len(t.split()) for t in EDGE_TEXTS))
    con = duckdb.connect()
    expected = {name: [bool(con.execute("SELECT regexp_matches(?, ?)", [t, pat]).fetchone()[0]) for t in EDGE_TEXTS]
                for name, pat in PATTERNS.items()}
    fmt = _by(report.section("formatting").records(), "kind", "side")[("original", "chosen")]
    for name in ("header", "bold", "code", "list"):
        assert fmt[f"{name}_rate"] == pytest.approx(sum(expected[name]) / len(EDGE_TEXTS)), name
    assert all(sum(v) > 0 for v in expected.values())  # every pattern matches some edge text


def test_duplicates_count_repeats_identical_sides_and_dropped_candidates(tmp_path):
    run = make_run(tmp_path)
    prov = Provenance(oracle="source", builder_version="0.1.0", seed=0)
    same = DatasetRow.make(prompt=[user("Say hi.")], chosen="Hi!", rejected="Hi!", preference=1.0, kind="original",
                           augmentation="original", source_id="sha256:x", provenance=prov)
    rows = run.rows + [run.rows[0], same]  # the first row published twice, and a pair with identical answers
    rewrite_export(run.path, {"data/train-00000-of-00001.parquet": lambda p: pq.write_table(to_table(rows, DatasetRow), p)})
    dup = _by(audit(run.path, samples=0).section("duplicates").records(), "kind")
    assert (dup["original"]["rows"], dup["original"]["repeated_ids"], dup["original"]["identical_answers"]) == (8, 1, 1)
    assert dup["original"]["repeated_answer_pairs"] == 2  # the twice-published row, both copies
    # Dropped by the build with a duplicate reason: one degrade (causal) and one irrelevant_query (neutral).
    assert (dup["causal"]["rejected_as_duplicate"], dup["neutral"]["rejected_as_duplicate"], dup["original"]["rejected_as_duplicate"]) == (1, 1, 0)


def test_samples_are_seeded_and_per_kind(run):
    a = audit(run.path, samples=2, seed=1).samples
    assert a == audit(run.path, samples=2, seed=1).samples
    assert {k: len(v) for k, v in a.items()} == {"original": 2, "causal": 2, "neutral": 2}
    ids = {r.id: r for r in run.rows}
    for kind, rows in a.items():
        for s in rows:
            row = ids[s["id"]]
            assert row.kind == kind and s["chosen"] == row.chosen[0].content
            assert s["prompt"] == [m for m in row.prompt if m.role == "user"][-1].content
    others = [audit(run.path, samples=2, seed=s).samples for s in range(2, 6)]
    assert any(o != a for o in others)


def test_published_folder_and_parquet_file_audit_alike_without_rejections(run, tmp_path):
    publish(run.path, str(tmp_path / "pub"), test_fraction=0.3)
    folder = audit(tmp_path / "pub", samples=0)
    assert folder.source_type == "folder" and folder.files == 2 and folder.rows == 21
    assert {s.key for s in folder.sections} >= {"by_kind", "length_shortcut", "duplicates"}
    assert "rejections" not in {s.key for s in folder.sections}
    splits = {r["split"]: r["rows"] for r in folder.section("by_split").records()}
    assert set(splits) == {"train", "test"} and sum(splits.values()) == 21
    assert folder.section("length_shortcut").rows == audit(run.path, samples=0).section("length_shortcut").rows
    single = audit(tmp_path / "pub/data/train-00000-of-00001.parquet", samples=0)
    assert single.source_type == "file" and single.rows == splits["train"]


def test_resolve_paths(run, tmp_path):
    src = resolve(run.path)
    assert src.type == "run" and src.data == [str((run.path / "data/train-00000-of-00001.parquet").resolve())]
    assert src.rejections == str((run.path / "rejections.parquet").resolve())
    assert resolve("hf://datasets/acme/crome-uf").data == ["hf://datasets/acme/crome-uf/**/*.parquet"]
    assert resolve("hf://datasets/acme/crome-uf/").data == ["hf://datasets/acme/crome-uf/**/*.parquet"]
    assert resolve("hf://datasets/acme/crome-uf@v2").data == ["hf://datasets/acme/crome-uf@v2/**/*.parquet"]
    assert resolve("hf://datasets/acme/crome-uf/data/test-*.parquet").data == ["hf://datasets/acme/crome-uf/data/test-*.parquet"]
    assert resolve("hf://datasets/acme/crome-uf").type == "hub"
    for bad, message in (("hf://models/acme/rm", "hf://datasets/ORG/NAME"), (str(tmp_path / "missing"), "does not exist")):
        with pytest.raises(AuditError, match=re.escape(message)):
            resolve(bad)
    (tmp_path / "empty").mkdir()
    with pytest.raises(AuditError, match="no Parquet files"):
        resolve(tmp_path / "empty")
    (tmp_path / "other").mkdir()
    duckdb.sql(f"COPY (SELECT 1 AS a) TO '{tmp_path / 'other' / 'x.parquet'}'")
    with pytest.raises(AuditError, match=r"not a crome dataset: columns \['id', 'prompt'"):
        audit(tmp_path / "other")


def test_hf_path_without_httpfs_says_so(monkeypatch):
    con = duckdb.connect()
    try:
        con.execute("LOAD httpfs")
        pytest.skip("httpfs is installed here: reading hf:// would go to the network")
    except duckdb.Error:
        pass
    with pytest.raises(AuditError, match="httpfs"):
        audit("hf://datasets/acme/crome-uf")


def test_user_sql_reads_the_pairs_view(run):
    result = run_query(run.path, "SELECT kind, count(*) AS n FROM pairs GROUP BY kind ORDER BY kind")
    assert result.columns == ["kind", "n"] and result.rows == [("causal", 9), ("neutral", 6), ("original", 6)]
    assert run_query(run.path, "SELECT count(*) FROM rejections WHERE stage = 'dedup'").rows == [(2,)]


@pytest.mark.parametrize("sql, keyword", [
    ("INSERT INTO pairs SELECT * FROM pairs", "INSERT"),
    ("UPDATE pairs SET kind = 'x'", "UPDATE"),
    ("DELETE FROM pairs", "DELETE"),
    ("DROP VIEW pairs", "DROP"),
    ("CREATE TABLE t AS SELECT * FROM pairs", "CREATE"),
    ("COPY (SELECT * FROM pairs) TO '{out}'", "COPY"),
    ("ATTACH '{db}' AS other", "ATTACH"),
    ("INSTALL httpfs", "INSTALL"),
    ("SELECT 1; DROP VIEW pairs", "DROP"),
])
def test_write_statements_are_refused(run, tmp_path, sql, keyword):
    out, db = tmp_path / "leak.csv", tmp_path / "other.duckdb"
    with pytest.raises(AuditError, match=rf"refused: statement \d is {keyword}"):
        run_query(run.path, sql.format(out=out, db=db))
    assert not out.exists() and not db.exists()


def test_select_cannot_reach_files_outside_the_dataset(run, tmp_path):
    secret = tmp_path / "elsewhere.csv"
    secret.write_text("a\n1\n")
    with pytest.raises(AuditError, match="disabled by configuration"):
        run_query(run.path, f"SELECT * FROM read_csv('{secret}')")


def test_cli_sql_refusal_and_json(run):
    runner = CliRunner()
    refused = runner.invoke(app, ["audit", str(run.path), "--sql", "DELETE FROM pairs"])
    assert refused.exit_code == 2 and "refused" in refused.output and "DELETE" in refused.output
    ok = runner.invoke(app, ["audit", str(run.path), "--sql", "SELECT kind, count(*) AS n FROM pairs GROUP BY kind ORDER BY kind", "--json"])
    assert ok.exit_code == 0 and json.loads(ok.stdout) == [{"kind": "causal", "n": 9}, {"kind": "neutral", "n": 6}, {"kind": "original", "n": 6}]


def test_cli_tables_and_json_document(run):
    runner = CliRunner()
    text = runner.invoke(app, ["audit", str(run.path), "--samples", "1"])
    assert text.exit_code == 0, text.output
    for title in ("Rows by kind", "Length shortcut", "Markdown and list formatting", "Rejections by stage", "Duplicates"):
        assert title in text.output
    doc = json.loads(runner.invoke(app, ["audit", str(run.path), "--json", "--samples", "1"]).stdout)
    assert doc["rows"] == 21 and {r["kind"]: r["rows"] for r in doc["by_kind"]}["causal"] == 9
    assert set(doc["samples"]) == {"original", "causal", "neutral"}
    assert doc["histogram"]["bin_width"] >= 1


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def test_html_report_is_self_contained_and_holds_its_plots(run, tmp_path):
    path = tmp_path / "audit.html"
    result = CliRunner().invoke(app, ["audit", str(run.path), "--report", str(path), "--samples", "2"])
    assert result.exit_code == 0, result.output
    html = path.read_text(encoding="utf-8")
    assert html.startswith("<!doctype html>")
    # Nothing is fetched: no URL, no script, no stylesheet link, no external image or font.
    for needle in ("http://", "https://", "<script", "<link", "src=", "href=", "url(", "@import"):
        assert needle not in html, needle
    parser = _Tags()
    parser.feed(html)
    tags = [t for t, _ in parser.tags]
    assert tags.count("svg") >= 8  # 3 histograms, shortcut, attributes, rejections, 2 formatting, kinds
    labels = {a.get("aria-label") for t, a in parser.tags if t == "svg"}
    assert {"original: answer length in characters", "causal: answer length in characters",
            "neutral: answer length in characters", "causal rows by attribute", "rejections by reason"} <= labels
    assert tags.count("rect") > 40
    text = " ".join(parser.text)
    for needle in ("factuality", "instruction_following", "dedup / near_duplicate", "66.7%", "Samples"):
        assert needle in text, needle


def test_render_html_escapes_answer_text(run, tmp_path):
    prov = Provenance(oracle="source", builder_version="0.1.0", seed=0)
    evil = DatasetRow.make(prompt=[user("<script>alert(1)</script>")], chosen="<img src=x onerror=alert(1)>",
                           rejected="fine", preference=1.0, kind="original", augmentation="original",
                           source_id="sha256:y", provenance=prov)
    rewrite_export(run.path, {"data/train-00000-of-00001.parquet": lambda p: pq.write_table(to_table([evil], DatasetRow), p)})
    html = render_html(audit(run.path, samples=1))
    assert "<script>" not in html and "<img" not in html and "&lt;img src=x" in html
