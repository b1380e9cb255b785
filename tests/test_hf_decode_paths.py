"""The hf engine's decode (issue 18): attention over unrepeated KV heads, the engine's own greedy loop,
and the summary saying what decoding ran and why.

fp32 tiny models on CPU. Random tiny models have nearly flat logits, so equal greedy tokens are a
strict check: a logit moved by one rounding step would change a token.
"""

from __future__ import annotations

import functools
import random

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from lcplugin.engines import decode  # noqa: E402
from lcplugin.engines.base import EngineConfig, SamplingSettings  # noqa: E402
from lcplugin.engines.hf import HFEngine  # noqa: E402
from lcplugin.errors import EngineError  # noqa: E402
from lcplugin.models.tiny import materialize  # noqa: E402

GREEDY = SamplingSettings(max_new_tokens=12)
STATIC = {"cache": "static", "compile": False}


def _engine(name: str = "tiny-llama", **args) -> HFEngine:
    folder = str(materialize(name))
    return HFEngine(EngineConfig(engine="hf", model=name, source=folder, tokenizer=folder, dtype="float32",
                                 engine_args={"ignore_eos": True, **args}))


def _prompts(n: int = 5, seed: int = 3) -> list[list[int]]:
    rng = random.Random(seed)
    return [[256] + [rng.randrange(256) for _ in range(rng.randrange(10, 90))] for _ in range(n)]


def _outputs(engine: HFEngine, prompts: list[list[int]]) -> list[tuple[tuple[int, ...], str]]:
    try:
        return [(c.output_ids, c.finish_reason) for c in engine.generate(prompts, GREEDY)]
    finally:
        engine.close()


def _spy_sdpa(monkeypatch) -> list[tuple[int, int, int, bool]]:
    """(query heads, key heads, value heads, enable_gqa) of every one-token SDPA call."""
    import torch

    calls: list[tuple[int, int, int, bool]] = []
    real = torch.nn.functional.scaled_dot_product_attention

    def spy(query, key, value, *args, **kwargs):
        if query.shape[2] == 1:
            calls.append((query.shape[1], key.shape[1], value.shape[1], bool(kwargs.get("enable_gqa", False))))
        return real(query, key, value, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    return calls


@functools.cache
def _reference(n: int = 5) -> list[tuple[tuple[int, ...], str]]:
    """transformers' own decode: dynamic cache, batch 1, its attention."""
    return _outputs(_engine(decode_attention="transformers"), _prompts(n))


@pytest.mark.parametrize("args", [STATIC, {**STATIC, "max_batch_size": 3}, {"max_batch_size": 3}],
                         ids=["static", "static-batched", "dynamic-batched"])
def test_decode_attention_reads_unrepeated_kv_heads_and_gives_the_same_tokens(args, monkeypatch):
    """tiny-llama has 2 query heads over 1 KV head. transformers repeats the KV heads for every decode
    step on a static cache (its mask forbids enable_gqa) and for left-padded batches; the engine's
    decode attention never does, and its greedy tokens equal transformers' and the dynamic path's."""
    from transformers.integrations import sdpa_attention

    prompts = _prompts()
    reference = _reference()
    repeats: list[int] = []
    real_repeat = sdpa_attention.repeat_kv
    monkeypatch.setattr(sdpa_attention, "repeat_kv", lambda h, n: repeats.append(h.shape[2]) or real_repeat(h, n))
    calls = _spy_sdpa(monkeypatch)
    engine = _engine(**args)
    try:
        assert engine.describe()["decode_attention"] == "gqa"
        got = [(c.output_ids, c.finish_reason) for c in engine.generate(prompts, GREEDY)]
        assert engine.model.config._attn_implementation == "sdpa"  # swapped only while decoding
    finally:
        engine.close()
    assert got == reference
    assert calls and all(c == (2, 1, 1, True) for c in calls), calls[:4]
    if "max_batch_size" not in args:  # batch 1: no repeat at all (a padded batch's prefill still repeats)
        assert repeats == []


def test_transformers_decode_attention_repeats_kv_heads_on_a_static_cache(monkeypatch):
    """What the GQA-native attention replaces (and what check_decode.py times it against)."""
    calls = _spy_sdpa(monkeypatch)
    _outputs(_engine(decode_attention="transformers", **STATIC), _prompts(2))
    assert calls and all(c == (2, 2, 2, False) for c in calls), calls[:4]


def test_gqa_decode_attention_traces_into_one_graph():
    """The compiled decode step (inductor on CUDA) must trace through the decode attention without a
    graph break; dynamo's eager backend checks the tracing on CPU, with the tokens it gives."""
    import torch
    from transformers import AutoModelForCausalLM, StaticCache

    model = AutoModelForCausalLM.from_pretrained(str(materialize("tiny-llama")), dtype=torch.float32,
                                                 attn_implementation="sdpa").eval()
    ids = torch.tensor([_prompts(1)[0]])
    mask = torch.ones_like(ids)
    with torch.inference_mode():
        reference = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=6, do_sample=False,
                                   pad_token_id=0)[:, ids.shape[1]:]
        torch._dynamo.reset()
        step = torch.compile(model.__call__, backend="eager", fullgraph=True)
        with decode.attention(model, "gqa"):
            cache = StaticCache(config=model.config, max_cache_len=128)
            got = decode.greedy_decode(model, ids, mask, cache, max_new_tokens=6, eos_ids=(), pad_id=0, step=step)
    assert got.tolist() == reference.tolist()


