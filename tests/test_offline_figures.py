"""The offline default prints the figures it printed before the refactor (issue 20).

The committed baselines were recorded by the code before the package was laid out anew (and migrated
to format 2 without touching a value). One tiny model's run of the offline default, under its fixed
seeds, must reproduce them: the item counts, every item's outcome and PG-19's bits per byte, window by
window. A refactor that moved a figure fails here, not in a user's report.
"""

from __future__ import annotations

import json

import pytest

from .conftest import REPO, only_run_summary


@pytest.mark.slow
def test_one_run_of_the_offline_default_reproduces_the_committed_figures(run_benches):
    out = run_benches("--lc-models", "tiny-llama", "--lc-baselines", str(REPO / "baselines"))
    assert out.returncode == 0, out.stdout[-3000:]
    committed = json.loads((REPO / "baselines" / "tiny-llama.json").read_text())["entries"]
    run = only_run_summary(run_benches.results)
    tests = {f"{t['benchmark']}/{t['ctx_label']}": t for t in run["tests"]}
    assert set(tests) == set(committed)  # 4 benchmarks x 1k, 2k
    folder = run_benches.results / run["run"]["run_id"] / "records"
    for key, entry in committed.items():
        summary = tests[key]
        assert summary["baseline"]["status"] == "ok", (key, summary["baseline"])
        for figure in ("n", "correct", "nulls", "accuracy", "null_rate"):
            assert summary[figure] == entry[figure], (key, figure)
        if "bits_per_byte" in entry:
            assert summary["bits_per_byte"] == pytest.approx(entry["bits_per_byte"], rel=1e-6), key
            assert summary["perplexity"] == pytest.approx(entry["perplexity"], rel=1e-6), key
        benchmark, _ = key.split("/")
        rows = [json.loads(line) for line in
                (folder / benchmark / f"tiny-llama-{summary['ctx']}.jsonl").read_text().splitlines()]
        mine = {str(r["id"]): r for r in rows if not r.get("skipped")}
        assert set(mine) == set(entry["outcomes"]), key
        for item, outcome in entry["outcomes"].items():
            if isinstance(outcome, list):  # [correct, null]
                assert [int(bool(mine[item]["correct"])), int(bool(mine[item]["null"]))] == outcome, (key, item)
            else:  # a PG-19 window's bits per byte
                bits = mine[item]["nll"] / (mine[item]["bytes"] * 0.6931471805599453)
                assert bits == pytest.approx(outcome, rel=1e-6), (key, item)
