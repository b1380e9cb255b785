"""Mamba-1 scans continued from a carried state (engines/mamba1_carry.py), on CPU in float32.

The carry math against a sequential scan started from a given state; the ``hf`` hook against
transformers' one forward (and without it, the chunked output is wrong: what the hook fixes); the
``mamba_ssm`` engine's Mamba-1 chunk loop, run with pure-torch stand-ins for ``causal_conv1d_fn`` and
``selective_scan_fn`` on a model built from tiny-mamba's weights, against transformers' one forward of
the same weights. The real CUDA kernels are checked by scripts/gpu/check_mamba1_carry.py.
"""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from lcplugin.engines import layouts, mamba1_carry, prefill  # noqa: E402
from lcplugin.engines.mamba_prefill import Kernels, chunked_prefill, load_states  # noqa: E402
from lcplugin.models.tiny import materialize  # noqa: E402

from .test_mamba_prefill import ref_conv  # noqa: E402


def _ids(n: int, seed: int = 5) -> torch.Tensor:
    rng = random.Random(seed)
    return torch.tensor([[256] + [rng.randrange(0, 256) for _ in range(n - 1)]])


def sequential_scan(u, delta, A, B, C, D, z, delta_bias, h0):
    """Mamba-1's recurrence token by token, from state ``h0``: the definition the carry must meet."""
    dt = F.softplus(delta + delta_bias[..., None])
    h, ys = h0.clone(), []
    for t in range(u.shape[-1]):
        h = torch.exp(dt[..., t, None] * A) * h + (dt[..., t] * u[..., t])[..., None] * B[:, None, :, t]
        ys.append(torch.einsum("bdn,bn->bd", h, C[..., t]) + D * u[..., t])
    return torch.stack(ys, dim=-1) * F.silu(z), h


@pytest.mark.parametrize("block", [1 << 27, 3 * 2 * 6 * 4])  # one block; 3-token blocks (the cumulative sum
def test_carry_equals_a_scan_started_from_the_state(block, monkeypatch):  # carried between them)
    monkeypatch.setattr(mamba1_carry, "BLOCK_ELEMENTS", block)
    gen = torch.Generator().manual_seed(0)
    b, d, n, L = 2, 6, 4, 17
    u, delta, z = (torch.randn(b, d, L, generator=gen) for _ in range(3))
    B, C = torch.randn(b, n, L, generator=gen), torch.randn(b, n, L, generator=gen)
    A, D = -torch.rand(d, n, generator=gen) * 2, torch.randn(d, generator=gen)
    bias, h0 = torch.randn(d, generator=gen), torch.randn(b, d, n, generator=gen)
    zero_y, zero_h = sequential_scan(u, delta, A, B, C, D, z, bias, torch.zeros_like(h0))
    want_y, want_h = sequential_scan(u, delta, A, B, C, D, z, bias, h0)
    got_y, got_h = mamba1_carry.add_initial_state(zero_y.clone(), zero_h, h0, delta, A, C, z, bias, True)
    torch.testing.assert_close(got_y, want_y, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_h, want_h, rtol=1e-5, atol=1e-5)
    assert (zero_y - want_y).abs().max() > 1e-2  # the state matters here


@pytest.fixture(scope="module")
def tiny_mamba():
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(materialize("tiny-mamba")), dtype=torch.float32).eval()


def test_hf_chunks_without_the_carry_are_wrong_and_the_hook_leaves_nothing_behind(tiny_mamba, monkeypatch):
    """What the hook fixes: transformers' chunked Mamba-1 forward restarts every scan from zero."""
    import contextlib

    from transformers.models.mamba import modeling_mamba

    original = modeling_mamba.mamba_selective_scan
    ids = _ids(400)
    with torch.inference_mode():
        whole = tiny_mamba(ids).logits[0, -101:]
        with mamba1_carry.carried_scans(tiny_mamba):
            assert modeling_mamba.mamba_selective_scan is not original
        assert modeling_mamba.mamba_selective_scan is original and not tiny_mamba.backbone.layers[0].mixer._forward_pre_hooks
        carried, _ = prefill.forward_chunks(tiny_mamba, ids, 150, keep_last=101)  # the last chunk, and before
        monkeypatch.setattr(mamba1_carry, "carried_scans", lambda model: contextlib.nullcontext())
        zero_start, _ = prefill.forward_chunks(tiny_mamba, ids, 150, keep_last=101)
    torch.testing.assert_close(carried, whole, rtol=0, atol=1e-4)
    assert (zero_start - whole).abs().max() > 1e-2


def _as_mamba_ssm(hf_model):
    """tiny-mamba's transformers modules arranged as mamba-ssm's MambaLMHeadModel (backbone.embedding,
    layers of Blocks with norm / mixer / mlp=None, norm_f), unfused add + norm, residual in float32."""
    blocks = nn.ModuleList()
    for layer in hf_model.backbone.layers:
        block = nn.Module()
        block.norm, block.mixer, block.mlp = layer.norm, layer.mixer, None
        block.fused_add_norm, block.residual_in_fp32 = False, True
        blocks.append(block)
    backbone = nn.Module()
    backbone.embedding, backbone.layers, backbone.norm_f = hf_model.backbone.embeddings, blocks, hf_model.backbone.norm_f
    backbone.fused_add_norm, backbone.residual_in_fp32 = False, True
    return SimpleNamespace(backbone=backbone, lm_head=hf_model.lm_head)


