"""Baseline files and the verdicts of the gate."""

from __future__ import annotations

import json
import math

import pytest

from lcplugin.benchmarks.pg19 import PG19
from lcplugin.errors import LcError
from lcplugin.results import baselines

BPB = PG19.measure  # PG-19's outcomes: each window's bits per byte

S = {"sampling": {"max_new_tokens": 128, "temperature": 0.1}, "mode": "0shot", "data": "synthetic-v1"}


def _summary(correct, nulls, n):
    return {"n": n, "correct": correct, "nulls": nulls, "accuracy": correct / n, "null_rate": nulls / n,
            "device": "cpu"}


def _records(outcomes):
    """Right-or-wrong items as a generation benchmark gives them: ``{id: [correct, null]}``."""
    return {str(i): [int(bool(c)), int(bool(z))] for i, (c, z) in enumerate(outcomes)}


def test_missing_baseline_is_a_note_not_a_failure(tmp_path):
    v = baselines.judge(tmp_path, "m", "longbench_v2", 8192, _summary(1, 0, 4), settings=S)
    assert v.ok and v.entry is None and "no baseline" in v.notes[0]


def test_recorded_baseline_round_trips_and_passes_itself(tmp_path):
    recs = _records([(1, 0), (0, 1), (1, 0), (0, 0)])
    baselines.record(tmp_path, "m", "longbench_v2", 8192, _summary(2, 1, 4), "cpu", recs, settings=S)
    doc = json.loads((tmp_path / "m.json").read_text())
    assert doc["entries"]["longbench_v2/8k"]["outcomes"] == {"0": [1, 0], "1": [0, 1], "2": [1, 0], "3": [0, 0]}
    assert baselines.judge(tmp_path, "m", "longbench_v2", 8192, _summary(2, 1, 4), outcomes=recs, settings=S).ok


def test_paired_gate_detects_what_the_unpaired_one_cannot(tmp_path):
    # 200 items; the new run loses 12 items it had right and gains 1: 50% -> 44.5%
    base = [(1, 0)] * 100 + [(0, 0)] * 100
    new = [(0, 0)] * 12 + [(1, 0)] * 88 + [(1, 0)] * 1 + [(0, 0)] * 99
    baselines.record(tmp_path, "m", "b", 4096, _summary(100, 0, 200), "cpu", _records(base), settings=S)
    paired = baselines.judge(tmp_path, "m", "b", 4096, _summary(89, 0, 200), outcomes=_records(new), settings=S)
    assert not paired.ok and "McNemar" in paired.failures[0] and "12 went worse, 1 went better" in paired.failures[0]
    doc = json.loads((tmp_path / "m.json").read_text())
    del doc["entries"]["b/4k"]["outcomes"]
    (tmp_path / "m.json").write_text(json.dumps(doc))
    unpaired = baselines.judge(tmp_path, "m", "b", 4096, _summary(89, 0, 200), outcomes=_records(new), settings=S)
    assert unpaired.ok  # 100/200 vs 89/200 is within chance for two independent samples


def test_null_rate_rise_fails(tmp_path):
    baselines.record(tmp_path, "m", "b", 4096, _summary(0, 0, 20), "cpu", settings=S)
    v = baselines.judge(tmp_path, "m", "b", 4096, _summary(0, 12, 20), settings=S)
    assert not v.ok and "null rate rose from 0/20" in v.failures[0]


@pytest.mark.parametrize(("content", "message"), [
    ('{"model": "m", "longbench_v2": {"8k": 0.3}}', "not an lcplugin baseline"),
    ('{"format": "lcplugin-baseline", "version": 0, "entries": {}}', "format version 0 is not supported"),
    ('{"format": "lcplugin-baseline", "version": 1, "entries": {}}', "format version 1 is not supported"),
    ('{"format": "lcplugin-baseline", "version": 2}', "field 'entries' is missing"),
    ("{not json", "not valid JSON"),
])
def test_old_or_wrong_baselines_are_named(tmp_path, content, message):
    (tmp_path / "m.json").write_text(content)
    with pytest.raises(LcError, match=message) as err:
        baselines.judge(tmp_path, "m", "b", 4096, _summary(1, 0, 4), settings=S)
    assert str(tmp_path / "m.json") in str(err.value) and "--lc-update-baselines" in str(err.value)


