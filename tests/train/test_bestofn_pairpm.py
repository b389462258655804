"""Best-of-N with a real saved PairPM on RM-Bench, checked against a round robin computed here from the model's P."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import json  # noqa: E402
from collections import Counter  # noqa: E402

import pytest  # noqa: E402
from paths import SHARED_DATA  # noqa: E402
from train_helpers import tiny_bert, write_run  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from crome.cli import app  # noqa: E402
from crome.train.bestofn import draw, load_candidate_sets  # noqa: E402
from crome.train.config import CromeConfig  # noqa: E402
from crome.train.evaluate import load_scorer  # noqa: E402
from crome.train.pairpm.judge import PairPMJudge  # noqa: E402
from crome.train.pairpm.trainer import train  # noqa: E402
from crome.train.pairs import EvalPair  # noqa: E402

RMB = SHARED_DATA / "rm-bench"
FILES = [RMB / "chat_filtered.json", RMB / "safety-refuse_filtered.json"]  # two subsets, so the report splits by subset too
LIMIT, DRAWS, NS = 2, 4, (2, 4, 6)
GOLD = [1.0, 1.0, 1.0, 0.0, 0.0, 0.0]  # RM-Bench: the 3 chosen (correct) answers, then the 3 rejected
STYLES = ["concise", "detailed_plain", "detailed_markdown"] * 2


def test_pairpm_best_of_n_on_rm_bench_matches_a_direct_round_robin(tmp_path):
    # A real PairPM: the tiny BERT trained 2 steps as a classifier-head PairPM by `crome train`'s trainer, saved to disk.
    write_run(tmp_path / "run", 4)
    base = tiny_bert(tmp_path / "bert", init_std=0.2)
    model = train(CromeConfig(
        output_dir=str(tmp_path / "pm"), model_name_or_path=str(base), dataset=str(tmp_path / "run"), arch="pairpm", max_steps=2,
        per_device_train_batch_size=12, learning_rate=5e-3, logging_steps=1, save_strategy="no", use_cpu=True, max_length=200, seed=0,
        disable_tqdm=True, report_to=[],
    ))  # fmt: skip
    assert (model / "crome_pairpm.json").is_file()

    out = tmp_path / "bon.json"
    args = ["eval", str(model), "--best-of-n", ",".join(map(str, NS)), "--limit", str(LIMIT), "--bon-draws", str(DRAWS),
            "--out", str(out), "--device", "cpu"]  # fmt: skip
    for f in FILES:
        args += ["--data", str(f)]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    report = json.loads(out.read_text())
    bon = report["best_of_n"]
    n_prompts = LIMIT * len(FILES)
    assert report["arch"] == "pairpm" and "round-robin" in bon["selection"]
    assert bon["prompts"] == n_prompts and bon["draws_per_prompt"] == DRAWS and bon["seed"] == 0
    assert [f["sets"] for f in report["files"]] == [LIMIT] * len(FILES)

    # Direct: the saved model reloaded the way `crome eval` loads it; each RM-Bench prompt's 6 answers by hand.
    judge, _ = load_scorer(str(model), device="cpu", dtype="float32")
    assert isinstance(judge, PairPMJudge) and judge.head == "classifier"
    prompts = []  # (messages, answers, subset) per prompt, in file order
    for f in FILES:
        for rec in json.loads(f.read_text())[:LIMIT]:
            prompts.append(([{"role": "user", "content": rec["prompt"]}], rec["chosen"] + rec["rejected"], rec["subset"]))

    def p_over(messages, a, b):
        """P(a > b) averaged over both orders, from the judge's raw (P_ab, P_ba): (P_ab + 1 - P_ba) / 2."""
        ((x, y, _),) = judge.probabilities([EvalPair(prompt=messages, chosen=a, rejected=b)])
        return (x + 1.0 - y) / 2

    # Every ordered pair scored on its own (one pair per batch): P[i][j] = P(answer i > answer j).
    P = []
    for messages, answers, _ in prompts:
        assert len(set(answers)) == 6  # no duplicate answers: a tie would need exactly equal sums
        m = [[p_over(messages, answers[i], answers[j]) if i != j else None for j in range(6)] for i in range(6)]
        assert all(m[i][j] + m[j][i] == pytest.approx(1.0, abs=1e-6) for i in range(6) for j in range(6) if i != j)
        P.append(m)
    spread = [x for m in P for row in m for x in row if x is not None]
    assert max(spread) - min(spread) > 1e-3, "P is constant: the tournament would be degenerate"

    # The draws: `draws` seeded subsets of N distinct candidates per prompt, the same on a rerun, one draw of all six for N = 6.
    sets = []
    for f in FILES:
        sets += load_candidate_sets(f, limit=LIMIT)[0]
    assert [s.candidates for s in sets] == [answers for _, answers, _ in prompts]
    assert all(s.scores == GOLD and s.styles == STYLES for s in sets)

    picked = set()
    for n in NS:
        rows = []  # (prompt, draw, pick)
        for pi, s in enumerate(sets):
            draws = draw(s, n, DRAWS, 0)
            assert draws == draw(s, n, DRAWS, 0)
            if n == 6:
                assert draws == [list(range(6))]
            else:
                assert len(draws) == DRAWS and all(len(set(d)) == n and set(d) <= set(range(6)) for d in draws)
                assert draws != draw(s, n, DRAWS, 1)
            for d in draws:
                # Round robin: each candidate's sum of P(it > opponent) over the rest of the draw; most wins, ties to the first listed.
                wins = {i: sum(P[pi][i][j] for j in d if j != i) for i in d}
                top = sorted(wins.values(), reverse=True)
                assert top[0] - top[1] > 1e-5, f"near-tie in {d}: {wins}"  # the comparison would hang on float noise
                k = max(d, key=lambda i: (wins[i], -i))
                rows.append((pi, d, k))
                picked.add(k)
        got = bon["n"][str(n)]
        draws_total = n_prompts * (1 if n == 6 else DRAWS)
        assert got["prompts"] == n_prompts and got["draws"] == draws_total == len(rows)
        assert got["skipped_prompts_fewer_candidates"] == 0

        pick = [GOLD[k] for _, _, k in rows]
        best = [max(GOLD[i] for i in d) for _, d, _ in rows]
        rand = [sum(GOLD[i] for i in d) / n for _, d, _ in rows]
        worst = [min(GOLD[i] for i in d) for _, d, _ in rows]
        mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
        assert got["pick"] == pytest.approx(mean(pick))
        assert got["best"] == pytest.approx(mean(best))
        assert got["random"] == pytest.approx(mean(rand))
        assert got["worst"] == pytest.approx(mean(worst))
        assert got["regret"] == pytest.approx(mean(best) - mean(pick))
        hits = [k for (_, _, k), x, b in zip(rows, pick, best) if x == b]
        assert got["hit_rate"] == pytest.approx(len(hits) / len(rows))
        gap = mean(best) - mean(rand)
        assert got["normalized"] == (pytest.approx((mean(pick) - mean(rand)) / gap) if gap > 1e-12 else None)
        if n == 6:
            assert got["best"] == 1.0 and got["worst"] == 0.0 and got["random"] == 0.5

        # Styles: share of picks per style, share of offered candidates per style, styles of the picks that hit the best.
        assert got["pick_styles"] == pytest.approx({st: c / len(rows) for st, c in Counter(STYLES[k] for _, _, k in rows).items()})
        offered = Counter(STYLES[i] for _, d, _ in rows for i in d)
        assert got["offered_styles"] == pytest.approx({st: c / sum(offered.values()) for st, c in offered.items()})
        hit_styles = {st: c / len(hits) for st, c in Counter(STYLES[k] for k in hits).items()} if hits else {}
        assert got["best_pick_styles"] == pytest.approx(hit_styles)

        # Per subset (RM-Bench's `subset` field): draws and the mean gold of pick, best and random.
        expected = {}
        for name in {sub for _, _, sub in prompts}:
            mine = [i for i, (pi, _, _) in enumerate(rows) if prompts[pi][2] == name]
            expected[name] = {"draws": len(mine), "pick": mean([pick[i] for i in mine]), "best": mean([best[i] for i in mine]),
                              "random": mean([rand[i] for i in mine])}  # fmt: skip
        assert got["subsets"].keys() == expected.keys()
        assert all(got["subsets"][name] == pytest.approx(figures) for name, figures in expected.items())

    # Not degenerate: different candidates win across the draws.
    assert len(picked) >= 2, picked
