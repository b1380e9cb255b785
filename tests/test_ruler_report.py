"""RULER in the report: effective length on hand-made summaries, the depth × length maps' cells and files.

The effective length is the figure RULER ranks models by, so its rule (strictly above 85.6, counted only
while every shorter measured length passes, a length missing tasks not compared) is pinned case by case
here; the maps are checked on crafted summaries (their cells, blanks for what was not measured) and on
one real tiny run (random weights score 0: the files and cells exist, their values are not the point).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from lcplugin.results import ruler_report as rr
from lcplugin.results.report import write_report

TASKS = ("niah_single_1", "vt", "cwe")


def summary(task: str, ctx: int, score: float, model: str = "m", depths: dict[str, float] | None = None,
            **extra: Any) -> dict[str, Any]:
    """A RULER test's summary entry, with only the keys the report reads; cwe has no depths, as in RULER."""
    if depths is None:
        depths = {} if task == "cwe" else {"0": score / 100, "50": score / 100, "100": score / 100}
    return {"benchmark": f"ruler_{task}", "model": model, "ctx": ctx, "n": 3 * len(depths) or 10,
            "accuracy": score / 100, "null_rate": 0.0, "ruler_score": score, "task": task,
            "depth_accuracy": depths, "depth_n": {k: 3 for k in depths}, **extra}


def at(scores: dict[int, float], tasks: tuple[str, ...] = TASKS) -> list[dict[str, Any]]:
    """Every task at each length with the same score, so the average is that score."""
    return [summary(t, ctx, s) for ctx, s in scores.items() for t in tasks]


def effective(tests: list[dict[str, Any]]) -> rr.Effective:
    return rr.effective_length(rr.lengths(tests))


def test_all_lengths_pass_is_not_reached_within_them() -> None:
    result = effective(at({1024: 99.0, 2048: 95.0, 4096: 90.0}))
    assert result.ctx == 4096
    assert result.text == "≥ 4k: not reached within the measured lengths"


def test_no_length_passes() -> None:
    result = effective(at({1024: 80.0, 2048: 0.0}))
    assert result == rr.Effective(None, "below the threshold at every measured length")


def test_the_threshold_must_be_exceeded() -> None:  # RULER: "exceeding ... Llama-2-7b performance at 4K (85.6%)"
    assert effective(at({1024: 85.6})).ctx is None
    assert effective(at({1024: 85.61})).ctx == 1024


def test_a_dip_ends_the_count_though_a_longer_length_passes_again() -> None:
    result = effective(at({1024: 95.0, 2048: 80.0, 4096: 90.0, 8192: 91.0}))
    assert result.ctx == 1024
    assert result.text == "1k (2k is below; 4k, 8k pass again, not counted)"
    first = effective(at({1024: 70.0, 2048: 90.0}))
    assert first == rr.Effective(None, "< 1k: 1k is below; 2k passes again, not counted")


def test_the_average_is_over_tasks() -> None:
    tests = [summary("niah_single_1", 1024, 100.0), summary("vt", 1024, 80.0), summary("cwe", 1024, 70.0)]
    (length,) = rr.lengths(tests)
    assert length.average == pytest.approx(250 / 3) and length.tasks == 3 and not length.passes


def test_unmeasured_lengths_are_skipped() -> None:
    result = effective(at({1024: 95.0, 8192: 90.0}))  # 2k and 4k not run: the measured ones decide
    assert result.ctx == 8192 and [m.ctx for m in rr.lengths(at({1024: 95.0, 8192: 90.0}))] == [1024, 8192]


def test_a_length_missing_tasks_is_not_compared() -> None:
    tests = [t for t in at({1024: 95.0, 2048: 95.0, 4096: 95.0}) if not (t["ctx"] == 2048 and t["task"] == "vt")]
    result = effective(tests)
    assert result.ctx == 1024
    assert result.text == "1k (2k lacks vt; 4k passes again, not counted)"
    assert [m.missing for m in rr.lengths(tests)] == [(), ("vt",), ()]


def test_tests_without_a_score_and_other_benchmarks_are_left_out() -> None:
    tests = [*at({1024: 95.0}), {**summary("vt", 2048, 0.0), "ruler_score": None},
             {"benchmark": "longbench_v2", "model": "m", "ctx": 2048, "accuracy": 0.0}]
    assert [m.ctx for m in rr.lengths(tests)] == [1024]
    assert rr.effective_length([]) == rr.Effective(None, "no RULER score")


def test_task_grid_cells_and_blanks() -> None:
    grid = rr.task_grid([summary("vt", 1024, 0, depths={"0": 1.0, "50": 0.5}),
                         summary("vt", 2048, 0, depths={"0": 0.25, "100": 0.0})])
    assert (grid.ctxs, grid.depths) == ([1024, 2048], [0, 50, 100])
    assert grid.rows() == [[100.0, 25.0], [50.0, None], [None, 0.0]]  # unmeasured: None (blank), never 0
    assert grid.n[(50, 1024)] == 3


