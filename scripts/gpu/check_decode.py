"""Decode speed of the hf engine against transformers' own compiled static-cache loop (issue 12).

    python scripts/gpu/check_decode.py OUT.json [--parts a,b,c,d,e,f] [--ctx 8k,128k] [--budget-s 280]
    python scripts/gpu/check_decode.py OUT.json --smoke      # CPU, a tiny Llama shape: the code path only

A random-weight Llama-3.1-8B shape (lcplugin.models.random_models.SHAPES, bf16, built on the GPU; speed and
memory only) decodes 128 new tokens (fixed: no end-of-sequence stop) after prompts of random ids that
fill each context less the generation budget, as the suite's prompts do:

  a. raw: ``generate(cache_implementation="static")`` with transformers' automatic compile, after a
     warm-up generate of the same shape;
  b. the lcplugin hf engine (cache=static, compile=true) loading the same weights saved once to /tmp,
     and the ratio b/a (target >= 0.95);
  c. raw ``generate`` with the dynamic cache, for comparison;
  d. the engine batched at the first context with batch sizes 4, 8, 16: aggregate decode tokens/s
     (target >= 1000 at 8k);
  e. issue 18, side by side on the engine of b, each context: decode_attention 'transformers' (KV heads
     repeated) or 'gqa', times decode_loop 'generate' or 'engine' (batch 1; each variant warmed up first);
  f. issue 18, the decode attention alone (one query token, the model's heads, a static cache's rows and
     length mask): transformers' sdpa path against the engine's GQA-native one, ms per call.

Decode tokens/s = (new tokens - 1) / (time after the first token), after a synchronize. Each part is
in its own try/except and the JSON is rewritten after each, so a failure or the time budget
(``--budget-s``, default 200; parts left are marked skipped; ``--parts`` runs a few) still leaves every figure measured so far.
"""

from __future__ import annotations

import argparse
import gc
import json
import shutil
import sys
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from lcplugin.config.contexts import parse_ctx  # noqa: E402

NEW_TOKENS = 128
SMOKE_CONFIG = dict(model_type="llama", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, vocab_size=1000, max_position_embeddings=4096,
                    bos_token_id=0, eos_token_id=1)


def _peak_gb() -> float | None:
    import torch

    return torch.cuda.max_memory_allocated() / 1e9 if torch.cuda.is_available() else None


def _reset_peak() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _raw_decode(model: Any, prompt: Any, new: int, **kwargs: Any) -> float:
    """One generate; decode tokens/s after its first token (the engine's own first-token clock)."""
    import torch

    from lcplugin.engines import telemetry
    from lcplugin.engines.hf import _FirstTokenClock

    clock = _FirstTokenClock()
    telemetry.synchronize()
    with torch.inference_mode():
        out = model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new,
                             min_new_tokens=new, do_sample=False, eos_token_id=None, pad_token_id=0,
                             logits_processor=[clock], **kwargs)
    telemetry.synchronize()
    end = time.perf_counter()
    generated = out.shape[1] - prompt.shape[1]
    return (generated - 1) / (end - clock.first_token_at)


