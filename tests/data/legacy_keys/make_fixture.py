"""Make `run/`: a run directory written by crome before cache keys left out unread context (commit ceafd9e).

Run it with that version of crome first on the path, from a checkout of it, e.g.

    git archive ceafd9e | tar -x -C /tmp/old && cd /tmp/old && \
      PYTHONPATH=/tmp/old:/path/to/repo/tests:/path/to/repo/tests/builder/run python /path/to/repo/tests/data/legacy_keys/make_fixture.py

It builds `source.jsonl` (synthetic pairs that share answers, as RM-Bench's do: every prompt has
two good and two poor answers, paired four ways) with the OpenAI oracle against the fake server
and the tests' responder, then keeps the run directory (store, dataset, summary) next to this file.
tests/builder/store/test_legacy_keys.py resumes it with today's crome and expects no request at all.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def write_source(path: Path) -> Path:
    topics = [("How do tides work?", "moon gravity water bulge ocean"), ("How do I store fresh basil?", "stems jar water fridge leaves"),
              ("Why is the sky blue?", "light scattering wavelength air molecules"), ("How do I tie a bowline knot?", "loop rabbit tree hole rope")]
    rows = []
    for i, (q, words) in enumerate(topics):
        w = words.split()
        good = [f"Answer {k} to case {i}.\n\n" + " ".join(f"The {w[j % len(w)]} explains step {j + 1}." for j in range(7 + k)) + "\n\nHope this helps."
                for k in range(2)]
        poor = [f"Answer {k} to case {i}.\n\nIt depends on the {w[k]}." for k in range(2)]
        rows += [{"prompt": q, "chosen": g, "rejected": p} for g in good for p in poor]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def main() -> None:
    from crome.builder.oracles import get_oracle
    from crome.builder.run.config import BuildConfig
    from crome.builder.run.pipeline import build
    from fake_llm_server import FakeLLMServer
    from test_build_llm import responder

    os.environ["OPENAI_API_KEY"] = "sk-fixture"
    src = write_source(HERE / "source.jsonl")
    with FakeLLMServer(responder=responder) as server, tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        oracle = get_oracle("openai:gpt-4o-mini", base_url=server.openai_url, concurrency=8)
        s = build(BuildConfig(source=str(src), out=str(out), oracle="openai:gpt-4o-mini"), oracle=oracle).summary
        print(s["status"], s["oracle_calls"], "server requests:", server.count())
        (out / "progress.json").unlink(missing_ok=True)
        shutil.rmtree(HERE / "run", ignore_errors=True)
        shutil.copytree(out, HERE / "run", ignore=shutil.ignore_patterns("crome.lock", "crome.duckdb"))
        with open(out / "crome.duckdb", "rb") as f, gzip.open(HERE / "run" / "crome.duckdb.gz", "wb", compresslevel=9) as g:
            shutil.copyfileobj(f, g)  # 3 MB of mostly empty blocks, 50 KB gzipped


if __name__ == "__main__":
    main()
