import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before datasets/transformers read it

import json  # noqa: E402
import math  # noqa: E402

import pyarrow.parquet as pq  # noqa: E402
import pytest  # noqa: E402
from train_helpers import PROV, tiny_bert, write_run  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from crome.cli import app  # noqa: E402
from crome.outputs import OutputError  # noqa: E402
from crome.schemas import DatasetRow, Rejection, pair_id, to_table  # noqa: E402
from crome.schemas.messages import user  # noqa: E402
from crome.train.evaluate import load_scorer, score_pairs  # noqa: E402
from crome.train.filter import FILTER_CHECK, Threshold, filter_run, read_rows, strict_tau, tie_tau  # noqa: E402
from paths import SHARED_DATA  # noqa: E402

MARGINS = [1.5, -1.0, 0.4, 0.9, 0.2]


@pytest.mark.parametrize(
    ("threshold", "tau", "kept"),
    [
        (Threshold(margin=0.5), 0.5, [-1.0, 0.2, 0.4]),
        (Threshold(margin=0.0), 0.0, [-1.0]),  # only what the baseline misranks
        (Threshold(fraction=0.6), 0.9, [-1.0, 0.2, 0.4]),  # 3 of 5 with the lowest margins
        (Threshold(fraction=0.0), -1.0, [-1.0]),  # a misranked pair is kept whatever the share
        (Threshold(fraction=1.0), math.inf, MARGINS),
    ],
)
def test_strict_rule_by_hand(threshold, tau, kept):
    assert strict_tau(MARGINS, threshold) == tau
    assert sorted(m for m in MARGINS if m <= 0 or m < tau) == sorted(kept)


@pytest.mark.parametrize(
    ("threshold", "tau", "kept"),
    [
        (Threshold(margin=0.5), 0.5, [-1.2, 0.8]),
        (Threshold(fraction=0.5), 0.3, [-1.2, 0.8]),  # the half with the largest |margin|
        (Threshold(fraction=0.25), 0.8, [-1.2]),
        (Threshold(fraction=1.0), -math.inf, [0.1, -0.3, 0.8, -1.2]),
    ],
)
def test_tie_rule_by_hand(threshold, tau, kept):
    ties = [0.1, -0.3, 0.8, -1.2]
    assert tie_tau(ties, threshold) == tau
    assert sorted(m for m in ties if abs(m) > tau) == sorted(kept)


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    return tiny_bert(tmp_path_factory.mktemp("rm") / "baseline", init_std=0.2)


@pytest.fixture(scope="module")
def scorer(baseline):
    return load_scorer(str(baseline), device="cpu")


def source_tie(i: int) -> DatasetRow:
    """A tie in the source: kind neutral, augmentation original (the contract's source tie)."""
    prompt, a, b = [user(f"Which of these two haiku about autumn {i} is better?")], f"Leaves fall {i}.", f"Red leaves drift {i}."
    return DatasetRow.make(prompt=prompt, chosen=a, rejected=b, preference=0.5, kind="neutral", augmentation="original",
                           source_id=pair_id(prompt, a, b, 0.5), provenance=PROV)


def mirrored(row: DatasetRow) -> DatasetRow:
    """The same causal pair with its answers swapped: its margin is minus the original's, so both signs occur."""
    chosen, rejected = row.rejected[0].content, row.chosen[0].content
    return row.model_copy(update={"chosen": row.rejected, "rejected": row.chosen,
                                  "id": pair_id(row.prompt, chosen, rejected, row.preference)})


@pytest.fixture
def run(tmp_path):
    """10 train source pairs (original, degrade and its mirror, IQN tie each), 3 source ties, and a 2-pair test split."""
    rows = write_run(tmp_path / "run", 12, split_test=2)
    shard = tmp_path / "run" / "data" / "train-00000-of-00001.parquet"
    train = read_rows(shard)
    train += [mirrored(r) for r in train if r.augmentation == "degrade"] + [source_tie(i) for i in range(3)]
    pq.write_table(to_table(train, DatasetRow), shard)
    return tmp_path / "run", train, [r for r in rows if r not in train]


def margins_of(rows, scorer):
    return dict(zip((r.id for r in rows), score_pairs(*scorer, rows)))


def filtered(out):
    return {r.id: r for r in read_rows(out / "data" / "train-00000-of-00001.parquet")}


