"""Benchmarks give per-item outcomes through one method, and the gate knows two kinds of outcome, not the
benchmarks: right or wrong (with null), or a number of a declared ``Measure``."""

from __future__ import annotations

import json
import math

from lcplugin.benchmarks.ada_leval import TSort
from lcplugin.benchmarks.base import Measure
from lcplugin.benchmarks.longbench_v2 import LongBenchV2
from lcplugin.benchmarks.pg19 import PG19
from lcplugin.results import baselines

S = {"data": "synthetic-v1"}


def test_generation_outcomes_are_right_or_wrong_with_null_and_skip_the_skipped():
    records = [{"id": 1, "correct": True, "null": False}, {"id": "b", "correct": False, "null": True},
               {"id": "c", "skipped": "overlength"}]
    for bench in (LongBenchV2(), TSort()):
        assert bench.outcomes(records) == {"1": [1, 0], "b": [0, 1]} and bench.measure is None


def test_pg19_outcomes_are_each_windows_bits_per_byte():
    records = [{"id": "book@0", "nll": 100 * math.log(2), "bytes": 50}, {"id": "book@9", "nll": None, "bytes": 5}]
    assert PG19().outcomes(records) == {"book@0": 2.0}
    assert PG19.measure is not None and PG19.measure.figures[0] == "bits_per_byte"


def test_the_gate_takes_any_measure_a_benchmark_declares(tmp_path):
    """A made-up benchmark whose items score a loss: recorded and gated with its own names, no gate change."""
    loss = Measure(label="loss", unit="item", figures=("loss", "loss_p90"))
    base = {f"q{i}": 1.0 + i / 10 for i in range(8)}
    summary = {"n": 8, "correct": None, "nulls": None, "accuracy": None, "null_rate": None, "device": "cpu",
               "loss": 1.35, "loss_p90": 1.7, "bits_per_byte": None}
    baselines.record(tmp_path, "m", "qa_loss", 4096, summary, "cpu", base, settings=S, measure=loss)
    entry = json.loads((tmp_path / "m.json").read_text())["entries"]["qa_loss/4k"]
    assert entry["outcomes"] == base and entry["loss"] == 1.35 and entry["loss_p90"] == 1.7
    assert {"items", "windows", "settings_hash", "bits_per_byte"}.isdisjoint(entry)
    same = baselines.judge(tmp_path, "m", "qa_loss", 4096, summary, outcomes=base, settings=S, measure=loss)
    assert same.ok and "paired t-test on 8 items" in same.notes
    worse = {k: v + 0.3 for k, v in base.items()}
    v = baselines.judge(tmp_path, "m", "qa_loss", 4096, {**summary, "loss": 1.65}, outcomes=worse, settings=S,
                        measure=loss)
    assert not v.ok and "loss rose from 1.3500 (baseline" in v.failures[0] and "to 1.6500" in v.failures[0]
    assert "on 8 paired items (8 worse, 0 better; mean +0.3000 per item)" in v.failures[0]
