import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import json  # noqa: E402

import pytest  # noqa: E402
from paths import SHARED_DATA  # noqa: E402
from train_helpers import tiny_bert  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from crome.cli import app  # noqa: E402
from crome.train.bestofn import CandidateSet, TournamentPicker, best_of_n, draw, load_candidate_sets  # noqa: E402
from crome.train.data import DataError  # noqa: E402
from crome.train.evaluate import load_scorer, reward_scores  # noqa: E402

RMB = SHARED_DATA / "rm-bench" / "chat_filtered.json"


def test_best_of_n_on_rm_bench_matches_a_direct_computation(tmp_path):
    model = tiny_bert(tmp_path / "m", init_std=0.2)
    out = tmp_path / "bon.json"
    r = CliRunner().invoke(app, ["eval", str(model), "--data", str(RMB), "--limit", "4", "--best-of-n", "2,4,6", "--out", str(out),
                                 "--device", "cpu", "--bon-draws", "5"])  # fmt: skip
    assert r.exit_code == 0, r.output
    report = json.loads(out.read_text())
    bon = report["best_of_n"]
    assert report["arch"] == "bt" and bon["prompts"] == 4 and "highest reward" in bon["selection"]

    # Direct: each RM-Bench prompt's 6 answers (3 correct, then 3 incorrect; styles by position), scored one by one.
    records = json.loads(RMB.read_text())[:4]
    m, tok = load_scorer(str(model), device="cpu", dtype="float32")
    rewards = []
    for rec in records:
        answers = rec["chosen"] + rec["rejected"]
        rewards.append(reward_scores(m, tok, [[{"role": "user", "content": rec["prompt"]}]] * 6, answers)[0])
    gold = [1, 1, 1, 0, 0, 0]
    styles = ["concise", "detailed_plain", "detailed_markdown"] * 2

    # N = 6: one draw per prompt, the pick is the argmax of all six.
    six = bon["n"]["6"]
    picks = [max(range(6), key=lambda i: (r[i], -i)) for r in rewards]
    assert six["draws"] == 4 and six["best"] == 1.0 and six["worst"] == 0.0 and six["random"] == 0.5
    assert six["pick"] == pytest.approx(sum(gold[k] for k in picks) / 4)
    assert six["hit_rate"] == six["pick"]
    for style in set(styles):
        assert six["pick_styles"].get(style, 0.0) == pytest.approx(sum(styles[k] == style for k in picks) / 4)

    # N = 2, 4: the seeded draws (5 per prompt, N distinct candidates), each pick recomputed from the direct rewards.
    sets, _ = load_candidate_sets(RMB, limit=4)
    for n in (2, 4):
        rows = []
        for s, r in zip(sets, rewards):
            draws = draw(s, n, 5, 0)
            assert len(draws) == 5 and all(len(set(d)) == n for d in draws)
            for d in draws:
                k = max(d, key=lambda i: (r[i], -i))
                rows.append((gold[k], max(gold[i] for i in d), sum(gold[i] for i in d) / n))
        got = bon["n"][str(n)]
        assert got["draws"] == 20
        assert got["pick"] == pytest.approx(sum(x[0] for x in rows) / 20)
        assert got["best"] == pytest.approx(sum(x[1] for x in rows) / 20)
        assert got["random"] == pytest.approx(sum(x[2] for x in rows) / 20)
        assert got["hit_rate"] == pytest.approx(sum(x[0] == x[1] for x in rows) / 20)
    assert draw(sets[0], 2, 5, 0) == draw(sets[0], 2, 5, 0) != draw(sets[0], 2, 5, 1)


class FakeJudge:
    """P(A > B) from a fixed strength per answer text: Bradley-Terry on made-up strengths."""

    def __init__(self, strength):
        self.strength, self.calls = strength, []

    def preference(self, pairs):
        self.calls += pairs
        return [self.strength[p.chosen] / (self.strength[p.chosen] + self.strength[p.rejected]) for p in pairs]


def test_round_robin_tournament_picks_most_expected_wins_and_scores_each_needed_pair_once():
    s = CandidateSet([{"role": "user", "content": "q"}], ["a", "b", "c", "d"], [0.0, 3.0, 1.0, 2.0], [None] * 4, "g")
    judge = FakeJudge({"a": 1.0, "b": 8.0, "c": 2.0, "d": 4.0})
    rep = best_of_n(TournamentPicker(judge), [s], [2, 4], draws=6, seed=0, detail=True)
    assert rep["n"]["4"]["pick"] == 3.0 and rep["n"]["4"]["hit_rate"] == 1.0  # b beats everyone
    assert all(d["pick"] == max(d["draw"], key=lambda i: [1, 8, 2, 4][i]) for d in rep["draws"])
    assert len(judge.calls) == len({(p.chosen, p.rejected) for p in judge.calls}) == 6  # the 6 pairs of 4, once each
    assert "round-robin" in rep["selection"]


def test_local_candidate_shape_and_errors(tmp_path):
    f = tmp_path / "cands.jsonl"
    rows = [
        {"id": "p1", "prompt": "Name a prime.", "candidates": [{"text": "7", "score": 9}, {"text": "8", "score": 1, "style": "short"}]},
        {"prompt": [{"role": "user", "content": "Hi"}], "candidates": [{"text": "only one", "score": 1}]},
    ]
    f.write_text("\n".join(json.dumps(r) for r in rows))
    sets, info = load_candidate_sets(f)
    assert [s.scores for s in sets] == [[9.0, 1.0]] and sets[0].styles == [None, "short"] and sets[0].group == "p1"
    assert info[0]["skipped_fewer_than_2_candidates"] == 1
    f.write_text(json.dumps({"prompt": "q", "candidates": [{"text": "x"}]}))
    with pytest.raises(DataError, match=r"cands.jsonl row 0: candidates\[0\]"):
        load_candidate_sets(f)
    f.write_text(json.dumps({"prompt": "q", "candidates": [{"text": "x", "score": "high"}, {"text": "y", "score": 1}]}))
    with pytest.raises(DataError, match=r"row 0: candidates\[0\].score: score must be a number"):
        load_candidate_sets(f)
    r = CliRunner().invoke(app, ["eval", "nowhere", "--data", str(f), "--best-of-n", "2,x"])
    assert r.exit_code == 2 and "comma list of integers" in r.output
