"""Baseline files and the verdicts of the gate."""

from __future__ import annotations

import json

import pytest

from lcplugin import baselines
from lcplugin.errors import LcError


def _summary(correct, nulls, n):
    return {"n": n, "correct": correct, "nulls": nulls, "accuracy": correct / n, "null_rate": nulls / n}


def _records(outcomes):
    return [{"id": str(i), "correct": bool(c), "null": bool(z)} for i, (c, z) in enumerate(outcomes)]


def test_missing_baseline_is_a_note_not_a_failure(tmp_path):
    v = baselines.judge(tmp_path, "m", "longbench_v2", 8192, _summary(1, 0, 4))
    assert v.ok and v.entry is None and "no baseline" in v.notes[0]


def test_recorded_baseline_round_trips_and_passes_itself(tmp_path):
    recs = _records([(1, 0), (0, 1), (1, 0), (0, 0)])
    baselines.record(tmp_path, "m", "longbench_v2", 8192, _summary(2, 1, 4), "cpu", "h", recs)
    doc = json.loads((tmp_path / "m.json").read_text())
    assert doc["entries"]["longbench_v2/8k"]["items"] == {"0": [1, 0], "1": [0, 1], "2": [1, 0], "3": [0, 0]}
    assert baselines.judge(tmp_path, "m", "longbench_v2", 8192, _summary(2, 1, 4), records=recs).ok


def test_paired_gate_detects_what_the_unpaired_one_cannot(tmp_path):
    # 200 items; the new run loses 12 items it had right and gains 1: 50% -> 44.5%
    base = [(1, 0)] * 100 + [(0, 0)] * 100
    new = [(0, 0)] * 12 + [(1, 0)] * 88 + [(1, 0)] * 1 + [(0, 0)] * 99
    baselines.record(tmp_path, "m", "b", 4096, _summary(100, 0, 200), "cpu", "h", _records(base))
    paired = baselines.judge(tmp_path, "m", "b", 4096, _summary(89, 0, 200), records=_records(new))
    assert not paired.ok and "McNemar" in paired.failures[0] and "12 went worse, 1 went better" in paired.failures[0]
    doc = json.loads((tmp_path / "m.json").read_text())
    del doc["entries"]["b/4k"]["items"]
    (tmp_path / "m.json").write_text(json.dumps(doc))
    unpaired = baselines.judge(tmp_path, "m", "b", 4096, _summary(89, 0, 200), records=_records(new))
    assert unpaired.ok  # 100/200 vs 89/200 is within chance for two independent samples


def test_null_rate_rise_fails(tmp_path):
    baselines.record(tmp_path, "m", "b", 4096, _summary(0, 0, 20), "cpu", "h")
    v = baselines.judge(tmp_path, "m", "b", 4096, _summary(0, 12, 20))
    assert not v.ok and "null rate rose from 0/20" in v.failures[0]


@pytest.mark.parametrize(("content", "message"), [
    ('{"model": "m", "longbench_v2": {"8k": 0.3}}', "not an lcplugin baseline"),
    ('{"format": "lcplugin-baseline", "version": 0, "entries": {}}', "format version 0 is not supported"),
    ('{"format": "lcplugin-baseline", "version": 1}', "field 'entries' is missing"),
    ("{not json", "not valid JSON"),
])
def test_old_or_wrong_baselines_are_named(tmp_path, content, message):
    (tmp_path / "m.json").write_text(content)
    with pytest.raises(LcError, match=message) as err:
        baselines.judge(tmp_path, "m", "b", 4096, _summary(1, 0, 4))
    assert str(tmp_path / "m.json") in str(err.value) and "--lc-update-baselines" in str(err.value)


def test_efficiency_tolerances_gate_only_where_recorded(tmp_path):
    fast = {**_summary(1, 0, 4), "prefill_tok_s": 1000.0, "decode_tok_s": 50.0, "peak_mem_gb": 10.0}
    baselines.record(tmp_path, "m", "b", 4096, fast, "gpu", "h")  # no tolerances: figures kept, not gated
    slow = {**fast, "prefill_tok_s": 500.0, "peak_mem_gb": 20.0}
    assert baselines.judge(tmp_path, "m", "b", 4096, slow).ok
    baselines.record(tmp_path, "m", "b", 4096, fast, "gpu", "h",
                     tolerances=baselines.parse_tolerances("prefill_tok_s=10,peak_mem_gb=5"))
    assert baselines.judge(tmp_path, "m", "b", 4096, {**fast, "prefill_tok_s": 950.0, "peak_mem_gb": 10.4}).ok
    v = baselines.judge(tmp_path, "m", "b", 4096, slow)
    assert len(v.failures) == 2
    assert "prefill_tok_s fell from 1000 to 500" in v.failures[0] and "10 %" in v.failures[0]
    assert "peak_mem_gb grew from 10 to 20" in v.failures[1]
    with pytest.raises(LcError, match="FIGURE=PERCENT"):
        baselines.parse_tolerances("speed=3")
