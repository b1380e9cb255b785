"""Chunked prefill in the ``hf`` engine changes nothing but memory and kernel limits.

fp32 tiny models on CPU, prompts cut into at least three chunks: final logits within 1e-4 of one
forward, greedy tokens identical, PG-19 NLL within 1e-5 relative. Mamba-1 and Jamba included: their
scans are continued from the carried state (engines/mamba1_carry.py, tests/test_mamba1_carry.py).
"""

from __future__ import annotations

import json

import pytest

from lcplugin.engines import prefill
from lcplugin.engines.base import EngineConfig, SamplingSettings
from lcplugin.errors import EngineError
from lcplugin.models.tiny import materialize

from .suite_runs import CHUNKED, ONE_FORWARD, STATIC, BenchRun

CHUNK = 300
PROMPT = 1000  # four chunks of 300 (the last one 100)


def _engine(name: str, **engine_args):
    from lcplugin.engines.hf import HFEngine

    folder = str(materialize(name))
    return HFEngine(EngineConfig(engine="hf", model=name, source=folder, tokenizer=folder, dtype="float32",
                                 engine_args=engine_args))


def _prompt(n: int = PROMPT, seed: int = 5) -> list[int]:
    import random

    rng = random.Random(seed)
    return [256] + [rng.randrange(0, 256) for _ in range(n - 1)]


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-mamba2", "tiny-zamba2", "tiny-nemotron-h", "tiny-mamba",
                                  "tiny-jamba"])
def test_chunked_forward_gives_the_logits_of_one_forward(name, monkeypatch, tiny_model):
    import torch

    calls = []
    real = prefill.chunk_attention
    monkeypatch.setattr(prefill, "chunk_attention", lambda *a, **k: calls.append(a[1].shape[2]) or real(*a, **k))
    model = tiny_model(name)
    ids = torch.tensor([_prompt()])
    with torch.inference_mode():
        whole = model(ids).logits[0, -1].float()
        chunked, _ = prefill.forward_chunks(model, ids, CHUNK)
    assert chunked.shape == (1, whole.shape[-1])
    torch.testing.assert_close(chunked[0], whole, rtol=0, atol=1e-4)
    if name not in ("tiny-mamba2", "tiny-mamba"):  # attention layers ran through the maskless attention
        assert sorted(set(calls)) == [100, 300]


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-mamba2", "tiny-zamba2", "tiny-mamba", "tiny-jamba"])
def test_chunked_engine_generates_the_same_greedy_tokens_and_nll(name, monkeypatch):
    reads = []
    real = prefill.forward_chunks
    monkeypatch.setattr(prefill, "forward_chunks", lambda m, ids, *a, **k: reads.append(ids.shape[1]) or real(m, ids, *a, **k))
    sampling = SamplingSettings(max_new_tokens=12)
    prompts = [_prompt(), _prompt(700, seed=6)]
    outputs, nll = {}, {}
    for chunk in (0, CHUNK):
        engine = _engine(name, prefill_chunk=chunk, ignore_eos=True)
        try:
            assert engine.describe()["prefill_chunk"] == chunk
            outputs[chunk] = [c.output_ids for c in engine.generate(prompts, sampling)]
            nll[chunk] = engine.loglikelihood(_prompt(seed=7), 100).nll
        finally:
            engine.close()
    assert reads == [PROMPT - 1, 699, PROMPT]  # only the chunked engine read in chunks, every sequence
    assert outputs[CHUNK] == outputs[0] and all(len(o) == 12 for o in outputs[0])
    assert nll[CHUNK] == pytest.approx(nll[0], rel=1e-5)


