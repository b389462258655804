import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before datasets/transformers read it

import json  # noqa: E402

import pyarrow.parquet as pq  # noqa: E402
import pytest  # noqa: E402
from train_helpers import tiny_bert, write_run  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from crome.cli import app  # noqa: E402
from crome.outputs import OutputError  # noqa: E402
from crome.schemas import DatasetRow, Rejection  # noqa: E402
from crome.train.evaluate import load_scorer, score_pairs  # noqa: E402
from crome.train.filter import FILTER_CHECK, filter_run, keep, read_rows  # noqa: E402


@pytest.mark.parametrize(
    ("kind", "margin", "tau", "kept"),
    [
        ("causal", -0.2, 0.5, True),  # misranked
        ("causal", 0.3, 0.5, True),  # right but unsure
        ("causal", 0.8, 0.5, False),  # confidently right: nothing to learn
        ("causal", 0.0, 0.0, True),  # a dead heat is a misranking even at tau 0
        ("neutral", 0.8, 0.5, True),  # baseline not invariant
        ("neutral", -0.8, 0.5, True),
        ("neutral", 0.1, 0.5, False),  # already a tie
    ],
)
def test_rule(kind, margin, tau, kept):
    assert keep(kind, margin, tau) is kept


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    return tiny_bert(tmp_path_factory.mktemp("rm") / "baseline", init_std=0.2)


def test_filtered_run_accounts_for_every_row(tmp_path, baseline):
    rows = write_run(tmp_path / "run", 10)
    model, tok = load_scorer(str(baseline), device="cpu")
    augmented = [r for r in rows if r.kind != "original"]
    margins = dict(zip((r.id for r in augmented), score_pairs(model, tok, augmented)))
    # A threshold inside the observed margins, so that both outcomes occur.
    tau = sorted(abs(m) for m in margins.values())[len(margins) // 2]

    summary = filter_run(tmp_path / "run", tmp_path / "filtered", baseline=str(baseline), tau=tau, scorer=(model, tok))

    kept = read_rows(tmp_path / "filtered" / "data" / "train-00000-of-00001.parquet")
    rejections = [Rejection.model_validate(r | {"candidate": json.loads(r["candidate"]) if r["candidate"] else None})
                  for r in pq.read_table(tmp_path / "filtered" / "rejections.parquet").to_pylist()]
    new = [r for r in rejections if r.stage == "filter"]
    assert [r.stage for r in rejections if r.stage != "filter"] == ["source"]  # the run's own rejections copied
    assert len(kept) + len(new) == len(rows)
    assert {r.id for r in kept} | {r.candidate_id for r in new} == {r.id for r in rows}
    assert [r for r in kept if r.kind == "original"] == [r for r in rows if r.kind == "original"]
    for row in kept:
        if row.kind != "original":
            assert row.quality.baseline_margin == pytest.approx(margins[row.id], abs=1e-5)
            assert FILTER_CHECK in row.quality.checks and keep(row.kind, margins[row.id], tau)
    for rej in new:
        assert not keep("neutral" if rej.augmentation == "irrelevant_query" else "causal", margins[rej.candidate_id], tau)
        assert rej.reason in ("baseline_confident", "baseline_invariant") and f"{tau:g}" in rej.detail
        assert rej.candidate["baseline_margin"] == pytest.approx(margins[rej.candidate_id], abs=1e-5)

    f = summary["filter"]
    assert f["tau"] == tau and f["baseline"] == str(baseline) and f["scored"] == 20
    assert sum(f["kept"].values()) + sum(f["dropped"].values()) == 20 and sum(f["dropped"].values()) == len(new) > 0
    counts = json.loads((tmp_path / "filtered" / "summary.json").read_text())["counts"]
    assert counts["rows"] == len(kept) and counts["rejections"] == len(rejections)
    assert counts["rows_by_kind"]["original"] == 10
    assert counts["rejections_by_stage"]["source"] == {"identical_answers": 1}
    assert sum(counts["rejections_by_stage"]["filter"].values()) == len(new)
    assert counts["source_pairs"] == 10  # untouched build counts stay
    assert (tmp_path / "filtered" / "config.json").exists()


def test_extreme_thresholds(tmp_path, baseline):
    write_run(tmp_path / "run", 4)
    s = filter_run(tmp_path / "run", tmp_path / "high", baseline=str(baseline), tau=1e9)
    assert s["filter"]["kept"] == {"causal": 4} and s["filter"]["dropped"] == {"neutral": 4}
    rows = read_rows(tmp_path / "high" / "data" / "train-00000-of-00001.parquet")
    assert all(isinstance(r, DatasetRow) for r in rows) and len(rows) == 8


def test_bad_arguments(tmp_path, baseline):
    write_run(tmp_path / "run", 2)
    with pytest.raises(ValueError, match="tau"):
        filter_run(tmp_path / "run", tmp_path / "o", baseline=str(baseline), tau=-1)
    with pytest.raises(ValueError, match="new directory"):
        filter_run(tmp_path / "run", tmp_path / "run", baseline=str(baseline), tau=0.1)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(OutputError, match=r"holds files crome did not write \(.*full/x\)"):
        filter_run(tmp_path / "run", tmp_path / "full", baseline=str(baseline), tau=0.1)
    assert (tmp_path / "full" / "x").read_text() == "x" and sorted(p.name for p in (tmp_path / "full").iterdir()) == ["x"]


def test_cli_filter(tmp_path, baseline):
    write_run(tmp_path / "run", 3)
    result = CliRunner().invoke(
        app, ["filter", str(tmp_path / "run"), "--rm", str(baseline), "--keep-margin", "0", "--out", str(tmp_path / "f"), "--device", "cpu"]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "f" / "summary.json").read_text())
    assert summary["filter"]["tau"] == 0.0 and summary["counts"]["rows_by_kind"]["original"] == 3
    bad = CliRunner().invoke(app, ["filter", str(tmp_path / "nope"), "--rm", str(baseline), "--keep-margin", "0", "--out", str(tmp_path / "g")])
    assert bad.exit_code == 2 and "no data/*.parquet" in bad.output


def test_refiltering_replaces_only_filter_outputs_and_reads_only_the_runs_export(tmp_path, baseline):
    from helpers_runs import make_run

    run = make_run(tmp_path, n_sources=3)
    (run.path / "data" / "notes-00000-of-00001.parquet").write_bytes(b"the user's, not rows")  # never read as data
    first = filter_run(run.path, tmp_path / "f", baseline=str(baseline), tau=1e9)
    (tmp_path / "f" / "notes.txt").write_text("mine")
    second = filter_run(run.path, tmp_path / "f", baseline=str(baseline), tau=0.0)
    assert first["filter"]["input_export"] == second["filter"]["input_export"] is not None
    assert (tmp_path / "f" / "notes.txt").read_text() == "mine"
    rows = read_rows(tmp_path / "f" / "data" / "train-00000-of-00001.parquet")
    assert len(rows) == second["counts"]["rows"] and sorted(p.name for p in (tmp_path / "f" / "data").iterdir()) == [
        "train-00000-of-00001.parquet"]
