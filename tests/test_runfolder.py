"""The run folder's one class: the merge rule on both of its paths (xdist parts, shards), the parts a
killed xdist session leaves, a refused resume that leaves the folder as it was, and every summary
reader going through ``RunFolder``. In-process and on fabricated folders: no model runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from lcplugin.errors import LcError
from lcplugin.plugin import progress
from lcplugin.results import report
from lcplugin.results.runfolder import RunFolder

FP = "f" * 12  # a settings fingerprint


def _test(model: str, ctx: int = 1024, **figures: Any) -> dict[str, Any]:
    return {"benchmark": "longbench_v2", "model": model, "ctx": ctx, "n": 2, **figures}


def _write(path: Path, run: dict[str, Any], tests: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"run": run, "tests": tests}))


def _summary(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "summary.json").read_text())


def test_xdist_parts_replace_the_runs_earlier_entries_in_place(tmp_path: Path) -> None:
    folder = tmp_path / "20260101-000000-ffffff"
    _write(folder / "summary.json", {"settings_hash": FP, "started": "t0", "engine_loads": [{"model": "a"}]},
           [_test("a", accuracy=0.1), _test("b", accuracy=0.2)])  # an earlier session of this run
    _write(folder / "summary.gw0.json", {"started": "t2", "engine_loads": [{"model": "a"}]}, [_test("a", accuracy=0.9)])
    _write(folder / "summary.gw1.json", {"started": "t1", "engine_loads": [{"model": "c"}]}, [_test("c", accuracy=0.5)])
    run = RunFolder(tmp_path, FP, resume=folder.name)  # the controller's folder, as it chose it
    run.merge_parts()
    merged = _summary(folder)
    assert [(t["model"], t["accuracy"]) for t in merged["tests"]] == [("a", 0.9), ("b", 0.2), ("c", 0.5)]
    assert [load["model"] for load in merged["run"]["engine_loads"]] == ["a", "a", "c"]
    assert merged["run"]["resumed_at"] == "t1" and merged["run"]["started"] == "t0"
    assert not list(folder.glob("summary.*.json"))
    assert [t["model"] for t in run.summaries] == ["a", "b", "c"]


def test_two_xdist_parts_holding_one_test_are_refused_naming_both_and_kept(tmp_path: Path) -> None:
    folder = tmp_path / "20260101-000000-ffffff"
    _write(folder / "summary.gw0.json", {"started": "t1"}, [_test("a", accuracy=0.9)])
    _write(folder / "summary.gw1.json", {"started": "t2"}, [_test("a", accuracy=0.1)])
    run = RunFolder(tmp_path, FP, resume=folder.name)
    with pytest.raises(LcError) as refused:
        run.merge_parts()
    message = str(refused.value)
    assert "longbench_v2/a/1024" in message and "summary.gw0.json" in message and "summary.gw1.json" in message
    assert "\n" not in message and f"--lc-resume {folder.name}" in message
    assert sorted(p.name for p in folder.glob("summary*.json")) == ["summary.gw0.json", "summary.gw1.json"]
    run.release()


def test_two_shards_holding_one_test_are_refused_naming_both(tmp_path: Path) -> None:
    one, two = tmp_path / "shard-1" / "run", tmp_path / "shard-2" / "run"
    _write(one / "summary.json", {"settings_hash": FP}, [_test("a"), _test("b")])
    _write(two / "summary.json", {"settings_hash": FP}, [_test("b", accuracy=0.3)])
    with pytest.raises(LcError, match=r"^merge: test longbench_v2/b/1024 is in both .*shard-1/run and .*shard-2/run; "
                                      r"remove it from one shard$"):
        RunFolder.join([one, two], tmp_path / "merged")
    assert not (tmp_path / "merged").exists()
    _write(two / "summary.json", {"settings_hash": FP}, [_test("c")])
    joined = RunFolder.join([one, two], tmp_path / "merged")
    assert [t["model"] for t in joined.tests] == ["a", "b", "c"] == [t["model"] for t in _summary(tmp_path / "merged")["tests"]]
    assert joined.run["run_id"] == "merged" and joined.run["merged_from"] == [str(one), str(two)]


def test_parts_a_killed_xdist_session_left_are_folded_when_the_folder_is_next_held(tmp_path: Path) -> None:
    """Else the next session's workers could hold a test in two parts (the scheduler need not give a
    model to the same worker twice) and the merge would refuse a resumed run."""
    folder = tmp_path / "20260101-000000-ffffff"
    _write(folder / "summary.gw1.json", {"settings_hash": FP, "started": "t1"}, [_test("a", accuracy=0.1)])
    controller = RunFolder(tmp_path, FP, resume=folder.name)
    controller.claim_resume()
    controller.hold()
    assert [t["accuracy"] for t in _summary(folder)["tests"]] == [0.1] and not list(folder.glob("summary.*.json"))
    worker = RunFolder(tmp_path, FP, adopt=(folder.name, "gw0"))
    worker.open(lambda: {"settings_hash": FP, "started": "t2"})
    worker.put_test(_test("a", accuracy=0.9))  # this session gave model a to gw0
    controller.merge_parts()
    assert [t["accuracy"] for t in _summary(folder)["tests"]] == [0.9]
    controller.release()


def test_resuming_a_run_of_other_settings_is_refused_and_leaves_it_as_it_was(tmp_path: Path) -> None:
    folder = tmp_path / "20260101-000000-aaaaaa"
    _write(folder / "summary.json", {"settings_hash": "a" * 12, "finished": "t9"}, [_test("a")])
    before = (folder / "summary.json").read_text()
    run = RunFolder(tmp_path, FP, resume=folder.name)
    run.claim_resume()
    with pytest.raises(LcError, match=f"--lc-resume {folder.name}: that run was made with other settings"):
        run.open(lambda: {"settings_hash": FP})
    assert (folder / "summary.json").read_text() == before  # still finished: nothing rewritten
    run.release()


def test_every_summary_reader_goes_through_the_run_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    results = tmp_path / "results"
    old, new = results / "20260101-000000-ffffff", results / "20260102-000000-ffffff"
    test = _test("tiny-llama", device="cpu (x)", wall_s=2.0, prefill_tok_s=100.0, decode_tok_s=10.0)
    _write(old / "summary.json", {"settings_hash": FP}, [test])
    new.mkdir(parents=True)
    (new / "summary.json").write_text("{torn")  # a folder being written: every reader passes over it
    real, seen = RunFolder.read, []

    def spy(folder: Path):
        seen.append(folder.name)
        return real(folder)

    monkeypatch.setattr(RunFolder, "read", staticmethod(spy))
    assert report.load_tests([old])[0]["model"] == "tiny-llama" and seen == [old.name]
    with pytest.raises(LcError, match=r"^report: .*summary.json is not valid JSON .*; pass run folders"):
        report.load_tests([new])
    seen.clear()
    assert progress.known_rates(results, tmp_path / "baselines", "tiny-llama", 1024, "cpu (x)").prefill_tok_s == 100.0
    assert seen == [new.name, old.name]  # newest first
    seen.clear()
    assert progress.rate_points(results, tmp_path / "baselines", "tiny-llama", "cpu (x)") == {  # --lc-plan's
        1024: progress.Rates(100.0, 10.0, old.name)}
    assert seen == [new.name, old.name]
    seen.clear()
    assert RunFolder.unfinished(results, FP) == [old.name] and seen == [new.name, old.name]
    seen.clear()
    RunFolder.join([old], tmp_path / "merged")
    assert seen == [old.name]
