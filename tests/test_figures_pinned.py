"""The terminal table and report.md, pinned character for character on known summaries.

Written against the code before the figure table (``lcplugin.results.figures``) existed: the table
may move where columns are declared, never what a user sees (same columns, order and formats).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from lcplugin.plugin.terminal import write_summary
from lcplugin.results.report import write_report

SUMMARIES: list[dict[str, Any]] = [
    {"benchmark": "longbench_v2", "model": "tiny-llama", "test": "tiny-llama-1k", "ctx": 1024, "n": 8,
     "accuracy": 0.375, "accuracy_ci95": [0.1368, 0.6943], "null_rate": 0.125, "prefill_tok_s": 12345.6,
     "decode_tok_s": 45.67, "ttft_s": 0.1234, "peak_mem_gb": None, "perplexity": None, "wall_s": 3.21,
     "engine_load_s": 1.5, "worker": "main", "baseline": {"status": "recorded"}},
    {"benchmark": "longbench_v2", "model": "tiny-llama", "test": "tiny-llama-8k", "ctx": 8192, "n": 4,
     "budget": 120000, "accuracy": 0.5, "accuracy_ci95": [0.15, 0.85], "null_rate": 0.0, "prefill_tok_s": 2345.0,
     "decode_tok_s": 5.0, "ttft_s": 0.5, "peak_mem_gb": 1.2345, "perplexity": None, "wall_s": 10.05,
     "engine_load_s": None, "worker": "gw0", "baseline": {"status": "regressed", "delta_accuracy": -0.125}},
    {"benchmark": "pg19", "model": "tiny-llama", "test": "tiny-llama-1k", "ctx": 1024, "n": 2, "accuracy": None,
     "accuracy_ci95": None, "null_rate": None, "prefill_tok_s": 999.4, "decode_tok_s": None, "ttft_s": 0.05,
     "peak_mem_gb": None, "perplexity": 12.3456, "wall_s": 0.9, "engine_load_s": 0.25, "worker": None,
     "baseline": {"status": "none"}},
    {"benchmark": "pg19", "model": "tiny-llama", "test": "tiny-llama-8k", "ctx": 8192, "n": 2, "accuracy": None,
     "accuracy_ci95": None, "null_rate": None, "prefill_tok_s": 1500.0, "decode_tok_s": None, "ttft_s": 0.2,
     "peak_mem_gb": 3.0, "perplexity": 20.0, "wall_s": 1.0, "engine_load_s": None, "worker": "main",
     "baseline": {"status": "ok", "delta_accuracy": None}},
]

TERMINAL = """\
test                                            n    acc          ci95   null  prefill/s  decode/s  ttft_s  mem_gb      ppl  test_s  load_s worker        vs baseline
longbench_v2[tiny-llama-1k]                     8  0.375   [0.14,0.69]  0.125      12346      45.7   0.123       -        -     3.2     1.5   main           recorded
longbench_v2[tiny-llama-8k] budget=120000       4  0.500   [0.15,0.85]  0.000       2345       5.0   0.500    1.23        -    10.1       -    gw0   -0.125 regressed
pg19[tiny-llama-1k]                             2      -             -      -        999         -   0.050       -    12.35     0.9     0.2      -        no baseline
pg19[tiny-llama-8k]                             2      -             -      -       1500         -   0.200    3.00    20.00     1.0       -   main               - ok"""

REPORT = """\
# lcplugin report

## longbench_v2

| model | run | ctx | budget | n | accuracy [95 % CI] | null rate | prefill tok/s | decode tok/s | TTFT s | peak mem GB | perplexity |
| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |
| tiny-llama | run-a | 1k | – | 8 | 0.375 [0.137, 0.694] | 0.125 | 12,346 | 45.7 | 0.123 | – | – |
| tiny-llama | run-a | 8k | 120000 | 4 | 0.500 [0.150, 0.850] | 0.000 | 2,345 | 5.0 | 0.500 | 1.23 | – |

![longbench_v2-accuracy](longbench_v2-accuracy.png)
![longbench_v2-null_rate](longbench_v2-null_rate.png)
![longbench_v2-prefill_tok_s](longbench_v2-prefill_tok_s.png)
![longbench_v2-decode_tok_s](longbench_v2-decode_tok_s.png)
![longbench_v2-peak_mem_gb](longbench_v2-peak_mem_gb.png)

## pg19

| model | run | ctx | n | accuracy [95 % CI] | null rate | prefill tok/s | decode tok/s | TTFT s | peak mem GB | perplexity |
| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |
| tiny-llama | run-a | 1k | 2 | – | – | 999 | – | 0.050 | – | 12.346 |
| tiny-llama | run-a | 8k | 2 | – | – | 1,500 | – | 0.200 | 3.00 | 20.000 |

![pg19-prefill_tok_s](pg19-prefill_tok_s.png)
![pg19-peak_mem_gb](pg19-peak_mem_gb.png)
![pg19-perplexity](pg19-perplexity.png)

Missing figures (–) were not measured (memory on CPU, accuracy for PG-19), never zero.
"""


class Lines:
    """The two terminalreporter calls the summary makes, kept as lines."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def write_sep(self, sep: str, title: str) -> None:
        self.lines.append(f"{sep} {title} {sep}")

    def write_line(self, line: str, **markup: Any) -> None:
        self.lines.append(line)


def run_folder(tmp: Path, summaries: list[dict[str, Any]], run_id: str = "run-a") -> Path:
    folder = tmp / run_id
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps({"run": {"run_id": run_id}, "tests": summaries}))
    return folder


def terminal_lines(tmp: Path, summaries: list[dict[str, Any]]) -> list[str]:
    """The terminal summary's lines for these summaries (its report step included)."""
    folder = run_folder(tmp, summaries)
    lc = SimpleNamespace(summaries=summaries, store=SimpleNamespace(meta={"engine_loads": []}, dir=folder))
    tr = Lines()
    write_summary(tr, lc, SimpleNamespace(getoption=lambda name: None))  # type: ignore[arg-type]
    return tr.lines


def test_terminal_table_is_unchanged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # no plots: the table alone
    lines = terminal_lines(tmp_path, SUMMARIES)
    assert lines[0] == "= lcplugin summary ="
    assert "\n".join(lines[1:6]) == TERMINAL
    assert lines[6] == "engine loads: 0, 0.0 s (); tests: 15.2 s"


def test_the_session_line_totals_compile_and_warm_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # issue 18: a static, compiled decode pays its compile once per shape per session, outside the timings;
    # the session reports what it cost (an engine that does not compile reports nothing)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    warmups = (30.5, 12.0, 0.0)
    summaries = [{**s, "warmup_s": w} for s, w in zip(SUMMARIES, warmups, strict=False)]
    summaries += [dict(s) for s in SUMMARIES[len(warmups):]]
    assert terminal_lines(tmp_path, summaries)[6] == (
        "engine loads: 0, 0.0 s (); compile and warm-up: 42.5 s (outside the timings); tests: 15.2 s")


def test_report_markdown_and_plots_are_unchanged(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    paths = write_report([run_folder(tmp_path, SUMMARIES)], tmp_path / "out")
    assert (tmp_path / "out" / "report.md").read_text() == REPORT
    assert [p.name for p in paths[1:]] == [line[line.index("(") + 1:-1] for line in REPORT.splitlines()
                                           if line.startswith("![")]
