"""Best-of-N: let a reward model pick one of N candidate answers and measure the gold quality of its pick.

For each prompt with K candidates of known quality and each N <= K, `draws` subsets of N distinct
candidates are drawn (seeded by the seed, the prompt, N and the set's id: a record's `id`, or for a
local file without one "<file name> row <i>", so a rerun draws the same, and a renamed file or moved
row draws anew; with N = K there is one draw, all candidates). The model picks one:

- BT: the candidate with the highest reward r(prompt, answer);
- PairPM: a round-robin tournament: every two candidates of the draw are compared (P averaged over
  both orders) and the pick is the one with the highest sum of P(it > other) over its opponents.
  Only the pairs that some draw needs are scored, each once.

Exact ties in the model's scores go to the candidate listed first in the file (two identical
answers are scored as two inputs, whose float noise, about 1e-8, may still order them). Per N the report gives,
averaged over every draw of every prompt: the gold score of the pick, of the best candidate in the
draw (`best`), its mean (`random`: the expected gold of a uniform random pick, exact rather than
sampled) and of the worst; `hit_rate` (the pick has the draw's best gold score), `regret` (best -
pick) and `normalized` ((pick - random) / (best - random): 0 is no better than chance, 1 is
always the best). With styles (RM-Bench), the share of picks in each style next to the share of
candidates in each style: a style-biased model picks one style more often than it is offered.

Input shapes (`load_candidate_sets`), a JSON list, JSONL or Parquet, or a folder of them:

- RM-Bench (`{id, subset, prompt, chosen: [3], rejected: [3]}`): six candidates, gold 1 for the
  chosen (correct) answers and 0 for the rejected ones, styles concise / detailed_plain /
  detailed_markdown by position;
- local: `{"prompt": str or [{role, content}], "candidates": [{"text": str, "score": float,
  "style": str (optional)}], "id": str (optional), "subset": str (optional)}`; higher score is
  better and any scale works (e.g. UltraFeedback ratings).
"""

from __future__ import annotations

import gzip
import json
import random
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from crome.schemas.hashing import short_id
from crome.train.data import DataError, as_answer, as_messages
from crome.train.pairs import DATA_SUFFIXES, RM_BENCH_STYLES

DEFAULT_DRAWS = 8


@dataclass
class CandidateSet:
    prompt: list[dict[str, str]]
    candidates: list[str]
    scores: list[float]
    styles: list[str | None]
    group: str
    subset: str = "default"


# ---------------------------------------------------------------- loading


