"""One registry entry per engine: a new engine is its module and one ``register_engine`` call, and
everything that asks about engines (spec validation, ``--lc-engine``, markers and help, the
engine_args check, GPU counting, the version list) learns of it from that entry alone.

The new engine here arrives the way a plugin's would: a module loaded with ``-p`` that registers
its entry when imported. Collection only, in-process, so the file runs in a few seconds.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from lcplugin.benchmarks.base import BENCHMARKS
from lcplugin.config.session import LcSession
from lcplugin.config.settings import Settings
from lcplugin.config.specs import load_spec_file
from lcplugin.engines.registry import (
    EngineEntry,
    efficiency_only_args,
    engine_entry,
    engine_packages,
    register_engine,
    registered_engines,
    unregister_engine,
)
from lcplugin.errors import LcError, SpecError
from lcplugin.plugin.distributed import gpus_per_worker

pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parents[1]
# what an SGLang engine's entry would say; the class is never imported at collection
SGLANG = EngineEntry(name="sglang", target="sglang_engine:SGLangEngine", marker="SGLang engine",
                     engine_args=frozenset({"tp_size", "mem_fraction_static", "ignore_eos"}),
                     efficiency_only=frozenset({"tp_size", "mem_fraction_static"}), sized_by_context=True,
                     gpus_arg="tp_size", gpus_env="LC_TEST_SGLANG_TP", extra="pip install sglang",
                     packages=("sglang",))
PLUGIN = """
from lcplugin.engines import EngineEntry, register_engine

register_engine(EngineEntry(name="sglang", target="sglang_engine:SGLangEngine", marker="SGLang engine",
                            engine_args=frozenset({"tp_size"}), gpus_arg="tp_size"))
"""
SPEC = """name = "tiny-sg"
source = "builtin:tiny-llama"
family = "transformer"
engine = "sglang"
max_context = 4096
contexts = ["1k"]
"""
BENCH = """
import pytest

@pytest.mark.lc_benchmark("longbench_v2")
def test_lb2(lc_case, lc_run):
    lc_run(lc_case)