def test_efficiency_tolerances_gate_only_where_recorded(tmp_path):
    fast = {**_summary(1, 0, 4), "prefill_tok_s": 1000.0, "decode_tok_s": 50.0, "peak_mem_gb": 10.0, "device": "gpu"}
    baselines.record(tmp_path, "m", "b", 4096, fast, "gpu", settings=S)  # no tolerances: figures kept, not gated
    slow = {**fast, "prefill_tok_s": 500.0, "peak_mem_gb": 20.0}
    assert baselines.judge(tmp_path, "m", "b", 4096, slow, settings=S).ok
    baselines.record(tmp_path, "m", "b", 4096, fast, "gpu", settings=S,
                     tolerances=baselines.parse_tolerances("prefill_tok_s=10,peak_mem_gb=5"))
    assert baselines.judge(tmp_path, "m", "b", 4096, {**fast, "prefill_tok_s": 950.0, "peak_mem_gb": 10.4}, settings=S).ok
    v = baselines.judge(tmp_path, "m", "b", 4096, slow, settings=S)
    assert len(v.failures) == 2
    assert "prefill_tok_s fell from 1000 to 500" in v.failures[0] and "10 %" in v.failures[0]
    assert "peak_mem_gb grew from 10 to 20" in v.failures[1]
    with pytest.raises(LcError, match="FIGURE=PERCENT"):
        baselines.parse_tolerances("speed=3")
    # the same baseline seen from another machine: timings are not comparable, so not compared
    elsewhere = baselines.judge(tmp_path, "m", "b", 4096, {**slow, "device": "other gpu"}, settings=S)
    assert elsewhere.ok and elsewhere.status == "ok"
    assert any("efficiency not compared (other machine: baseline on 'gpu', this run on 'other gpu')" in n
               for n in elsewhere.notes)
    assert elsewhere.warnings and "other gpu" in elsewhere.warnings[0]


def test_other_settings_refuse_the_comparison_naming_each_setting(tmp_path):
    recs = _records([(1, 0)] * 4)
    baselines.record(tmp_path, "m", "b", 4096, _summary(4, 0, 4), "cpu", recs, settings=S)
    now = {**S, "sampling": {"max_new_tokens": 128, "temperature": 0.0}, "mode": "cot", "budget": "context"}
    v = baselines.judge(tmp_path, "m", "b", 4096, _summary(4, 0, 4), outcomes=recs, settings=now)
    assert not v.ok and v.status == "refused" and v.delta_accuracy is None and len(v.failures) == 1
    message = v.failures[0]
    assert "recorded under other settings" in message and str(tmp_path / "m.json") in message
    assert 'sampling: {"max_new_tokens": 128, "temperature": 0.1} in the baseline, ' \
           '{"max_new_tokens": 128, "temperature": 0.0} now (--lc-sampling)' in message
    assert "mode: '0shot' in the baseline, 'cot' now (--lc-mode)" in message
    assert "budget: absent in the baseline, 'context' now (--lc-budget)" in message
    assert "data:" not in message  # only what differs
    assert "--lc-update-baselines" in message and "run with the baseline's settings" in message


def test_old_entry_without_settings_is_settings_unknown_not_a_comparison(tmp_path):
    from .conftest import REPO

    # the committed file as it was before entries stored their settings (and PG-19 its per-window outcomes)
    doc = json.loads((REPO / "baselines" / "tiny-llama.json").read_text())
    for key, entry in doc["entries"].items():
        entry.pop("settings", None)
        if key.startswith("pg19/"):
            entry.pop("outcomes", None)
    (tmp_path / "tiny-llama.json").write_text(json.dumps(doc))
    for bench in ("longbench_v2", "pg19"):
        v = baselines.judge(tmp_path, "tiny-llama", bench, 1024, _summary(0, 8, 8), outcomes=_records([(0, 1)] * 8),
                            settings=S)
        assert not v.ok and v.status == "refused"
        assert "settings unknown" in v.failures[0] and "re-record it with --lc-update-baselines" in v.failures[0]
    # re-recording writes the new format over the old file; the other old entries are kept as they were
    baselines.record(tmp_path, "tiny-llama", "longbench_v2", 1024, _summary(0, 8, 8), "cpu",
                     _records([(0, 1)] * 8), settings=S)
    assert baselines.judge(tmp_path, "tiny-llama", "longbench_v2", 1024, _summary(0, 8, 8),
                           outcomes=_records([(0, 1)] * 8), settings=S).status == "ok"
    rerecorded = json.loads((tmp_path / "tiny-llama.json").read_text())["entries"]
    assert rerecorded["longbench_v2/1k"]["settings"] == S and "settings" not in rerecorded["longbench_v2/2k"]