def _records(path: Path) -> list[Any]:
    name = path.name
    opener: Any = gzip.open if name.endswith(".gz") else open
    if name.endswith((".jsonl", ".jsonl.gz")):
        with opener(path, "rt", encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
    if name.endswith((".json", ".json.gz")):
        with opener(path, "rt", encoding="utf-8") as f:
            data = json.load(f)
        if not isinstance(data, list):
            raise DataError(f"{path.name}: expected a JSON list of candidate sets")
        return data
    if name.endswith(".parquet"):
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    raise DataError(f"{path.name}: not a candidate file ({', '.join(DATA_SUFFIXES)})")


def _score(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise DataError(f"{where}: score must be a number, got {value!r:.60}")
    return float(value)


def candidate_set(record: Any, *, where: str, default_subset: str) -> CandidateSet:
    """One record as a CandidateSet (RM-Bench or the local shape); errors name the row and field."""
    if not isinstance(record, dict) or "prompt" not in record:
        raise DataError(f"{where}: expected an object with prompt and candidates (or RM-Bench chosen/rejected lists)")
    prompt = as_messages(record["prompt"], where=f"{where}: prompt")
    group = str(record.get("id", where))
    subset = str(record.get("subset") or default_subset)
    if "candidates" in record:
        items = record["candidates"]
        if not isinstance(items, list):
            raise DataError(f"{where}: candidates must be a list of {{text, score}}")
        texts, scores, styles = [], [], []
        for i, c in enumerate(items):
            w = f"{where}: candidates[{i}]"
            if not isinstance(c, dict) or "score" not in c:
                raise DataError(f"{w}: expected {{text, score, style?}}, got {c!r:.80}")
            text = next((c[k] for k in ("text", "content", "answer", "response") if k in c), None)
            texts.append(as_answer(text, where=w))
            scores.append(_score(c["score"], f"{w}.score"))
            styles.append(str(c["style"]) if c.get("style") is not None else None)
        return CandidateSet(prompt, texts, scores, styles, group, subset)
    chosen, rejected = record.get("chosen"), record.get("rejected")
    if isinstance(chosen, list) and isinstance(rejected, list) and chosen and rejected and all(isinstance(x, str) for x in chosen + rejected):
        named = len(chosen) == len(rejected) == len(RM_BENCH_STYLES)
        styles = [RM_BENCH_STYLES[i] if named else None for i in range(len(chosen))] + [
            RM_BENCH_STYLES[i] if named else None for i in range(len(rejected))
        ]
        return CandidateSet(prompt, chosen + rejected, [1.0] * len(chosen) + [0.0] * len(rejected), styles, group, subset)
    raise DataError(f"{where}: no candidates: expected a candidates list or RM-Bench chosen/rejected lists of answers")


def load_candidate_sets(path: str | Path, *, limit: int | None = None) -> tuple[list[CandidateSet], list[dict[str, Any]]]:
    """Candidate sets from a file or a folder of files (`limit`: the first N sets of each file)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    files = sorted(p for p in path.iterdir() if p.name.endswith(DATA_SUFFIXES)) if path.is_dir() else [path]
    if not files:
        raise DataError(f"{path}: no data files ({', '.join(DATA_SUFFIXES)})")
    sets: list[CandidateSet] = []
    infos = []
    for f in files:
        records = _records(f)
        records = records[:limit] if limit else records
        got = [candidate_set(r, where=f"{f.name} row {i}", default_subset=f.name.split(".")[0]) for i, r in enumerate(records)]
        few = [s for s in got if len(s.candidates) < 2]
        got = [s for s in got if len(s.candidates) >= 2]
        sets += got
        infos.append({"path": str(f), "sets": len(got), "skipped_fewer_than_2_candidates": len(few),
                      "candidates": sum(len(s.candidates) for s in got)})  # fmt: skip
    if not sets:
        raise DataError(f"{path}: no prompt has two or more candidates")
    return sets, infos


# ---------------------------------------------------------------- drawing and picking


def draw(cset: CandidateSet, n: int, draws: int, seed: int) -> list[list[int]]:
    """`draws` sets of n distinct candidate indices (one draw when n is every candidate), seeded by content."""
    k = len(cset.candidates)
    if n >= k:
        return [list(range(k))]
    rng = random.Random(int(short_id({"seed": seed, "group": cset.group, "prompt": cset.prompt, "n": n}), 16))
    return [sorted(rng.sample(range(k), n)) for _ in range(draws)]


class RewardPicker:
    """BT: the highest reward wins."""

    selection = "highest reward r(prompt, answer) (BT)"

    def __init__(self, score_answers: Any):
        self.score_answers = score_answers  # (prompts, answers) -> rewards
        self.rewards: list[list[float]] = []

    def prepare(self, sets: Sequence[CandidateSet], needed: Sequence[set[tuple[int, int]]]) -> None:
        prompts = [s.prompt for s in sets for _ in s.candidates]
        answers = [c for s in sets for c in s.candidates]
        flat = list(self.score_answers(prompts, answers))
        self.rewards, at = [], 0
        for s in sets:
            self.rewards.append(flat[at : at + len(s.candidates)])
            at += len(s.candidates)

    def pick(self, set_index: int, indices: list[int]) -> int:
        r = self.rewards[set_index]
        return max(indices, key=lambda i: (r[i], -i))


class TournamentPicker:
    """PairPM: round robin over the draw; the most expected wins (sum of P) wins."""

    selection = "round-robin tournament (PairPM): every two candidates of the draw compared, P averaged over both orders; most sum of P wins"

    def __init__(self, judge: Any):
        self.judge = judge
        self.p: list[dict[tuple[int, int], float]] = []

    def prepare(self, sets: Sequence[CandidateSet], needed: Sequence[set[tuple[int, int]]]) -> None:
        from crome.train.pairs import EvalPair

        keys = [(si, i, j) for si, pairs in enumerate(needed) for i, j in sorted(pairs)]
        pairs = [EvalPair(prompt=sets[si].prompt, chosen=sets[si].candidates[i], rejected=sets[si].candidates[j]) for si, i, j in keys]
        probs = self.judge.preference(pairs) if pairs else []
        self.p = [{} for _ in sets]
        for (si, i, j), p in zip(keys, probs):
            self.p[si][(i, j)] = p

    def prob(self, set_index: int, i: int, j: int) -> float:
        return self.p[set_index][(i, j)] if i < j else 1.0 - self.p[set_index][(j, i)]

    def pick(self, set_index: int, indices: list[int]) -> int:
        wins = {i: sum(self.prob(set_index, i, j) for j in indices if j != i) for i in indices}
        return max(indices, key=lambda i: (wins[i], -i))


def _mean(xs: Sequence[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def best_of_n(picker: Any, sets: Sequence[CandidateSet], ns: Sequence[int], *, draws: int = DEFAULT_DRAWS, seed: int = 0,
              detail: bool = False) -> dict[str, Any]:  # fmt: skip
    """The Best-of-N report (see the module docstring); `detail` adds every draw and its pick."""
    if not ns or any(n < 2 for n in ns):
        raise ValueError(f"--best-of-n values must be integers >= 2, got {list(ns)}")
    if draws < 1:
        raise ValueError("draws must be >= 1")
    plan = {n: [draw(s, n, draws, seed) if n <= len(s.candidates) else None for s in sets] for n in ns}
    needed: list[set[tuple[int, int]]] = [set() for _ in sets]
    for per_set in plan.values():
        for si, ds in enumerate(per_set):
            for d in ds or []:
                needed[si].update((i, j) for a, i in enumerate(d) for j in d[a + 1 :])
    picker.prepare(sets, needed)
    report: dict[str, Any] = {"selection": picker.selection, "draws_per_prompt": draws, "seed": seed, "prompts": len(sets), "n": {}}
    details = []
    for n in ns:
        rows = []
        for si, ds in enumerate(plan[n]):
            s = sets[si]
            for d in ds or []:
                k = picker.pick(si, d)
                gold = [s.scores[i] for i in d]
                rows.append((si, d, k, s.scores[k], max(gold), _mean(gold), min(gold)))
                if detail:
                    details.append({"n": n, "prompt": si, "group": s.group, "draw": d, "pick": k})
        report["n"][str(n)] = _summary(sets, rows, skipped=sum(ds is None for ds in plan[n]))
    if detail:
        report["draws"] = details
    return report


def _summary(sets: Sequence[CandidateSet], rows: list[tuple], *, skipped: int) -> dict[str, Any]:
    out: dict[str, Any] = {"prompts": len({r[0] for r in rows}), "draws": len(rows), "skipped_prompts_fewer_candidates": skipped}
    if not rows:
        return out
    pick, best, rand, worst = (_mean([r[i] for r in rows]) for i in (3, 4, 5, 6))
    out.update(pick=pick, best=best, random=rand, worst=worst, regret=best - pick,
               hit_rate=_mean([float(r[3] == r[4]) for r in rows]),
               normalized=(pick - rand) / (best - rand) if best - rand > 1e-12 else None)  # fmt: skip
    styles = [sets[r[0]].styles[r[2]] for r in rows]
    if any(st is not None for st in styles):
        offered = Counter(sets[r[0]].styles[i] for r in rows for i in r[1])
        total = sum(offered.values())
        out["pick_styles"] = {str(k): v / len(rows) for k, v in sorted(Counter(styles).items(), key=str)}
        out["offered_styles"] = {str(k): v / total for k, v in sorted(offered.items(), key=str)}
        good = [sets[r[0]].styles[r[2]] for r in rows if r[3] == r[4]]
        out["best_pick_styles"] = {str(k): v / len(good) for k, v in sorted(Counter(good).items(), key=str)} if good else {}
    by_subset: dict[str, list[tuple]] = defaultdict(list)
    for r in rows:
        by_subset[sets[r[0]].subset].append(r)
    if len(by_subset) > 1:
        out["subsets"] = {
            name: {"draws": len(rs), "pick": _mean([r[3] for r in rs]), "best": _mean([r[4] for r in rs]), "random": _mean([r[5] for r in rs])}
            for name, rs in sorted(by_subset.items())
        }
    return out


def evaluate_best_of_n(model_path: str, data_paths: Sequence[str | Path], ns: Sequence[int], *, draws: int = DEFAULT_DRAWS,
                       seed: int = 0, limit: int | None = None, batch_size: int = 16, max_length: int | None = 1024,
                       dtype: str = "auto", device: str | None = None, detail: bool = False) -> dict[str, Any]:  # fmt: skip
    """`crome eval --best-of-n`: load the candidate sets and the model (BT or PairPM) and return the report."""
    from crome import __version__
    from crome.train.evaluate import load_scorer, reward_scores
    from crome.train.pairpm.judge import PairPMJudge

    sets, files = [], []
    for p in data_paths:
        got, infos = load_candidate_sets(p, limit=limit)
        sets += got
        files += infos
    model, tokenizer = load_scorer(model_path, dtype=dtype, device=device)
    if isinstance(model, PairPMJudge):
        picker: Any = TournamentPicker(model.configure(batch_size, max_length))
    else:
        picker = RewardPicker(lambda ps, ans: reward_scores(model, tokenizer, ps, ans, batch_size=batch_size, max_length=max_length)[0])
    report = best_of_n(picker, sets, ns, draws=draws, seed=seed, detail=detail)
    arch = "pairpm" if isinstance(model, PairPMJudge) else "bt"
    return {"crome_version": __version__, "model": model_path, "arch": arch, "files": files, "best_of_n": report}