"""


@pytest.fixture
def sglang() -> Iterator[EngineEntry]:
    """SGLANG registered for one test, then forgotten (the registry outlives in-process pytest runs)."""
    previous = register_engine(SGLANG)
    yield SGLANG
    unregister_engine(SGLANG.name)
    if previous is not None:
        register_engine(previous)


@pytest.fixture
def plugin(pytester: pytest.Pytester) -> Iterator[pytest.Pytester]:
    """A pytester folder with the plugin module, a spec that uses its engine, and one benchmark test."""
    pytester.makepyfile(sglang_plugin=PLUGIN, test_lb2=BENCH)
    pytester.syspathinsert()
    (pytester.mkdir("specs") / "tiny-sg.toml").write_text(SPEC)
    yield pytester
    unregister_engine("sglang")


def collected(pytester: pytest.Pytester, *args: str) -> list[str]:
    """The node ids a ``--collect-only`` run keeps after deselection (``-m``, ``-k``)."""
    reprec = pytester.inline_run("--collect-only", "-p", "no:cacheprovider", *args)
    assert reprec.ret == pytest.ExitCode.OK or reprec.ret == pytest.ExitCode.NO_TESTS_COLLECTED, reprec.ret
    (call,) = reprec.getcalls("pytest_collection_finish")
    return [item.nodeid for item in call.session.items]


def test_the_builtin_entries_keep_what_the_tables_said() -> None:
    """The tables the entries replaced, as they were: accepted arguments, GPUs and versions."""
    builtin = ["hf", "mamba_ssm", "vllm"]  # (tests/fake_engines.py registers "fake" when another test imports it)
    assert [name for name in registered_engines() if name in builtin] == builtin
    assert engine_entry("vllm").sized_by_context and not engine_entry("hf").sized_by_context
    assert engine_entry("vllm").gpus({"tensor_parallel_size": 4}) == 4
    assert engine_entry("hf").gpus({"tensor_parallel_size": 4}) == 1  # hf does not span GPUs
    assert efficiency_only_args("hf") == {"device", "max_batch_size", "max_batch_tokens", "prefill_chunk", "cache",
                                          "compile", "decode_attention", "decode_loop"}
    assert "ignore_eos" not in efficiency_only_args("vllm")  # it changes what is generated
    assert engine_packages()[:4] == ["torch", "transformers", "vllm", "mamba-ssm"]


def test_an_entry_must_accept_its_efficiency_only_arguments() -> None:
    with pytest.raises(LcError, match="efficiency_only names keys it does not accept"):
        replace(SGLANG, efficiency_only=frozenset({"tp"}))
    with pytest.raises(LcError, match="target 'module:Class'"):
        replace(SGLANG, target="sglang_engine.SGLangEngine")


def test_a_spec_may_name_a_registered_engine_only(sglang: EngineEntry, tmp_path: Path) -> None:
    path = tmp_path / "tiny-sg.toml"
    path.write_text(SPEC)
    assert load_spec_file(path).engine == "sglang"
    unregister_engine("sglang")
    with pytest.raises(SpecError, match="field 'engine' is 'sglang'; use one of (fake, )?hf, mamba_ssm, vllm"):
        load_spec_file(path)


def test_gpus_per_worker_reads_the_entry(sglang: EngineEntry, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LCPLUGIN_GPUS_PER_WORKER", raising=False)
    monkeypatch.delenv("LC_TEST_SGLANG_TP", raising=False)

    def per_worker(**settings: object) -> int:
        return gpus_per_worker(LcSession(Settings(models="tiny-llama", **settings), tmp_path))  # type: ignore[arg-type]

    assert per_worker(engine="sglang", engine_args=(("tp_size", 4),)) == 4
    monkeypatch.setenv("LC_TEST_SGLANG_TP", "2")
    assert per_worker(engine="sglang") == 2
    assert per_worker() == 1  # tiny-llama's own engine, hf, uses one


def test_the_engine_args_check_reads_the_entry(sglang: EngineEntry, tmp_path: Path) -> None:
    with pytest.raises(LcError, match="engine 'sglang' does not accept 'max_batch_size'; it accepts ignore_eos, "
                                      "mem_fraction_static, tp_size"):
        LcSession(Settings(models="tiny-llama", engine="sglang", engine_args=(("max_batch_size", 4),)), tmp_path)


@pytest.mark.parametrize("columns", ["40", "200"])  # CI's terminal width is not ours: argparse wraps help to it
def test_a_plugin_engine_reaches_specs_option_and_markers(plugin: pytest.Pytester, columns: str,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", columns)
    args = ("-p", "sglang_plugin", "--strict-markers", "--lc-specs", "specs", "--lc-ctx", "1k")
    assert collected(plugin, *args, "--lc-models", "tiny-sg", "-m", "engine_sglang") == ["test_lb2.py::test_lb2[tiny-sg-1k]"]
    assert collected(plugin, *args, "--lc-models", "tiny-llama", "--lc-engine", "sglang", "-m", "engine_sglang") == [
        "test_lb2.py::test_lb2[tiny-llama-1k]"]
    markers = plugin.runpytest("-p", "sglang_plugin", "--markers")
    markers.stdout.fnmatch_lines(["@pytest.mark.engine_sglang: SGLang engine, the engine a test runs*"])
    usage = plugin.runpytest("-p", "sglang_plugin", "--help")
    # the engines registered in this process: others' tests may have added one (the fake engine) before
    words = " ".join(usage.stdout.str().split())
    listed = re.search(r"--lc-engine=NAME override every spec's engine \(([^)]*)\)", words)
    assert listed and {"hf", "mamba_ssm", "sglang", "vllm"} <= set(listed.group(1).split(", ")), words[:300]


def test_markers_follow_the_engine_a_test_runs(pytester: pytest.Pytester) -> None:
    """``-m engine_vllm --lc-engine vllm`` selects every test of the selected models, whatever their
    specs' own engine (all hf here); the spec's engine marker no longer selects them."""
    base = (str(REPO / "benches"), "--rootdir", str(REPO), "--lc-results", str(pytester.path / "results"),
            "--lc-baselines", str(pytester.path / "baselines"), "--lc-models", "tiny-llama,tiny-mamba", "--lc-ctx", "1k")
    every = collected(pytester, *base)
    assert len(every) == len(BENCHMARKS) * 2  # every benchmark x 2 models
    assert collected(pytester, *base, "-m", "engine_vllm", "--lc-engine", "vllm") == every
    assert collected(pytester, *base, "-m", "engine_hf", "--lc-engine", "vllm") == []
    assert collected(pytester, *base, "-m", "engine_hf") == every


def test_vllm_tensor_parallel_on_cuda_turns_the_allreduce_norm_fusion_off_unless_the_spec_sets_it():
    # two H200s, vLLM 0.26.0 + FlashInfer 0.6.14, multicast off: TP=2 died in compile_or_warm_up_model with an
    # illegal memory access from the fused all-reduce + RMSNorm (benches/reference/runs/h200-vllm-tp2-worker-failure.log)
    from lcplugin.engines.base import EngineConfig
    from lcplugin.engines.vllm import llm_kwargs

    config = EngineConfig(engine="vllm", model="m", source="/m", tokenizer="/m")
    kwargs, why = llm_kwargs(config, {"tensor_parallel_size": 2}, cuda=True)
    assert kwargs["compilation_config"] == {"pass_config": {"fuse_allreduce_rms": False}}
    assert "fuse_allreduce_rms off" in why["compilation_config_why"] and "\n" not in why["compilation_config_why"]
    for args, cuda in (({"tensor_parallel_size": 1}, True), ({}, True), ({"tensor_parallel_size": 2}, False)):
        kwargs, why = llm_kwargs(config, args, cuda)
        assert "compilation_config" not in kwargs and why == {}, (args, cuda)
    own = {"tensor_parallel_size": 2, "compilation_config": {"mode": 0}}
    kwargs, why = llm_kwargs(config, own, cuda=True)
    assert kwargs["compilation_config"] == {"mode": 0} and why == {}  # the spec's own wins