def test_a_task_without_depths_is_one_row_of_its_accuracy() -> None:
    grid = rr.task_grid([summary("cwe", 1024, 40.0, depths={}), summary("cwe", 2048, 20.0, depths={})])
    assert grid.depths == [rr.NO_DEPTH] and grid.rows() == [[40.0, 20.0]]


def test_average_grid_weighs_tasks_alike_and_leaves_out_depthless_ones() -> None:
    grids = [rr.task_grid([summary("niah_single_1", 1024, 0, depths={"0": 1.0, "50": 1.0})]),
             rr.task_grid([summary("vt", 1024, 0, depths={"0": 0.0})]),
             rr.task_grid([summary("cwe", 1024, 10.0, depths={})])]
    avg = rr.average_grid(grids)
    assert avg.depths == [0, 50] and avg.rows() == [[50.0], [100.0]]
    assert avg.n == {(0, 1024): 6, (50, 1024): 3}


def run_folder(tmp: Path, tests: list[dict[str, Any]], run_id: str = "run-r") -> Path:
    folder = tmp / run_id
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps({"run": {"run_id": run_id}, "tests": tests}))
    return folder


def test_report_draws_a_map_per_model_and_task_and_states_the_effective_length(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("matplotlib")
    tests = [*at({1024: 95.0, 2048: 80.0}),
             *(summary(t, ctx, 0.0, model="n", beyond_window=ctx > 1024, trained_window=1024) for t in TASKS
               for ctx in (1024, 2048))]
    drawn: dict[str, list[list[float | None]]] = {}
    draw = rr.draw

    def keep(grid: rr.Grid, title: str, beyond: set[int], path: Path) -> Path:
        drawn[path.name] = grid.rows()
        return draw(grid, title, beyond, path)

    monkeypatch.setattr(rr, "draw", keep)
    paths = write_report([run_folder(tmp_path, tests)], tmp_path / "out")
    maps = sorted(p.name for p in paths if p.name.startswith("ruler-depth-"))
    assert maps == sorted(f"ruler-depth-{m}-{t}.png" for m in "mn" for t in ("average", *TASKS))
    assert all((tmp_path / "out" / name).stat().st_size > 5_000 for name in maps)
    assert drawn["ruler-depth-m-vt.png"] == [[95.0, 80.0]] * 3
    assert drawn["ruler-depth-m-cwe.png"] == [[95.0, 80.0]]  # no depth: its accuracy, one row
    assert drawn["ruler-depth-n-average.png"] == [[0.0, 0.0]] * 3  # random weights: 0, drawn, not blank
    md = (tmp_path / "out" / "report.md").read_text()
    assert "| m | 1k (2k is below) | 3 | **95.0** | 80.0 |" in md
    assert "| n | below the threshold at every measured length | 3 | 0.0 | 0.0 † |" in md
    assert "![ruler-depth-m-average](ruler-depth-m-average.png)" in md
    assert md.index("## RULER: effective length") < md.index("† past the model's trained window")


def test_no_ruler_tests_no_section_and_no_maps(tmp_path: Path) -> None:
    tests = [{"benchmark": "longbench_v2", "model": "m", "test": "m-1k", "ctx": 1024, "n": 2, "accuracy": 0.5}]
    assert rr.write(tests, tmp_path, several_runs=False) == ("", [])
    assert not list(tmp_path.iterdir())


def test_several_runs_keep_their_models_apart(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    folders = [run_folder(tmp_path, at({1024: 95.0}, ("vt",)), "run-a"),
               run_folder(tmp_path, at({2048: 95.0}, ("vt",)), "run-b")]
    paths = write_report(folders, tmp_path / "out")
    assert {p.name for p in paths if p.name.endswith("-vt.png")} == {"ruler-depth-m_run-a-vt.png",
                                                                     "ruler-depth-m_run-b-vt.png"}
    md = (tmp_path / "out" / "report.md").read_text()
    assert "| m (run-a) | ≥ 1k: not reached within the measured lengths | 1 | **95.0** | – |" in md


def test_maps_of_a_real_tiny_run(run_benches, tmp_path: Path) -> None:
    """End to end on one model and two tasks (one with depths, one without): the maps the session's own
    report step writes, with a cell per measured depth and context."""
    out = run_benches("--lc-models", "tiny-llama", "--lc-ctx", "1k,2k", "--lc-limit", "3", "-k",
                      "ruler_niah_single_1 or ruler_cwe")
    assert out.returncode == 0, out.stdout[-2000:]
    report = next(run_benches.results.glob("*/report"))
    names = {p.name for p in report.glob("ruler-depth-*.png")}
    assert names == {f"ruler-depth-tiny-llama-{t}.png" for t in ("average", "niah_single_1", "cwe")}
    tests = json.loads(next(run_benches.results.glob("*/summary.json")).read_text())["tests"]
    grid = rr.task_grid([t for t in tests if t["benchmark"] == "ruler_niah_single_1"])
    assert grid.ctxs == [1024, 2048] and len(grid.depths) == 3  # 3 samples: 3 of the 10 depths
    assert all(v is not None for row in grid.rows() for v in row)
    assert "| tiny-llama | " in (report / "report.md").read_text().split("## RULER")[1]