def _kernels():
    from transformers.models.mamba.modeling_mamba import mamba_selective_scan

    # the scan without an initial state, as selective_scan_fn; the conv with initial_states, as causal_conv1d_fn
    return Kernels(conv=ref_conv, scan=None, add_norm=None, selective_scan=mamba_selective_scan)


@pytest.mark.parametrize("chunk", [200, 64, 2])  # 2 < d_conv - 1: a chunk shorter than the conv window
def test_mamba_ssm_mamba1_chunks_equal_transformers_one_forward(tiny_mamba, chunk):
    length = 400 if chunk > 2 else 40
    ids = _ids(length, seed=6)
    model = _as_mamba_ssm(tiny_mamba)
    with torch.inference_mode():
        whole = tiny_mamba(ids, logits_to_keep=5).logits[0]
        hidden, states = chunked_prefill(model, ids, chunk, 5, _kernels())
        one_hidden, one_states = chunked_prefill(model, ids, length, 5, _kernels())
        logits = model.lm_head(hidden[0])
    assert hidden.shape == (1, 5, 64)
    torch.testing.assert_close(logits, whole, rtol=0, atol=1e-4)
    torch.testing.assert_close(hidden, one_hidden, rtol=0, atol=1e-5)
    for (c1, s1), (c2, s2) in zip(one_states, states, strict=True):
        torch.testing.assert_close(c2, c1, rtol=0, atol=1e-5)
        torch.testing.assert_close(s2, s1, rtol=1e-5, atol=1e-5)
        assert s2.dtype == torch.float32 and c2.shape[-1] == 3


def test_mamba_ssm_mamba1_states_continue_like_the_longer_prompt(tiny_mamba):
    """States after 300 tokens, loaded into mamba-ssm's Mamba-1 decoding-cache layout (conv (b, d, d_conv),
    ssm (b, d, d_state)), carry a step of transformers' own decode to the 301-token prompt's logits."""
    from transformers import DynamicCache

    ids = _ids(301, seed=7)
    model = _as_mamba_ssm(tiny_mamba)
    with torch.inference_mode():
        whole = tiny_mamba(ids, logits_to_keep=1).logits[0, -1]
        _, states = chunked_prefill(model, ids[:, :300], 128, 1, _kernels())
        buffers = {i: (torch.full((1, 128, 4), 7.0), torch.zeros(1, 128, 8)) for i in range(len(states))}
        load_states(SimpleNamespace(key_value_memory_dict=buffers), states)
        # the same buffers as transformers' cache after a prefill, then its one-token step
        cache = DynamicCache(config=tiny_mamba.config)
        tiny_mamba(ids[:, :8], cache_params=cache, use_cache=True)  # allocates the cache's layers
        for i, (conv, ssm) in buffers.items():
            cache.layers[i].conv_states[0].copy_(conv)
            cache.layers[i].recurrent_states[0].copy_(ssm)
        step = tiny_mamba(ids[:, 300:], cache_params=cache, use_cache=True).logits[0, -1]
    assert torch.equal(buffers[0][0][0, :, 0], torch.zeros(128))  # only the last d_conv - 1 inputs are kept
    torch.testing.assert_close(step, whole, rtol=0, atol=1e-4)


def test_mamba1_chunk_is_automatic_past_the_in_proj_limit_and_explicit_chunks_are_taken():
    mamba_28b = {"d_model": 2560, "n_layer": 64, "vocab_size": 50277, "ssm_cfg": {}}
    chunk, why = layouts.resolve_prefill_chunk(mamba_28b, None)
    # 2 * 5120 = 10,240 per token: 0.9 * 2^31 / 10,240 = 188,743.7, floor to a multiple of 256
    assert chunk == 188_672 and "10240 per token" in why
    assert layouts.resolve_prefill_chunk(mamba_28b, 2000) == (2000, "engine_args")  # any cut is exact
    assert layouts.resolve_prefill_chunk(mamba_28b, 0)[0] == 0


def test_mamba_ssm_engine_reads_mamba1_in_chunks_only_past_the_chunk():
    from lcplugin.engines.mamba_ssm import MambaSSMEngine

    engine = MambaSSMEngine.__new__(MambaSSMEngine)
    engine.chunk, engine.mamba2 = 188_672, False
    assert not engine._chunked(131_072) and not engine._chunked(188_672) and engine._chunked(188_673)
    engine.mamba2 = True
    assert engine._chunked(2048)
    engine.chunk = 0
    assert not engine._chunked(10**6)