def test_paired_gate_without_common_items_says_so_and_uses_fisher(tmp_path):
    baselines.record(tmp_path, "m", "b", 4096, _summary(8, 0, 8), "cpu", _records([(1, 0)] * 8), settings=S)
    others = {f"x{i}": [0, 0] for i in range(8)}
    v = baselines.judge(tmp_path, "m", "b", 4096, _summary(0, 0, 8), outcomes=others, settings=S)
    assert any("no items in common with the baseline" in n for n in v.notes)
    assert not v.ok and "accuracy fell from 8/8" in v.failures[0] and "Fisher" in v.failures[0]


def _windows(values, book="b"):
    # one PG-19 record per window; 100 bytes each, so bits per byte = nll / (100 ln 2); as PG-19 gives them
    records = [{"id": f"{book}@{i * 50}", "book": book, "nll": v * 100 * math.log(2), "bytes": 100,
                "scored_tokens": 100} for i, v in enumerate(values)]
    return PG19().outcomes(records)


def _ppl_summary(outcomes):
    return {"n": len(outcomes), "correct": None, "nulls": None, "accuracy": None, "null_rate": None, "device": "cpu",
            "bits_per_byte": sum(outcomes.values()) / len(outcomes), "perplexity": 2.0}


def test_pg19_bits_per_byte_paired_over_windows(tmp_path):
    base = _windows([1.0, 1.2, 0.9, 1.1, 1.05, 0.95, 1.3, 1.0])
    baselines.record(tmp_path, "m", "pg19", 4096, _ppl_summary(base), "cpu", base, settings=S, measure=BPB)
    entry = json.loads((tmp_path / "m.json").read_text())["entries"]["pg19/4k"]
    assert entry["outcomes"]["b@50"] == pytest.approx(1.2) and entry["bits_per_byte"] == pytest.approx(1.0625)
    same = baselines.judge(tmp_path, "m", "pg19", 4096, _ppl_summary(base), outcomes=base, settings=S, measure=BPB)
    assert same.ok and any("paired t-test on 8 windows" in n for n in same.notes)
    noisy = _windows([1.01, 1.19, 0.9, 1.11, 1.04, 0.95, 1.31, 0.99])  # +-0.01, no trend
    assert baselines.judge(tmp_path, "m", "pg19", 4096, _ppl_summary(noisy), outcomes=noisy, settings=S, measure=BPB).ok
    worse = _windows([1.05, 1.24, 0.93, 1.16, 1.07, 1.0, 1.33, 1.06])
    v = baselines.judge(tmp_path, "m", "pg19", 4096, _ppl_summary(worse), outcomes=worse, settings=S, measure=BPB)
    assert not v.ok and "bits per byte rose from 1.0625 (baseline" in v.failures[0] and "to 1.1050" in v.failures[0]
    assert "on 8 paired windows (8 worse, 0 better;" in v.failures[0] and "paired t-test p = " in v.failures[0]
    better = _windows([0.9, 1.1, 0.8, 1.0, 1.0, 0.9, 1.2, 0.9])
    assert baselines.judge(tmp_path, "m", "pg19", 4096, _ppl_summary(better), outcomes=better, settings=S, measure=BPB).ok


def test_pg19_without_common_windows_says_so_and_tests_unpaired(tmp_path):
    base = _windows([1.0, 1.2, 0.9, 1.1, 1.05, 0.95, 1.3, 1.0])
    baselines.record(tmp_path, "m", "pg19", 4096, _ppl_summary(base), "cpu", base, settings=S, measure=BPB)
    far_worse = _windows([2.0, 2.2, 1.9, 2.1, 2.05, 1.95, 2.3, 2.0], book="other")
    v = baselines.judge(tmp_path, "m", "pg19", 4096, _ppl_summary(far_worse), outcomes=far_worse, settings=S, measure=BPB)
    assert any("no windows in common with the baseline" in n for n in v.notes)
    assert not v.ok and "Welch" in v.failures[0]
