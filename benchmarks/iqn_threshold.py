"""How the IQN "unrelated prompt" threshold was chosen: paraphrases vs random pairs of real prompts.

    python benchmarks/iqn_threshold.py      # a few seconds; prints the tables in crome/builder/stages/neutral.py

- paraphrases: 45 real prompts (30 from the UltraFeedback sample, 15 from LLMBar natural, drawn
  with a seed among prompts of 20-160 characters) each paired with a paraphrase written by hand for
  this measurement (benchmarks/data/iqn_paraphrases.jsonl holds only the paraphrases and where the
  original is). A tie under a paraphrase of its own prompt is a wrong label: these must be refused.
- random pairs: 20,000 pairs of distinct prompts of the UltraFeedback sample drawn with seed 0, and
  the 20,000 of them whose prompts are both short (< 100 characters) questions: almost all of them
  unrelated, so they should be accepted (a refused pair costs only another draw).

Both measures are reported: the new one (TF-IDF cosine over content words of the whole conversation,
idf fitted on the corpus) and the old one (Jaccard of the lower-cased word sets of the last user turn).
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

from crome.builder.stages.relatedness import Relatedness

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
PARAPHRASES = Path(__file__).resolve().parent / "data" / "iqn_paraphrases.jsonl"
THRESHOLDS = (0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5)
_WORD = re.compile(r"\w+")


def old_similarity(a: str, b: str) -> float:
    wa, wb = set(_WORD.findall(a.lower())), set(_WORD.findall(b.lower()))
    return len(wa & wb) / len(wa | wb) if wa | wb else 1.0


def load_prompt(file: str, index: int) -> str:
    path = SHARED / file
    if path.suffix == ".jsonl":
        lines = path.read_text(encoding="utf-8").splitlines()
        return json.loads(lines[index])["prompt"]
    return json.loads(path.read_text(encoding="utf-8"))[index]["input"]


def main() -> None:
    uf = [json.loads(line)["prompt"] for line in (SHARED / "ultrafeedback-binarized-sample" / "train_clean.jsonl").read_text().splitlines()]
    llmbar = [r["input"] for r in json.loads((SHARED / "llmbar" / "LLMBar_Natural.json").read_text())]
    rel = Relatedness(uf + llmbar)
    para = [(load_prompt(p["file"], p["index"]), p["paraphrase"]) for p in map(json.loads, PARAPHRASES.read_text().splitlines())]
    rng = random.Random(0)
    rand = [tuple(rng.sample(uf, 2)) for _ in range(20_000)]
    short = [p for p in uf if len(p) < 100 and p.rstrip().endswith("?")]
    short_pairs = [tuple(rng.sample(short, 2)) for _ in range(20_000)]
    sets = {"paraphrases (should be refused)": para, "random pairs (accept)": rand, "random short questions (accept)": short_pairs}

    for name, measure in (("TF-IDF cosine, content words (new)", rel.similarity), ("word-set Jaccard, last turn (old)", old_similarity)):
        print(f"\n{name}: share of pairs refused (similarity >= threshold)\n")
        print("| threshold | " + " | ".join(sets) + " |")
        print("|---:|" + "---:|" * len(sets))
        sims = {k: [measure(a, b) for a, b in v] for k, v in sets.items()}
        for t in THRESHOLDS:
            print(f"| {t:g} | " + " | ".join(f"{100 * sum(s >= t for s in v) / len(v):.1f}%" for v in sims.values()) + " |")
        para_sims = sorted(zip(sims["paraphrases (should be refused)"], para))
        print("\nlowest paraphrase similarities:")
        for s, (a, b) in para_sims[:6]:
            print(f"  {s:.3f}  {a[:70]!r} / {b[:70]!r}")
    print(f"\n{len(para)} paraphrase pairs, {len(rand)} random pairs, {len(short_pairs)} short-question pairs ({len(short)} short questions)")


if __name__ == "__main__":
    main()
