"""``--lc-plan``'s prices past the measured contexts: the cost law fitted on a model's measured rates, the
points it was fitted on, and each cell's line (measured, fitted, past the trained window or hard limit)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from lcplugin.config.specs import parse_spec
from lcplugin.plugin.costlaw import fit, has_attention, model_cost, nnls
from lcplugin.plugin.progress import Rates, duration, rate_points

pytest_plugins = ["pytester"]

K, M = 1024, 1 << 20
MEASURED = (8 * K, 16 * K, 32 * K, 64 * K, 128 * K)


def _attention_prefill(n: int) -> float:
    return 0.05 + 3e-5 * n + 4e-10 * n * n  # seconds: constant, linear and quadratic terms


def _ssm_prefill(n: int) -> float:
    return 0.05 + 3e-5 * n


def _rates(prefill: Callable[[int], float], decode: Callable[[int], float]) -> dict[int, Rates]:
    return {n: Rates(n / prefill(n), 1 / decode(n)) for n in MEASURED}


def test_the_fit_recovers_known_coefficients_from_synthetic_points():
    attention = fit({n: _attention_prefill(n) for n in MEASURED}, attention=True, phase="prefill")
    assert attention.powers == (0, 1, 2) and attention.fallback == ""
    assert attention.coef == pytest.approx((0.05, 3e-5, 4e-10), rel=1e-6)
    ssm = fit({n: _ssm_prefill(n) for n in MEASURED}, attention=False, phase="prefill")
    assert ssm.powers == (0, 1) and ssm.coef == pytest.approx((0.05, 3e-5), rel=1e-6)
    decode = fit({n: 0.02 + 1e-7 * n for n in MEASURED}, attention=True, phase="decode")
    assert decode.powers == (0, 1) and decode.coef == pytest.approx((0.02, 1e-7), rel=1e-6)
    flat = fit({8 * K: 0.010, 32 * K: 0.012, 128 * K: 0.014}, attention=False, phase="decode")
    assert flat.powers == (0,) and flat.coef == pytest.approx((0.012,))  # an SSM's decode: the points' mean


def test_no_coefficient_goes_negative():
    """Decode per token falling with the context (launch-bound decode does) fits a flat law, not a negative
    slope that would price 1m below nothing."""
    falling = {8 * K: 0.087, 32 * K: 0.068, 128 * K: 0.073}
    law = fit(falling, attention=True, phase="decode")
    assert min(law.coef) >= 0 and law.coef[1] == 0.0 and law.coef[0] == pytest.approx(sum(falling.values()) / 3)
    assert min(nnls([1, 2, 3], [3.0, 2.0, 1.0], [0, 1, 2])) >= 0


def test_too_few_points_take_a_simpler_law_and_say_so():
    two = fit({16 * K: _attention_prefill(16 * K), 64 * K: _attention_prefill(64 * K)}, attention=True, phase="prefill")
    assert two.powers == (1, 2) and two.fallback == "2 points: no constant term"
    assert [two(n) for n in (16 * K, 64 * K)] == pytest.approx([_attention_prefill(16 * K), _attention_prefill(64 * K)])
    one = fit({64 * K: 2.0}, attention=True, phase="prefill")
    assert one.powers == (1,) and one(M) == pytest.approx(2.0 * 16)  # the rate held constant
    assert "quadratic term unknown" in one.fallback
    assert fit({64 * K: 0.05}, attention=True, phase="decode").powers == (0,)
    assert fit({}, attention=True, phase="prefill") is None


def test_a_1m_cell_is_priced_linearly_for_an_ssm_and_with_the_quadratic_term_for_attention():
    ssm = model_cost(_rates(_ssm_prefill, lambda n: 0.02), attention=False, layers_from="config")
    seconds, how = ssm.item(M, 128)
    assert seconds == pytest.approx(_ssm_prefill(M) + 128 * 0.02, rel=1e-6) and how == "fit past the measured 128k"
    transformer = model_cost(_rates(_attention_prefill, lambda n: 0.02 + 1e-7 * n), attention=True,
                             layers_from="config")
    seconds, how = transformer.item(M, 128)
    assert seconds == pytest.approx(_attention_prefill(M) + 128 * (0.02 + 1e-7 * M), rel=1e-6)
    assert how == "fit past the measured 128k"
    held = (0.05 + 3e-5 * 128 * K + 4e-10 * (128 * K) ** 2) * 8  # 128k's rate held constant to 1m: what a law
    assert transformer.prefill(M) > 5 * held  # without the quadratic term priced
    assert transformer.item(32 * K, 0) == (32 * K / transformer.measured[32 * K].prefill_tok_s, "measured")
    assert transformer.item(48 * K, 0)[1] == "fit"  # between measured contexts
    lines = transformer.law_lines()
    assert lines[0].startswith("prefill s = 0.05 + 3e-05·n + 4e-10·n² [attention layers (config)], fitted on 8k ")
    assert lines[1].startswith("decode s/token = 0.02 + 1e-07·n")


def test_rate_points_take_every_measured_context_newest_first_then_baselines(tmp_path: Path):
    results, baselines = tmp_path / "results", tmp_path / "baselines"

    def run(name: str, *tests: dict) -> None:
        (results / name).mkdir(parents=True)
        (results / name / "summary.json").write_text(json.dumps({"run": {}, "tests": list(tests)}))

    def row(ctx: int, prefill: float, device: str = "H200") -> dict:
        return {"model": "m", "device": device, "ctx": ctx, "prefill_tok_s": prefill, "decode_tok_s": 50.0}

    run("20260101-000000-aaaaaa", row(8 * K, 1000.0), row(32 * K, 900.0))
    run("20260102-000000-bbbbbb", row(8 * K, 2000.0), row(8 * K, 4000.0), row(128 * K, 5.0, device="cpu"))
    baselines.mkdir()
    (baselines / "m.json").write_text(json.dumps({"entries": {
        "longbench_v2/8k": {"machine": "H200", "efficiency": {"prefill_tok_s": 1.0}},
        "longbench_v2/64k": {"machine": "H200", "efficiency": {"prefill_tok_s": 700.0, "decode_tok_s": 40.0}}}}))
    points = rate_points(results, baselines, "m", "H200")
    assert points == {8 * K: Rates(3000.0, 50.0, "20260102-000000-bbbbbb"),
                      32 * K: Rates(900.0, 50.0, "20260101-000000-aaaaaa"),
                      64 * K: Rates(700.0, 40.0, "baseline m.json")}


def test_which_layers_a_model_has_comes_from_its_config(tmp_path: Path):
    def spec(source: str, family: str) -> object:
        return parse_spec({"name": "x", "source": source, "family": family, "engine": "hf", "trained_window": "4k"},
                          tmp_path / "x.toml")

    assert has_attention(spec("builtin:tiny-mamba", "ssm")) == (False, "config")
    assert has_attention(spec("builtin:tiny-zamba2", "hybrid")) == (True, "config")  # Mamba plus shared attention
    folder = tmp_path / "codestral"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"d_model": 64, "n_layer": 2, "ssm_cfg": {"layer": "Mamba2"}}))
    assert has_attention(spec(str(folder), "hybrid")) == (False, "config")  # the config wins over the family
    assert has_attention(spec(str(tmp_path / "absent"), "ssm")) == (False, "spec family ssm")


def _spec_toml(name: str, source: str, family: str, extra: str = "") -> str:
    return (f'name = "{name}"\nsource = "{source}"\nfamily = "{family}"\nengine = "hf"\ntrained_window = "4k"\n'
            f'dtype = "float32"\ncontexts = ["1k"]\ndefault_data = "synthetic"\n{extra}')


def test_the_plan_lists_the_fitted_points_and_marks_fitted_cells(pytester: pytest.Pytester):
    from lcplugin.plugin.plan import device_name

    pytester.makepyfile(test_lc='import pytest\npytestmark = pytest.mark.lc_benchmark("longbench_v2")\n\n'
                                'def test_lb(lc_case, lc_run):\n    lc_run(lc_case)\n')
    specs = pytester.mkdir("specs")
    (specs / "att.toml").write_text(_spec_toml("att", "builtin:tiny-llama", "transformer"))
    (specs / "ssm.toml").write_text(_spec_toml("ssm", "builtin:tiny-mamba", "ssm"))
    (specs / "capped.toml").write_text(_spec_toml("capped", "builtin:tiny-llama", "transformer", 'hard_limit = "8k"\n'))
    laws = {"att": (lambda n: 0.5 + 1e-4 * n + 1e-8 * n * n, lambda n: 0.01 + 1e-6 * n),
            "ssm": (lambda n: 0.5 + 1e-4 * n, lambda n: 0.02)}
    tests = [{"benchmark": "longbench_v2", "model": m, "ctx": n, "n": 2, "device": device_name(),
              "prefill_tok_s": n / prefill(n), "decode_tok_s": 1 / decode(n)}
             for m, (prefill, decode) in laws.items() for n in (1 * K, 2 * K, 4 * K)]
    old = pytester.path / "results" / "20200101-000000-old"
    old.mkdir(parents=True)
    (old / "summary.json").write_text(json.dumps({"run": {}, "tests": tests}))
    result = pytester.runpytest("--lc-specs", "specs", "--lc-models", "att,ssm,capped", "--lc-limit", "2",
                                "--lc-ctx", "1k,4k,16k,1m", "--lc-plan", "-p", "no:cacheprovider")
    assert result.ret == 0
    result.assert_outcomes()  # nothing ran

    def at(model: str, n: int) -> str:  # 2 items x (prefill + 128 decoded tokens), as the law prices them
        prefill, decode = laws[model]
        return duration(2 * (prefill(n) + 128 * decode(n)))

    points = ", ".join(f"{n // K}k {laws['att'][0](n):.3g} s" for n in (K, 2 * K, 4 * K))
    result.stdout.fnmatch_lines([
        "    att: 4 tests, *",
        f"      prefill s = 0.5 + 0.0001·n + 1e-08·n² [[]attention layers (config)], fitted on {points}",
        "      decode s/token = 0.01 + 1e-06·n [[]attention layers (config)], fitted on 1k 0.011 s/token, *",
        f"      1k: 1 tests, ~{at('att', K)} (measured)",
        f"      4k: 1 tests, ~{at('att', 4 * K)} (measured)",
        f"      16k: 1 tests, ~{at('att', 16 * K)} (fit past the measured 4k), beyond the trained window 4k",
        f"      1m: 1 tests, ~{at('att', M)} (fit past the measured 4k), beyond the trained window 4k",
    ])
    result.stdout.fnmatch_lines([
        "    ssm: 4 tests, *",
        "      prefill s = 0.5 + 0.0001·n [[]no attention layers (config)], fitted on 1k 0.602 s, 2k 0.705 s, 4k 0.91 s",
        "      decode s/token = 0.02 [[]no attention layers (config)], fitted on 1k 0.02 s/token, *",
        f"      1m: 1 tests, ~{at('ssm', M)} (fit past the measured 4k), beyond the trained window 4k",
    ])
    result.stdout.fnmatch_lines([
        "    capped: 4 tests, *",
        "      1k: 1 tests",
        "      16k: 1 tests, skipped when run: past the hard limit 8k",
        "      1m: 1 tests, skipped when run: past the hard limit 8k",
    ])
