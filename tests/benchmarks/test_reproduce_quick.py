"""benchmarks/reproduce.py --quick: the reproduction's whole code path (build, train, filter, eval) on tiny sizes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from paths import REPO, SHARED_DATA

ROOT = REPO
SHARED = SHARED_DATA
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (SHARED / "ultrafeedback-binarized-sample").exists(), reason="../shared/data not present"),
]


METHODS = ["vanilla", "rrm", "crome", "crome_iqn3"]


def test_quick_reproduction_writes_every_method_and_column(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    script = ROOT / "benchmarks" / "reproduce.py"
    args = ["--quick", "--out", str(tmp_path), "--work", str(tmp_path / "work"), "--methods", ",".join(METHODS[1:])]
    proc = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from reproduce import COLUMNS
    finally:
        sys.path.pop(0)
    result = json.loads((tmp_path / "reproduction.json").read_text())
    # vanilla is trained first although not asked for: it is the filter's baseline.
    assert result["quick"] is True and result["methods"] == METHODS
    assert result["columns"] == dict(COLUMNS)
    for method in METHODS:
        for key, _ in COLUMNS:
            cell = result["aggregate"][method][key]
            assert cell["n"] == 1 and cell["std"] is None, (method, key)
            value = cell["mean"]
            if key == "probe_drop":
                assert -1.0 <= value <= 1.0, (method, key)
            elif key == "cue_effect":
                assert isinstance(value, float), (method, key)
            else:
                assert 0.0 <= value <= 1.0, (method, key)

    (run,) = result["runs"]
    # The same optimizer steps and batch for every method; each trained on its own rows.
    trains = {m: run["methods"][m]["train"] for m in METHODS}
    assert set(trains["vanilla"]["train_rows_by_kind"]) == {"original"}
    assert set(trains["rrm"]["train_rows_by_kind"]) == {"original", "causal", "neutral"}
    assert set(trains["crome"]["train_rows_by_kind"]) <= {"original", "causal", "neutral"}
    assert run["build"]["rrm"]["rows_by_augmentation"].get("cross_prompt", 0) > 0
    assert "cross_prompt" not in run["build"]["crome"]["rows_by_augmentation"]
    built = {name: run["build"][name]["rows_by_kind"] for name in ("crome", "crome_iqn3")}
    assert built["crome_iqn3"]["neutral"] > built["crome"]["neutral"]
    # Only the crome methods are filtered, each by the vanilla model with the run's two thresholds.
    assert set(run["filter"]) == {"crome", "crome_iqn3"}
    sizes = result["setup"]["sizes"]
    for f in run["filter"].values():
        assert f["thresholds"]["causal"]["given"] == {"margin": sizes["keep_margin"]}
        assert f["thresholds"]["neutral"]["given"] == {"margin": sizes["tie_margin"]}
    # Causal degrades keep the opening line, so the cue is on both sides or neither, never on one only.
    causal = run["cue_in_training_rows"]["crome"].get("causal")
    if causal:
        assert causal["chosen_only"] == causal["rejected_only"] == 0
    # Every eval column was measured on the same pairs for each method.
    assert len({json.dumps(run["methods"][m]["eval"]["subsets"], sort_keys=True).count('"n"') for m in METHODS}) == 1

    table = (tmp_path / "reproduction_table.md").read_text()
    header = next(line for line in table.splitlines() if line.startswith("| method |"))
    assert all(h in header for _, h in COLUMNS)
    assert all(any(line.startswith(f"| {m} |") for line in table.splitlines()) for m in METHODS)
    assert "| `char_swap` |" in table