def test_filter_keeps_originals_and_source_ties_unscored_and_applies_each_rule(tmp_path, run, scorer, baseline):
    path, train, test = run
    causal = [r for r in train if r.augmentation == "degrade"]
    ties = [r for r in train if r.augmentation == "irrelevant_query"]
    m = margins_of(causal + ties, scorer)
    positive = sorted(m[r.id] for r in causal if m[r.id] > 0)
    assert len(positive) == 10  # every pair and its mirror: one of the two is ranked right
    tau = positive[4]  # between the 5th and 6th positive margin: 4 right-but-unsure pairs kept, 6 confident ones dropped
    tie_t = sorted(abs(m[r.id]) for r in ties)[5]

    s = filter_run(path, tmp_path / "f", baseline=str(baseline), keep_margin=tau, tie_margin=tie_t, scorer=scorer)
    kept = filtered(tmp_path / "f")
    originals = [r for r in train if r.augmentation == "original"]
    assert all(kept[r.id] == r for r in originals)  # kept as they are, no margin, no check
    assert sum(r.preference == 0.5 for r in originals) == 3  # the source ties among them
    assert {r.id for r in causal if r.id in kept} == {r.id for r in causal if m[r.id] <= 0 or m[r.id] < tau}
    assert {r.id for r in ties if r.id in kept} == {r.id for r in ties if abs(m[r.id]) > tie_t}
    for r in causal + ties:
        if r.id in kept:
            assert kept[r.id].quality.baseline_margin == pytest.approx(m[r.id], abs=1e-5) and FILTER_CHECK in kept[r.id].quality.checks
    # The test split is copied as it is: never scored, never dropped.
    assert read_rows(tmp_path / "f" / "data" / "test-00000-of-00001.parquet") == test

    f = s["filter"]
    assert f["scored"] == len(causal) + len(ties) == 30 and f["unscored"] == {"original": 10, "source_tie": 3, "test": 6}
    assert f["thresholds"]["causal"] == {"given": {"margin": tau}, "tau": tau, "scored": 20, "kept": 14, "dropped": 6}
    assert f["thresholds"]["neutral"] == {"given": {"margin": tie_t}, "tau": tie_t, "scored": 10, "kept": 4, "dropped": 6}
    assert f["margins"]["causal"]["n"] == 20 and f["margins"]["causal"]["share_misranked"] == 0.5 and f["margins"]["neutral"]["n"] == 10
    assert f["margins"]["causal"]["min"] == pytest.approx(min(m[r.id] for r in causal), abs=1e-5)
    rejections = [Rejection.model_validate(r | {"candidate": json.loads(r["candidate"]) if r["candidate"] else None})
                  for r in pq.read_table(tmp_path / "f" / "rejections.parquet").to_pylist() if r["stage"] == "filter"]
    assert {r.candidate_id for r in rejections} | set(kept) == {r.id for r in train}
    assert {r.reason for r in rejections if r.augmentation == "degrade"} == {"baseline_confident"}
    assert {r.reason for r in rejections if r.augmentation == "irrelevant_query"} == {"baseline_invariant"}


def test_the_thresholds_move_as_documented(tmp_path, run, scorer, baseline):
    path, train, _ = run

    def kept(name, **kw):
        filter_run(path, tmp_path / name, baseline=str(baseline), scorer=scorer, **kw)
        rows = filtered(tmp_path / name)
        return {r.id for r in rows.values() if r.augmentation == "degrade"}, {r.id for r in rows.values() if r.augmentation == "irrelevant_query"}

    m = margins_of([r for r in train if r.augmentation in ("degrade", "irrelevant_query")], scorer)
    mid_c = sorted(v for r in train if r.augmentation == "degrade" and (v := m[r.id]) > 0)[5]
    mid_t = sorted(abs(m[r.id]) for r in train if r.augmentation == "irrelevant_query")[5]
    low_c, low_t = kept("low", keep_margin=0.0, tie_margin=0.0)
    high_c, high_t = kept("high", keep_margin=mid_c, tie_margin=mid_t)
    # A higher tau keeps more causal pairs; a higher tie tau keeps fewer ties.
    assert len(low_c) == 10 < len(high_c) < 20 and low_c < high_c and 0 < len(high_t) < len(low_t) and high_t < low_t
    # The scale-free form keeps the share asked for, whatever the baseline's reward scale.
    share_c, half_t = kept("half", keep_fraction=0.7, tie_fraction=0.3)
    assert len(share_c) == 14 and low_c < share_c and len(half_t) == 3
    assert min(abs(m[i]) for i in half_t) >= max(abs(m[r.id]) for r in train if r.augmentation == "irrelevant_query" and r.id not in half_t)


def test_bad_or_missing_thresholds_are_refused(tmp_path, run, baseline, scorer):
    path, _, _ = run
    with pytest.raises(ValueError, match="tie-margin or --tie-fraction"):
        filter_run(path, tmp_path / "a", baseline=str(baseline), keep_margin=0.5, scorer=scorer)
    with pytest.raises(ValueError, match="not both"):
        filter_run(path, tmp_path / "b", baseline=str(baseline), keep_margin=0.5, keep_fraction=0.5, tie_margin=0.1)
    with pytest.raises(ValueError, match=">= 0"):
        filter_run(path, tmp_path / "c", baseline=str(baseline), keep_margin=-1, tie_margin=0.1)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        filter_run(path, tmp_path / "d", baseline=str(baseline), keep_margin=0.1, tie_fraction=1.5)
    with pytest.raises(ValueError, match="new directory"):
        filter_run(path, path, baseline=str(baseline), keep_margin=0.1, tie_margin=0.1)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(OutputError, match=r"holds files crome did not write \(.*full/x\)"):
        filter_run(path, tmp_path / "full", baseline=str(baseline), keep_margin=0.1, tie_margin=0.1)
    assert (tmp_path / "full" / "x").read_text() == "x" and sorted(p.name for p in (tmp_path / "full").iterdir()) == ["x"]