@pytest.mark.parametrize("args", [{}, {**STATIC, "max_batch_size": 4}, {**STATIC, "prefill_chunk": 40}],
                         ids=["dynamic", "static-batched", "static-chunked"])
def test_engine_loop_gives_generates_greedy_tokens(args):
    """The engine loop equals generate, batch 1 and batched, static and dynamic, chunked or not; with
    end-of-sequence tokens that fire (the first token of one row: min_new_tokens masks it there; a later
    token of another row), so stops, padding after a stop and finish reasons are compared too."""
    prompts = _prompts()
    free = _reference()  # without end-of-sequence tokens
    eos = [free[0][0][0], free[1][0][5]]
    outputs = {}
    for loop in ("generate", "engine"):
        engine = _engine(**args, decode_loop=loop, ignore_eos=False)
        engine.eos_ids = eos
        outputs[loop] = _outputs(engine, prompts)
    assert outputs["engine"] == outputs["generate"]
    assert {reason for _, reason in outputs["engine"]} == {"stop", "length"}
    assert outputs["generate"][0][0][0] != eos[0]  # min_new_tokens=1 kept the first token from being eos


def test_engine_loop_without_end_tokens_equals_generate_and_batch_one():
    """ignore_eos (efficiency runs): no stop check at all; batched greedy equals batch 1."""
    single = _outputs(_engine(decode_loop="engine", **STATIC), _prompts())
    assert single == _reference()
    assert _outputs(_engine(decode_loop="engine", max_batch_size=4), _prompts()) == single


def test_deferred_stop_flag_stops_a_step_or_two_late_with_the_same_tokens():
    """The CUDA stop check (a pinned copy read once its event has passed, never waiting) run on CPU
    with an event that is late once: the loop stops early, tokens after each end are padding."""
    import torch
    from transformers import AutoModelForCausalLM

    class LateEvent:  # not yet passed when first asked
        def __init__(self) -> None:
            self.polls = 0

        def record(self) -> None:
            pass

        def query(self) -> bool:
            self.polls += 1
            return self.polls > 1

    model = AutoModelForCausalLM.from_pretrained(str(materialize("tiny-llama")), dtype=torch.float32).eval()
    ids = torch.tensor([_prompts(1)[0]])
    mask = torch.ones_like(ids)
    with torch.inference_mode():
        free = decode.greedy_decode(model, ids, mask, None, max_new_tokens=20, eos_ids=(), pad_id=0)[0].tolist()
        at = next(i for i in range(3, 20) if free[i] not in free[:i])
        eos = free[at]
        stop = decode.StopFlag(ids.device, event=LateEvent)
        got = decode.greedy_decode(model, ids, mask, None, max_new_tokens=20, eos_ids=[eos], pad_id=0,
                                   stop=stop)[0].tolist()
        direct = decode.greedy_decode(model, ids, mask, None, max_new_tokens=20, eos_ids=[eos], pad_id=0)[0].tolist()
    end = at + 1
    assert direct == free[:end]  # read directly: stops at the end-of-sequence token
    assert end < len(got) < 20 and got[:end] == free[:end] and set(got[end:]) == {0}