def _attention_alone(config: Any, context: int, device: str, calls: int = 100) -> dict[str, Any]:
    """ms per decode-attention call, transformers' sdpa path (mask, so KV heads repeated) against the engine's."""
    import types

    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from lcplugin.engines.decode import gqa_decode_attention
    from lcplugin.engines.prefill import static_length

    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    rows = static_length(context)
    gen = torch.Generator(device=device).manual_seed(0)
    q = torch.randn((1, heads, 1, dim), device=device, dtype=torch.bfloat16, generator=gen)
    k, v = (torch.randn((1, kv_heads, rows, dim), device=device, dtype=torch.bfloat16, generator=gen) for _ in "kv")
    mask = (torch.arange(rows, device=device) < context)[None, None, None, :]
    module = types.SimpleNamespace(num_key_value_groups=heads // kv_heads, is_causal=True)
    result: dict[str, Any] = {"kv_rows": rows, "kv_heads": kv_heads, "heads": heads}
    outs = {}
    for name, fn in (("transformers_ms", sdpa_attention_forward), ("gqa_ms", gqa_decode_attention)):
        with torch.inference_mode():
            for _ in range(5):
                outs[name] = fn(module, q, k, v, mask, scaling=dim ** -0.5)[0]
            telemetry_sync()
            start = time.perf_counter()
            for _ in range(calls):
                fn(module, q, k, v, mask, scaling=dim ** -0.5)
            telemetry_sync()
        result[name] = (time.perf_counter() - start) * 1000 / calls
    result["ratio"] = result["transformers_ms"] / result["gqa_ms"]
    result["max_abs_diff"] = (outs["transformers_ms"].float() - outs["gqa_ms"].float()).abs().max().item()
    return result


def telemetry_sync() -> None:
    """torch.cuda.synchronize where there is CUDA (the engine's own helper), so a timing holds its kernels."""
    from lcplugin.engines import telemetry

    telemetry.synchronize()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out")
    ap.add_argument("--smoke", action="store_true", help="CPU, tiny Llama shape, short prompts: the code path only")
    ap.add_argument("--parts", default="a,b,c,d,e,f")
    ap.add_argument("--ctx", default=None, help="contexts (default 8k,128k; smoke 256,512)")
    ap.add_argument("--batch-sizes", default=None, help="part d (default 4,8,16; smoke 2,3)")
    ap.add_argument("--budget-s", type=float, default=200.0, help="parts not started by then are skipped (reference-run.sh setup allows 280 s)")
    ap.add_argument("--ckpt", default="/tmp/lc-check-decode")
    args = ap.parse_args()

    import torch
    import transformers
    from transformers import AutoConfig, AutoModelForCausalLM

    from lcplugin.engines.base import EngineConfig, SamplingSettings
    from lcplugin.engines.hf import HFEngine
    from lcplugin.models.random_models import SHAPES
    from lcplugin.models.tiny import build_tokenizer

    t0 = time.perf_counter()
    device = "cpu" if args.smoke else "cuda"
    new = 8 if args.smoke else NEW_TOKENS
    contexts = [parse_ctx(c) for c in (args.ctx or ("256,512" if args.smoke else "8k,128k")).split(",")]
    batch_sizes = [int(b) for b in (args.batch_sizes or ("2,3" if args.smoke else "4,8,16")).split(",")]
    parts = set(args.parts.split(","))
    compile_on = not args.smoke  # compiling on a CPU only slows a smoke check
    result: dict[str, Any] = {
        "shape": "smoke-llama" if args.smoke else "llama-3.1-8b", "device": device, "new_tokens": new,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None, "parts": {}}
    out = Path(args.out)

    def write() -> None:
        result["elapsed_s"] = round(time.perf_counter() - t0, 1)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1))

    def part(name: str, fn: Any) -> None:
        if name[0] not in parts:
            return
        if time.perf_counter() - t0 > args.budget_s:
            result["parts"][name] = {"skipped": f"time budget of {args.budget_s:.0f} s spent"}
        else:
            started = time.perf_counter()
            try:
                _reset_peak()
                result["parts"][name] = {**fn(), "peak_mem_gb": _peak_gb(),
                                         "seconds": round(time.perf_counter() - started, 1)}
            except Exception as exc:  # noqa: BLE001 - one part failing must not lose the others
                result["parts"][name] = {"error": f"{type(exc).__name__}: {exc}"[:500],
                                         "traceback": traceback.format_exc()[-2000:]}
        print(name, json.dumps(result["parts"][name])[:300], flush=True)
        write()

    cfg = dict(SMOKE_CONFIG if args.smoke else SHAPES["llama-3.1-8b"]["config"])
    config = AutoConfig.for_model(cfg.pop("model_type"), **cfg)
    torch.manual_seed(0)
    with torch.device(device):  # held in a dict so that clearing it frees the weights before the engine loads
        held = {"model": AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16).eval()}
    gen = torch.Generator().manual_seed(1)
    prompts = {c: torch.randint(2, config.vocab_size, (1, c - new), generator=gen).to(device) for c in contexts}
    ckpt = Path(args.ckpt)
    if {"b", "d", "e"} & parts:
        shutil.rmtree(ckpt, ignore_errors=True)
        held["model"].save_pretrained(ckpt)
        build_tokenizer().save_pretrained(ckpt)  # byte-level: the engine only decodes ids to text with it
    result["setup_s"] = round(time.perf_counter() - t0, 1)

    raw_static = {"cache_implementation": "static"}
    if not compile_on:
        raw_static["disable_compile"] = True
    for c in contexts:
        def raw(c: int = c) -> dict[str, Any]:
            warm = time.perf_counter()
            _raw_decode(held["model"], prompts[c], new, **raw_static)  # compile and graph recording
            warm = time.perf_counter() - warm
            return {"decode_tok_s": _raw_decode(held["model"], prompts[c], new, **raw_static),
                    "warmup_s": round(warm, 1), "compiled": hasattr(held["model"], "_compiled_call")}
        part(f"a_raw_static_{c}", raw)
    for c in contexts:
        part(f"c_raw_dynamic_{c}",
             lambda c=c: {"decode_tok_s": _raw_decode(held["model"], prompts[c], new, disable_compile=True)})
    for c in contexts:
        part(f"f_attention_alone_{c}", lambda c=c: _attention_alone(config, c, device))
    held.clear()
    _reset_peak()

    if {"b", "d", "e"} & parts:
        # part e traces the step once per attention and loop, on top of b's and d's shapes: past dynamo's
        # default limit (8) the step would run uncompiled and time the wrong thing
        for name in ("recompile_limit", "cache_size_limit"):
            if hasattr(torch._dynamo.config, name):
                setattr(torch._dynamo.config, name, 64)
        engine = HFEngine(EngineConfig(
            engine="hf", model="check-decode", source=str(ckpt), tokenizer=str(ckpt), dtype="bfloat16",
            engine_args={"cache": "static", "compile": compile_on, "ignore_eos": True,
                         "max_batch_size": max(batch_sizes), "max_batch_tokens": max(batch_sizes) * contexts[0]}))
        sampling = SamplingSettings(max_new_tokens=new)

        def engine_decode(batch: list[list[int]]) -> dict[str, Any]:
            engine.generate(batch, sampling)  # first use of this cache size: warm-up (outside its timings)
            done = engine.generate(batch, sampling)
            rate = sum(x.output_tokens - 1 for x in done) / done[0].decode_s
            return {"decode_tok_s": rate, "batch": len(batch), "settings": engine.describe()}

        for c in contexts:
            part(f"b_engine_static_{c}", lambda c=c: engine_decode([prompts[c][0].tolist()]))
            a, b = (result["parts"].get(f"{k}_{c}", {}).get("decode_tok_s") for k in ("a_raw_static", "b_engine_static"))
            if a and b:
                result["parts"][f"b_engine_static_{c}"]["ratio_to_raw"] = b / a
                write()
        for size in batch_sizes:
            part(f"d_engine_batch{size}_{contexts[0]}",
                 lambda size=size: engine_decode([prompts[contexts[0]][0].tolist()] * size))
        # the candidate default first, then one change at a time: a budget that runs out leaves the figures that decide
        for attn, loop in (("gqa", "engine"), ("gqa", "generate"), ("transformers", "generate"), ("transformers", "engine")):
            for c in contexts:
                def variant(c: int = c, attn: str = attn, loop: str = loop) -> dict[str, Any]:
                    engine.decode_attention, engine.decode_loop = attn, loop
                    return engine_decode([prompts[c][0].tolist()])
                part(f"e_{attn}_{loop}_{c}", variant)
        engine.close()
    if not args.smoke:
        shutil.rmtree(ckpt, ignore_errors=True)
    write()
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
