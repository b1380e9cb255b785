"""Past the trained window (issue 16, item 1): a spec states the window its model was trained at and,
only where the architecture has one, a hard limit. A test past the window runs when asked for and is
marked in its records, its summary, its terminal row and the report; a test past a hard limit is
skipped with one line saying why. Checked as users meet it: spec files, and ``pytest benches`` runs."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from lcplugin.config.specs import load_spec_file, load_specs

from .conftest import REPO

pytest_plugins = ["pytester"]

# the models' windows as their cards and configs state them (issue 16); none has a position scheme that
# stops: RoPE (Llama, Qwen, Zamba2) is defined at every position, Jamba's and Nemotron-H's attention has
# no positions, SSM layers have none
WINDOWS = {"llama-3.1-8b": 131072, "qwen2.5-7b": 131072, "mamba-2.8b": 2048, "mamba-codestral-7b": 262144,
           "jamba-reasoning-3b": 262144, "nemotron-h-8b": 131072, "zamba2-7b": 4096}


def _window_of(name: str) -> int:
    return next(w for prefix, w in WINDOWS.items() if name.startswith(prefix))


def test_every_real_and_reference_spec_states_its_trained_window_and_no_hard_limit():
    folders = [REPO / "benches" / "reference" / d for d in ("specs", "specs-vllm")]
    specs = {**load_specs(), **{k: v for f in folders for k, v in load_specs([f]).items()}}
    real = [s for s in specs.values() if not s.is_builtin_tiny and "smollm2" not in s.name]
    assert len(real) == 7 + 8 + 7
    for spec in real:
        assert (spec.trained_window, spec.hard_limit) == (_window_of(spec.name), None), spec.path
    assert all(s.trained_window == 4096 and s.hard_limit is None for s in specs.values() if s.is_builtin_tiny)


def test_window_rule_past_the_trained_window():
    specs = load_specs()
    llama, qwen, mamba = specs["llama-3.1-8b-instruct"], specs["qwen2.5-7b-instruct"], specs["mamba-2.8b"]
    assert not llama.beyond_window(131072) and llama.beyond_window(262144) and mamba.beyond_window(4096)
    assert llama.window_at(262144) == 262144 and mamba.window_at(1024) == 2048
    assert qwen.window_at(1048576) == 1048576 and qwen.rope_for(1048576)["factor"] == 32.0


SPEC = 'name = "m"\nsource = "org/m"\nfamily = "transformer"\nengine = "hf"\n'


@pytest.mark.parametrize(("text", "field", "words"), [
    (SPEC, "trained_window", "is missing"),
    (SPEC + 'trained_window = "8k"\nhard_limit = "4k"\n', "hard_limit", "below trained_window"),
    (SPEC + 'trained_window = "8k"\nmax_context = "8k"\n', "max_context", "not both"),
    (SPEC + 'trained_window = "8x"\n', "trained_window", "not a context length"),
])
def test_a_bad_window_names_file_and_field(tmp_path, text, field, words):
    path = tmp_path / "m.toml"
    path.write_text(text)
    with pytest.raises(Exception, match=words) as err:
        load_spec_file(path)
    assert str(path) in str(err.value) and f"field '{field}'" in str(err.value)


def test_an_older_max_context_is_window_and_hard_limit_at_once(tmp_path):
    path = tmp_path / "m.toml"
    path.write_text(SPEC + 'max_context = "8k"\n')
    spec = load_spec_file(path)
    assert (spec.trained_window, spec.hard_limit, spec.legacy_max_context) == (8192, 8192, True)


def test_1m_is_a_test_id(pytester):
    out = pytester.runpytest(str(REPO / "benches"), "--collect-only", "-q", "-p", "no:cacheprovider",
                             "--lc-results", str(pytester.path / "results"), "--lc-models", "tiny-mamba",
                             "--lc-ctx", "256k,512k,1m", "-k", "pg19")
    assert out.ret == pytest.ExitCode.OK, out.stdout.str()
    ids = [line.rsplit("[", 1)[1].rstrip("]") for line in out.outlines if "::" in line]
    assert ids == ["tiny-mamba-256k", "tiny-mamba-512k", "tiny-mamba-1m"]


HARD = ('name = "tiny-llama-abs"\nsource = "builtin:tiny-llama"\nfamily = "transformer"\nengine = "hf"\n'
        'trained_window = "4k"\nhard_limit = "4k"\ndtype = "float32"\ndefault_data = "synthetic"\n')


@pytest.mark.slow
def test_past_the_window_runs_marked_and_past_a_hard_limit_skips(run_benches, tmp_path: Path):
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "abs.toml").write_text(HARD)
    out = run_benches("-rs", "--lc-specs", str(specs), "--lc-models", "tiny-llama,tiny-llama-abs",
                      "--lc-ctx", "4k,8k", "--lc-limit", "2", "-k", "longbench_v2", "--junitxml={out}/junit.xml")
    out.assert_outcomes(passed=3, skipped=1)
    assert ("tiny-llama-abs: context 8k is past the model's hard limit 4k (spec abs.toml field hard_limit: "
            "the architecture is undefined beyond it)") in out.stdout
    tests = {(t["model"], t["ctx"]): t for t in out.summary()["tests"]}
    assert set(tests) == {("tiny-llama", 4096), ("tiny-llama", 8192), ("tiny-llama-abs", 4096)}
    assert tests["tiny-llama", 8192]["beyond_window"] is True and tests["tiny-llama", 8192]["trained_window"] == 4096
    assert tests["tiny-llama", 4096]["beyond_window"] is False and tests["tiny-llama-abs", 4096]["beyond_window"] is False
    assert all(r["beyond_window"] for r in out.records("longbench_v2", "tiny-llama", 8192))
    assert not any(r["beyond_window"] for r in out.records("longbench_v2", "tiny-llama", 4096))
    rows = [line for line in out.stdout.splitlines() if line.startswith("longbench_v2[")]
    assert [row.split()[0:3] for row in rows if "beyond-window" in row] == [
        ["longbench_v2[tiny-llama-8k]", "budget=context", "beyond-window(4k)"]]
    assert len(rows) == 3
    props = {c.get("name"): {p.get("name"): p.get("value") for p in c.iter("property")}
             for c in ET.parse(out.folder / "junit.xml").getroot().iter("testcase")}
    assert props["test_longbench_v2[tiny-llama-8k]"]["lc_beyond_window"] == "True"
    md = (out.run_dir() / "report" / "report.md").read_text()
    assert "| tiny-llama | " in md and " | 8k † |" in md and " | 4k |" in md and "† past the model's trained window" in md
    assert json.loads(json.dumps(tests["tiny-llama", 8192]))["n"] == 2


def test_report_plots_shade_past_the_window():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lcplugin.results.report import _shade_beyond_window

    rows = [{"ctx": c, "trained_window": 4096, "beyond_window": c > 4096} for c in (2048, 4096, 8192)]
    fig, ax = plt.subplots()
    ax.plot([r["ctx"] for r in rows], [1, 2, 3])
    ax.plot([2048, 4096], [1, 1])
    assert _shade_beyond_window(ax, {"past": rows, "within": rows[:2]})
    assert len(ax.patches) == 1 and ax.patches[0].get_facecolor()[:3] == matplotlib.colors.to_rgb(ax.get_lines()[0].get_color())
    plt.close(fig)