def test_engine_loop_refusals_are_one_line():
    import torch
    from transformers import AutoModelForCausalLM

    with pytest.raises(EngineError, match="decode_loop='engine' refused: model type 'mamba2'"):
        _engine("tiny-mamba2", decode_loop="engine")
    with pytest.raises(EngineError, match="decode_loop='fast': accepted values"):
        _engine(decode_loop="fast")
    with pytest.raises(EngineError, match="decode_attention='flash': accepted values"):
        _engine(decode_attention="flash")
    model = AutoModelForCausalLM.from_pretrained(str(materialize("tiny-llama")), dtype=torch.float32)
    assert decode.choose_loop(model, "engine", [1])[0] == "engine"
    model.generation_config.repetition_penalty = 1.05  # as Qwen2.5's: the engine turns it off (decode.NOT_APPLIED)
    assert decode.choose_loop(model, "engine", [1])[0] == "engine"
    model.generation_config.suppress_tokens = [5]  # a processor the loop does not apply
    with pytest.raises(EngineError) as info:
        decode.choose_loop(model, "engine", [1])
    assert "\n" not in str(info.value) and "SuppressTokensLogitsProcessor" in str(info.value)


def test_the_engine_loop_is_the_default_over_a_compiled_static_cache_where_it_applies():
    # measured on an H200 (check_decode.py part e): 176 tokens/s at 8k against 145 through generate
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(materialize("tiny-llama")), dtype=torch.float32)
    assert decode.choose_loop(model, None, [1], compiled=True)[0] == "engine"
    assert decode.choose_loop(model, None, [1], compiled=False) == (
        "generate", "automatic: the engine loop runs by default over a compiled static cache only")
    model.generation_config.suppress_tokens = [5]  # the default falls back, with the reason; a request refuses
    loop, why = decode.choose_loop(model, None, [1], compiled=True)
    assert loop == "generate" and "SuppressTokensLogitsProcessor" in why
    mamba2 = AutoModelForCausalLM.from_pretrained(str(materialize("tiny-mamba2")), dtype=torch.float32)
    loop, why = decode.choose_loop(mamba2, None, [1], compiled=True)
    assert loop == "generate" and "'mamba2'" in why


@pytest.mark.parametrize(("name", "reason"), [
    ("tiny-mamba", "transformers marks mamba not compilable"),
    ("tiny-mamba2", "mamba2 keeps its recurrent state in cache_params"),
    ("tiny-zamba2", "transformers marks zamba2 not compilable"),
    ("tiny-nemotron-h", "transformers compiles decoding only over a static cache"),  # on CUDA it does (below)
    ("tiny-jamba", "transformers compiles decoding only over a static cache"),
    ("tiny-llama", "transformers compiles decoding only over a static cache"),
])
def test_summary_says_what_decoding_ran_and_why_it_is_not_compiled(name, reason):
    engine = _engine(name)
    try:
        settings = engine.describe()
    finally:
        engine.close()
    assert settings["decode_path"].startswith("eager step over a dynamic cache")
    assert settings["decode_path_why"].startswith("not compiled: ") and reason in settings["decode_path_why"]
    assert "\n" not in settings["decode_path_why"]


HYBRIDS = ["tiny-jamba", "tiny-nemotron-h"]


