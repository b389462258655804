"""Writes pinned.json.gz: the shortcut finder's candidates on test_shortcut_find_pinned.source(), others unbounded.

Run from the repository root at commit 93c31fa (the finder before issue 16's speed-up):
    python tests/data/shortcut_find/make_fixture.py
"""

import gzip
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "builder" / "stages"))
from test_shortcut_find_pinned import PINNED, found, source  # noqa: E402

with tempfile.TemporaryDirectory() as d:
    src = source(Path(d) / "rows.parquet")
    out = {"all": found(src), "original": found(src, strict_filter="kind = 'original'")}
PINNED.write_bytes(gzip.compress(json.dumps(out, indent=0, sort_keys=True).encode(), mtime=0))
import crome.builder.stages.shortcut_find as finder  # noqa: E402
print(finder.__file__)
print(len(out["all"]), "candidates,", sum(s["significant"] for s in out["all"]), "significant")
