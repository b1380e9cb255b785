import json
from pathlib import Path

from lcplugin.plugin.progress import Progress, Rates, known_rates


def test_interactive_rewrites_one_line_and_clears_it():
    out = []
    p = Progress("t", 4, lambda text, newline: out.append((text, newline)), interactive=True, tokens=lambda: 1000)
    p.advance(1)
    p.advance(1)  # within half a second of the first update: not redrawn
    assert len(out) == 1 and out[0][0].startswith("\r[lcplugin] t: 1/4 items") and out[0][1] is False
    p.close()
    assert out[-1][0].startswith("\r ") and out[-1][0].endswith("\r")


def test_non_interactive_prints_plain_lines_rarely():
    out = []
    p = Progress("t", 10, lambda text, newline: out.append((text, newline)), interactive=False, every_s=0.0)
    p.advance(5)
    assert out == [(p.line(), True)] and "5/10 items" in out[0][0] and "left" in out[0][0]
    quiet = Progress("t", 10, lambda text, newline: out.append(text), interactive=False, every_s=3600)
    quiet.advance(5)
    quiet.close()
    assert len(out) == 1  # nothing within the hour, nothing to clear


# -- time left from known rates (issue 12.5) ----------------------------------------------------------


def _left(line: str) -> str:
    return line.rsplit(", ", 1)[1].removesuffix(" left")


def test_known_rates_price_every_item_from_the_first():
    plan = [(8000, 128), (7000, 64), (30000, 128), (100, 1)]
    rates = Rates(prefill_tok_s=5000.0, decode_tok_s=40.0)
    p = Progress("t", len(plan), lambda text, newline: None, interactive=False, plan=plan, rates=rates)
    expected = sum(prompt / 5000.0 + out / 40.0 for prompt, out in plan)  # 1.6+3.2 + 1.4+1.6 + 6+3.2 + 0.02+0.025
    assert abs(p.seconds_left(0.0) - expected) < 1e-9
    h, m, s = (int(x) for x in _left(p.line()).split(":"))
    assert abs(h * 3600 + m * 60 + s - expected) <= 1  # the line shows it, to the second
    # items done: the price of what is left, scaled toward the observed pace (here twice the known rates)
    p.done = 2
    spent = sum(prompt / 5000.0 + out / 40.0 for prompt, out in plan[:2])
    left = sum(prompt / 5000.0 + out / 40.0 for prompt, out in plan[2:])
    assert p.seconds_left(2 * spent) == left * (1 / 2 + 1 / 2 * 2)
    assert left < p.seconds_left(100 * spent) < 100 * left  # blends; never jumps to the observed pace at once


def test_without_known_rates_time_left_is_unknown_until_an_item_is_done():
    p = Progress("t", 4, lambda text, newline: None, interactive=False, plan=[(10, 1)] * 4, rates=None)
    assert p.line().endswith("? left")
    p.done = 1
    assert p.seconds_left(10.0) == 30.0  # today's extrapolation
    nodecode = Progress("t", 1, lambda text, newline: None, interactive=False, plan=[(10, 5)],
                        rates=Rates(prefill_tok_s=100.0, decode_tok_s=None))
    assert nodecode.line().endswith("? left")  # a decode rate is needed to price decoding


def _summary(folder: Path, tests: list[dict]) -> None:
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps({"run": {}, "tests": tests}))


def test_known_rates_come_from_the_newest_run_of_the_model_on_this_device(tmp_path: Path):
    results, baselines = tmp_path / "results", tmp_path / "baselines"
    t = {"model": "m", "ctx": 8192, "device": "H200", "prefill_tok_s": 9000.0, "decode_tok_s": 100.0}
    _summary(results / "20260101-000000-aaaaaa", [t])
    _summary(results / "20260102-000000-bbbbbb", [{**t, "prefill_tok_s": 8000.0, "decode_tok_s": 90.0},
                                                  {**t, "ctx": 32768, "prefill_tok_s": 5000.0}])
    _summary(results / "20260103-000000-cccccc", [{**t, "device": "A100", "prefill_tok_s": 1.0}])
    assert known_rates(results, baselines, "m", 8192, "H200") == Rates(8000.0, 90.0, "20260102-000000-bbbbbb")
    assert known_rates(results, baselines, "m", 16384, "H200").prefill_tok_s in (8000.0, 5000.0, 6500.0)
    assert known_rates(results, baselines, "other", 8192, "H200") is None
    assert known_rates(results, baselines, "m", 8192, "cpu (x86_64)") is None
    baselines.mkdir()
    (baselines / "other.json").write_text(json.dumps({"entries": {"longbench_v2/8k": {
        "machine": "H200", "efficiency": {"prefill_tok_s": 7000.0, "decode_tok_s": 70.0}}}}))
    assert known_rates(results, baselines, "other", 8192, "H200") == Rates(7000.0, 70.0, "baseline other.json")