def test_automatic_chunk_follows_the_family_and_device():
    import transformers as T

    from lcplugin.models.random_models import SHAPES

    cfg = dict(SHAPES["nemotron-h-8b"]["config"])
    nemotron = T.AutoConfig.for_model(cfg.pop("model_type"), **cfg)
    # d_in_proj = 2*8192 + 2*8*128 + 128 = 18,560: 2^31/18,560 = 115,705 tokens; 0.9 of it, floor to 256
    assert prefill.kernel_token_limit(nemotron) == 103_936
    assert prefill.choose_chunk(nemotron, "cuda", None)[0] == 103_936
    assert prefill.choose_chunk(nemotron, "cpu", None)[0] == 0
    llama = T.LlamaConfig()
    assert prefill.choose_chunk(llama, "cuda:0", None) == (prefill.ATTENTION_CHUNK, prefill.choose_chunk(
        llama, "cuda", None)[1])
    assert prefill.choose_chunk(llama, "cpu", 512)[0] == 512
    # Mamba-1 layers: the in_proj output, 2*d_inner = 10,240 per token, under 2^31 elements (0.9 of
    # 209,715 tokens = 188,743, floor to 256); scans carried across chunks
    for shape in ("jamba-reasoning-3b", "mamba-2.8b-hf"):
        cfg = dict(SHAPES[shape]["config"])
        mamba1 = T.AutoConfig.for_model(cfg.pop("model_type"), **cfg)
        chunk, why = prefill.choose_chunk(mamba1, "cuda", None)
        assert chunk == 188_672 and "10240 per token" in why and "carried" in why
        assert prefill.choose_chunk(mamba1, "cpu", None)[0] == 0
        assert prefill.choose_chunk(mamba1, "cuda", 4096) == (4096, "requested")


def _records(run: BenchRun, bench: str, model: str | None = None) -> dict[str, dict]:
    out = {}
    for path in sorted((run.run_dir() / "records" / bench).glob(f"{model or '*'}-*.jsonl")):
        for line in path.read_text().splitlines():
            row = json.loads(line)
            out[f"{path.stem}/{row['id']}"] = row
    return out


def test_acceptance_chunked_suite_run_equals_one_forward(shared_run):
    assert f"prefill_chunk={CHUNK}" in CHUNKED.args
    runs = {}
    for chunk, shared in ((0, ONE_FORWARD), (CHUNK, CHUNKED)):
        run = shared_run(shared)  # three models x four benchmarks at 2k, greedy
        summary = run.summary()
        responses = {k: r["response"] for k, r in _records(run, "longbench_v2").items()}
        ppl = {t["model"]: t["perplexity"] for t in summary["tests"] if t["benchmark"] == "pg19"}
        settings = {(t["benchmark"], t["model"]): t["engine_settings"] for t in summary["tests"]}
        runs[chunk] = responses, ppl, settings
    (resp0, ppl0, settings0), (resp1, ppl1, settings1) = runs[0], runs[CHUNK]
    assert len(resp0) >= 3 and resp1 == resp0
    assert set(ppl0) == {"tiny-llama", "tiny-mamba2", "tiny-zamba2"}
    for model, value in ppl0.items():
        assert ppl1[model] == pytest.approx(value, rel=1e-5)
    # the chunked path was really taken, for every test, and the summaries say so; on CPU the default
    # is one forward
    assert all(s["prefill_chunk"] == CHUNK and s["prefill_chunked_sequences"] > 0 for s in settings1.values())
    assert all(s["prefill_chunk"] == 0 and s["prefill_chunked_sequences"] == 0 for s in settings0.values())



@pytest.mark.parametrize("engine_args", [{"max_batch_size": 2}, {"prefill_chunk": CHUNK}])
def test_static_cache_gives_the_greedy_tokens_of_the_dynamic_one(engine_args):
    sampling = SamplingSettings(max_new_tokens=12)
    prompts = [_prompt(), _prompt(700, seed=6), _prompt(90, seed=8)]
    outputs, settings = {}, {}
    for cache in ("dynamic", "static"):
        engine = _engine("tiny-llama", cache=cache, compile=False, ignore_eos=True, **engine_args)
        try:
            outputs[cache] = [c.output_ids for c in engine.generate(prompts, sampling)]
            settings[cache] = engine.describe()
        finally:
            engine.close()
    assert outputs["static"] == outputs["dynamic"]
    assert settings["static"]["cache"] == "static" and settings["static"]["compile"] is False
    if "prefill_chunk" in engine_args:
        assert settings["static"]["prefill_chunked_sequences"] == 2