LLMBAR = SHARED_DATA / "llmbar" / "LLMBar_Natural.json"


@pytest.mark.skipif(not LLMBAR.exists(), reason="shared LLMBar data not present")
def test_source_ties_survive_crome_filter_and_train_as_originals(tmp_path, baseline):
    from crome.train.data import load_preference_data

    # Real LLMBar rows, every third one labelled a tie (as arena data has them).
    rows = json.loads(LLMBAR.read_text())[:24]
    for i, r in enumerate(rows):
        if i % 3 == 0:
            r["label"] = "tie"
    (tmp_path / "src.json").write_text(json.dumps(rows))
    runner = CliRunner()
    assert runner.invoke(app, ["build", str(tmp_path / "src.json"), "--out", str(tmp_path / "run"), "-q"]).exit_code == 0
    built = read_rows(tmp_path / "run" / "data" / "train-00000-of-00001.parquet")
    source_ties = {r.id for r in built if r.augmentation == "original" and r.preference == 0.5}
    assert len(source_ties) == 8 and {r.kind for r in built if r.id in source_ties} == {"neutral"}

    result = runner.invoke(app, ["filter", str(tmp_path / "run"), "--rm", str(baseline), "--out", str(tmp_path / "f"), "--device", "cpu",
                                 "--keep-fraction", "0.5", "--tie-fraction", "0.0"])
    assert result.exit_code == 0, result.output
    kept = read_rows(tmp_path / "f" / "data" / "train-00000-of-00001.parquet")
    assert source_ties <= {r.id for r in kept}  # even with every augmented tie dropped
    assert not [r for r in kept if r.augmentation == "irrelevant_query"]
    summary = json.loads((tmp_path / "f" / "summary.json").read_text())["filter"]
    assert summary["unscored"]["source_tie"] == 8 and summary["thresholds"]["neutral"]["kept"] == 0

    baseline_rows = load_preference_data(tmp_path / "f", kinds=["original"]).train
    assert sorted(baseline_rows["id"]) == sorted(r.id for r in kept if r.augmentation == "original")
    assert sum(p == 0.5 for p in baseline_rows["preference"]) == 8
    neutral_only = load_preference_data(tmp_path / "run", kinds=["neutral"]).train
    assert set(neutral_only["augmentation"]) == {"irrelevant_query"}


def test_cli_filter_prints_each_rule_and_fails_in_one_line(tmp_path, run, baseline):
    path, _, _ = run
    result = CliRunner().invoke(app, ["filter", str(path), "--rm", str(baseline), "--keep-margin", "0", "--tie-fraction", "0.5",
                                      "--out", str(tmp_path / "f"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "f" / "summary.json").read_text())
    assert summary["filter"]["thresholds"]["causal"]["given"] == {"margin": 0.0}
    assert summary["filter"]["thresholds"]["neutral"]["given"] == {"fraction": 0.5} and summary["filter"]["thresholds"]["neutral"]["kept"] == 5
    assert summary["filter"]["thresholds"]["causal"]["kept"] == 10  # tau 0: exactly the misranked half
    bad = CliRunner().invoke(app, ["filter", str(path), "--rm", str(baseline), "--keep-margin", "0", "--out", str(tmp_path / "g")])
    assert bad.exit_code == 2 and "--tie-margin or --tie-fraction" in bad.output and len(bad.output.strip().splitlines()) == 1


def test_refiltering_replaces_only_filter_outputs_and_reads_only_the_runs_export(tmp_path, baseline):
    from helpers_runs import make_run

    run = make_run(tmp_path, n_sources=3)
    (run.path / "data" / "notes-00000-of-00001.parquet").write_bytes(b"the user's, not rows")  # never read as data
    first = filter_run(run.path, tmp_path / "f", baseline=str(baseline), keep_fraction=1.0, tie_fraction=1.0)
    (tmp_path / "f" / "notes.txt").write_text("mine")
    second = filter_run(run.path, tmp_path / "f", baseline=str(baseline), keep_margin=0.0, tie_margin=0.0)
    assert first["filter"]["input_export"] == second["filter"]["input_export"] is not None
    assert (tmp_path / "f" / "notes.txt").read_text() == "mine"
    rows = read_rows(tmp_path / "f" / "data" / "train-00000-of-00001.parquet")
    assert len(rows) == second["counts"]["rows"] and sorted(p.name for p in (tmp_path / "f" / "data").iterdir()) == [
        "train-00000-of-00001.parquet"]