def test_hf_falcon_mamba_chunks_equal_one_forward():
    """Falcon-Mamba's mixer (RMS-normed B, C and dt) calls the same scan; a tiny random one in memory."""
    import transformers as T

    torch.manual_seed(0)
    model = T.AutoModelForCausalLM.from_config(T.FalconMambaConfig(
        hidden_size=64, state_size=8, num_hidden_layers=2, expand=2, conv_kernel=4, vocab_size=272)).eval()
    ids = _ids(300, seed=8)
    with torch.inference_mode():
        whole = model(ids).logits[0, -101:]
        chunked, _ = prefill.forward_chunks(model, ids, 90, keep_last=101)
    torch.testing.assert_close(chunked, whole, rtol=0, atol=1e-4)


@pytest.mark.parametrize("name", ["tiny-mamba", "tiny-jamba"])
@pytest.mark.parametrize("chunk", [0, 300])
def test_hf_logits_only_where_needed(name, chunk):
    """Issue 16 item 4: no tokens x vocabulary logits. Generation computes one row per forward, scoring
    the scored tail only, whether the prompt is read in one forward or in chunks."""
    from lcplugin.engines.base import EngineConfig, SamplingSettings
    from lcplugin.engines.hf import HFEngine

    folder = str(materialize(name))
    engine = HFEngine(EngineConfig(engine="hf", model=name, source=folder, tokenizer=folder, dtype="float32",
                                   engine_args={"prefill_chunk": chunk, "ignore_eos": True}))
    rows: list[int] = []
    engine.model.lm_head.register_forward_hook(lambda module, args, out: rows.append(args[0].shape[-2]))
    try:
        engine.generate([_ids(1000)[0].tolist()], SamplingSettings(max_new_tokens=3))
        generated, rows[:] = list(rows), []
        engine.loglikelihood(_ids(1000, seed=9)[0].tolist(), 100)
        assert engine.describe()["prefill_chunked_sequences"] == (2 if chunk else 0)
    finally:
        engine.close()
    assert generated and max(generated) == 1
    assert rows and max(rows) <= 101 and sum(rows) <= 101 + (4 if chunk else 0)


def test_the_scan_kernel_gets_16_byte_aligned_inputs_in_every_chunk(monkeypatch):
    """On the H200, transformers' Mamba-2.8B read in chunks of 16,384 tokens crashed mamba-ssm's selective
    scan ("CUDA error: misaligned address"): after the first chunk, transformers hands the scan the conv
    output sliced past the carried conv window (d_conv = 4 tokens in), a view 8 bytes past 16-byte alignment
    in bf16, and the kernel loads 16 bytes at a time whenever the length is a multiple of its block (2,048
    tokens for long scans). The carried scan gives the kernel aligned copies; bf16 here, as on the GPU."""
    from transformers import AutoModelForCausalLM
    from transformers.models.mamba import modeling_mamba

    model = AutoModelForCausalLM.from_pretrained(str(materialize("tiny-mamba")), dtype=torch.bfloat16).eval()
    original, seen = modeling_mamba.mamba_selective_scan, []

    def kernel(u, delta, A, B, C, D=None, z=None, **kwargs):  # mamba-ssm's view of its inputs
        seen.append([t.data_ptr() % 16 for t in (u, delta, B, C, z) if t is not None and t.stride(-1) == 1])
        return original(u, delta, A, B, C, D=D, z=z, **kwargs)

    monkeypatch.setattr(modeling_mamba, "mamba_selective_scan", kernel)
    with torch.inference_mode():
        prefill.forward_chunks(model, _ids(512), 128)
    assert len(seen) == 4 * model.config.num_hidden_layers
    assert all(offset == 0 for call in seen for offset in call), seen


def test_the_gpu_debugging_script_runs_every_pair_on_cpu(tmp_path):
    # scripts/gpu/debug_hf_mamba1_carry.py names the kernel behind check 4's failure on the H200: it must run
    # before device time is spent on it, every pair measured (on CPU both kernels are transformers' torch code)
    import json
    import os
    import subprocess
    import sys

    from .conftest import REPO

    out = tmp_path / "debug.json"
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    done = subprocess.run([sys.executable, "scripts/gpu/debug_hf_mamba1_carry.py", str(out), "--smoke"], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    pairs = json.loads(out.read_text())["pairs"]
    models = {k: v for k, v in pairs.items() if not k.startswith("mixer:")}
    assert len(models) == 7 and all(p.get("pass") for p in models.values()), models
    assert {name.split("@")[0] for name in models} == {
        "kernels", "torch:causal_conv1d_fn", "torch:mamba_selective_scan", "torch:causal_conv1d_fn+mamba_selective_scan"}
    # layer 0's mixer alone: every chunk, the carried conv window (first tokens) and the final states agree on CPU
    mixers = {k: v for k, v in pairs.items() if k.startswith("mixer:")}
    assert len(mixers) == 4 and all("error" not in v for v in mixers.values()), mixers
    for v in mixers.values():
        assert v["conv_state_equal"] and v["recurrent_state"] > 0.9999 and v["whole"] > 0.9999, v
        assert all(c["first8"] > 0.9999 for c in v["chunks"]) and v["scan_inputs"], v