def test_cache_choice_is_automatic_and_refusals_are_one_line(tiny_model):
    llama, mamba2 = tiny_model("tiny-llama"), tiny_model("tiny-mamba2")
    assert prefill.choose_cache(llama, "cpu", None, None)[:2] == ("dynamic", False)
    assert prefill.choose_cache(llama, "cuda", None, None)[:2] == ("static", True)  # measured faster on an H200
    assert prefill.choose_cache(llama, "cuda", "dynamic", None)[:2] == ("dynamic", False)
    assert prefill.choose_cache(llama, "cuda", "static", None)[:2] == ("static", True)
    assert prefill.choose_cache(mamba2, "cuda", None, None)[:2] == ("dynamic", False)
    assert prefill.choose_cache(llama, "cuda", "static", False)[:2] == ("static", False)
    for args, match in [((mamba2, "cuda", "static", None), "'mamba2'"), ((llama, "cpu", "static", True), "CUDA"),
                        ((llama, "cuda", "dynamic", True), "needs cache='static'"), ((llama, "cpu", "paged", None), "cache='paged': accepted values")]:
        with pytest.raises(EngineError, match=match):
            prefill.choose_cache(*args)
    assert prefill.static_length(2048 - 128 + 128) == 4096 and prefill.static_length(4097) == 8192


def test_acceptance_static_cache_suite_run_equals_dynamic(shared_run):
    responses, settings = {}, {}
    for cache, shared in (("dynamic", ONE_FORWARD), ("static", STATIC)):  # the CPU default is dynamic
        run = shared_run(shared)
        settings[cache] = {t["engine_settings"]["cache"] for t in run.summary()["tests"] if t["model"] == "tiny-llama"}
        responses[cache] = {k: r["response"] for bench in ("longbench_v2", "ada_leval_tsort")
                            for k, r in _records(run, bench, "tiny-llama").items()}
    assert settings == {"dynamic": {"dynamic"}, "static": {"static"}}
    assert len(responses["dynamic"]) >= 3 and responses["static"] == responses["dynamic"]


def test_split_chunk_attention_merges_prefix_and_chunk_exactly(monkeypatch) -> None:
    """The CUDA chunk attention (prefix without a mask + the chunk's square causally, merged by their
    log-sum-exps) equals lower-right causal attention: here with a math kernel standing in for cuDNN."""
    import torch
    from torch.nn.attention.bias import causal_lower_right

    def math_lse(q, k, v, causal, scale):
        k, v = k.repeat_interleave(q.shape[1] // k.shape[1], 1), v.repeat_interleave(q.shape[1] // k.shape[1], 1)
        scores = q @ k.transpose(-1, -2) * (scale or q.shape[-1] ** -0.5)
        if causal:
            scores = scores.masked_fill(torch.ones_like(scores, dtype=torch.bool).triu(1), float("-inf"))
        return torch.softmax(scores, -1) @ v, torch.logsumexp(scores, -1)

    monkeypatch.setitem(prefill._LSE_KERNELS, "math", math_lse)
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(1, 8, 48, 16, generator=gen)
    k, v = torch.randn(1, 2, 160, 16, generator=gen), torch.randn(1, 2, 160, 16, generator=gen)
    got = prefill._split("math", q, k, v, None)
    ref = torch.nn.functional.scaled_dot_product_attention(
        q, k.repeat_interleave(4, 1), v.repeat_interleave(4, 1), attn_mask=causal_lower_right(48, 160))
    assert torch.allclose(got, ref, atol=1e-5), (got - ref).abs().max()