@functools.cache
def _hybrid_reference(name: str) -> list[tuple[tuple[int, ...], str]]:
    return _outputs(_engine(name), _prompts())


@pytest.mark.parametrize("args", [STATIC, {**STATIC, "prefill_chunk": 16}, {**STATIC, "max_batch_size": 3}],
                         ids=["static", "static-chunked", "static-batched"])
@pytest.mark.parametrize("name", HYBRIDS)
def test_a_hybrids_static_cache_gives_the_dynamic_caches_tokens(name, args):
    # transformers' StaticCache holds Jamba's and Nemotron-H's Mamba layers as fixed conv and SSM states beside the
    # attention layers' rows, so their decode can be compiled; on request it must decode what the dynamic cache
    # does, read whole, in chunks carried into it, or left-padded in a batch
    engine = _engine(name, **args)
    assert engine.cache_kind == "static" and engine.describe()["cache"] == "static"
    batched = "max_batch_size" in args
    chunked = "prefill_chunk" in args
    got = _outputs(engine, _prompts())
    assert got == _hybrid_reference(name)
    assert not chunked or engine.chunked_sequences == sum(len(p) > 16 for p in _prompts()) > 0
    assert not batched or engine._batch_counter < len(_prompts())


def test_the_static_cache_is_the_hybrids_default_on_cuda_and_refused_where_transformers_has_none():
    import torch
    from transformers import AutoModelForCausalLM

    from lcplugin.engines.prefill import choose_cache

    for name in ("tiny-zamba2", "tiny-mamba2", "tiny-mamba"):
        model = AutoModelForCausalLM.from_pretrained(str(materialize(name)), dtype=torch.float32)
        with pytest.raises(EngineError) as info:
            choose_cache(model, "cuda", "static", None)
        assert "\n" not in str(info.value) and "cache='dynamic'" in str(info.value), name
        assert choose_cache(model, "cuda", None, None)[:2] == ("dynamic", False)
    for name in HYBRIDS:  # measured faster on an H200 (prefill.HYBRID_STATIC_DEFAULT): the default on CUDA
        model = AutoModelForCausalLM.from_pretrained(str(materialize(name)), dtype=torch.float32)
        kind, compiled, why = choose_cache(model, "cuda", None, None)
        assert (kind, compiled) == ("static", True) and why.startswith("automatic: static and compiled"), name
        assert choose_cache(model, "cpu", None, None)[:2] == ("dynamic", False)
        assert choose_cache(model, "cuda", "dynamic", None) == ("dynamic", False, "requested")


def test_a_models_generation_config_penalty_is_not_applied_and_is_named(tmp_path):
    """The suite's sampling is the whole decoding, as in vLLM's engine (its offline API ignores a model's
    generation config): Qwen2.5's repetition_penalty 1.05 was applied by hf alone, so the two engines
    measured different decodings of one model, and the result's key (its sampling) did not say so."""
    import json
    import shutil

    folder = tmp_path / "tiny-llama-penalised"
    shutil.copytree(materialize("tiny-llama"), folder)
    gen = json.loads((folder / "generation_config.json").read_text())
    (folder / "generation_config.json").write_text(json.dumps({**gen, "repetition_penalty": 1.3}))

    def engine() -> HFEngine:
        return HFEngine(EngineConfig(engine="hf", model="tiny-llama", source=str(folder), tokenizer=str(folder),
                                     dtype="float32", engine_args={"ignore_eos": True}))

    assert _outputs(engine(), _prompts()) == _reference()  # the penalty would move these nearly flat logits
    penalised, plain = engine(), _engine()
    try:
        assert penalised.describe()["generation_config_not_applied"] == {"repetition_penalty": 1.3}
        assert "generation_config_not_applied" not in plain.describe()
        assert decode.choose_loop(penalised.model, "engine", [1])[0] == "engine"  # nothing left it cannot apply
    finally:
        penalised.close()
        plain.close()
