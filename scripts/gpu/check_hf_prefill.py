"""Chunked prefill of the ``hf`` engine on a GPU: speed, memory and agreement with one forward.

    python scripts/gpu/check_hf_prefill.py OUT.json [--tokens 130944]

Random-weight models built in memory (nothing written), bf16:
- Llama-3.1-8B shape: one forward (what ``prefill_chunk=0`` runs: ``model(ids, use_cache=True)``)
  against the engine's chunk loop (``lcplugin.engines.prefill.forward_chunks``) with chunks of 8k,
  16k and 32k: TTFT (after a synchronize), torch peak GB (peak reset before each), next-token logits
  agreement with one forward, and greedy tokens decoded by ``generate`` from the chunked cache.
- Nemotron-H-8B shape: one forward past ~115.7k tokens overflows mamba-ssm's SSD kernels, so only the
  automatic chunk runs at full length; agreement is checked at 65,536 tokens (one forward is safe there)
  against 16k chunks.
Each check is its own try/except: a failure is recorded in the JSON and the next check runs.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402

from lcplugin.engines import prefill  # noqa: E402
from lcplugin.models.random_models import build  # noqa: E402

GB = 1e9  # the suite reports memory in GB of 10^9 bytes


def timed(fn: Any) -> tuple[Any, float, float]:
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    with torch.inference_mode():
        out = fn()
    torch.cuda.synchronize()
    return out, time.perf_counter() - start, torch.cuda.max_memory_allocated() / GB


def one_forward(model: Any, ids: Any) -> Any:
    return model(input_ids=ids, use_cache=True, logits_to_keep=1).logits[0, -1].float()


def chunked(model: Any, ids: Any, chunk: int) -> Any:
    return prefill.forward_chunks(model, ids, chunk)[0][0]


def agreement(ref: Any, got: Any) -> dict[str, Any]:
    return {"max_abs_diff": (ref - got).abs().max().item(), "ref_abs_max": ref.abs().max().item(),
            "argmax_equal": bool(ref.argmax() == got.argmax()),
            "cosine": torch.nn.functional.cosine_similarity(ref, got, dim=0).item()}


def check(results: dict[str, Any], name: str, fn: Any) -> Any:
    print(f"== {name}", flush=True)
    try:
        value = fn()
        results[name] = value
        print(json.dumps(value, default=str), flush=True)
        return value
    except Exception as exc:  # noqa: BLE001 - every check runs, failures are recorded
        results[name] = {"error": f"{type(exc).__name__}: {exc}"[:2000], "traceback": traceback.format_exc()[-3000:]}
        print(results[name]["error"], flush=True)
        return None
    finally:
        gc.collect()
        torch.cuda.empty_cache()


def flash_gqa() -> dict[str, Any]:
    """The chunk attention's kernel: exact against masked math, and its time over a whole 131k prefill
    (one layer, 32 query / 8 key-value heads) against one causal call and the SDPA bias path."""
    from torch.nn.attention.bias import causal_lower_right

    q = torch.randn(1, 32, 1024, 128, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(1, 8, 4096, 128, device="cuda", dtype=torch.bfloat16)
    out = prefill.chunk_attention(None, q, k, k, None, scaling=128 ** -0.5)[0]
    mask = torch.ones(1024, 4096, dtype=torch.bool, device="cuda").tril(diagonal=4096 - 1024)
    ref = torch.nn.functional.scaled_dot_product_attention(
        q, k.repeat_interleave(4, 1), k.repeat_interleave(4, 1), attn_mask=mask).transpose(1, 2)
    result: dict[str, Any] = {"split_kernel_chosen": {str(k): v for k, v in prefill._CHOSEN.items()},
                              "max_abs_diff_vs_masked_math": (out - ref).abs().max().item()}
    n, chunk = 130944, 16384
    qq = torch.randn(1, 32, n, 128, device="cuda", dtype=torch.bfloat16)
    kk = torch.randn(1, 8, n, 128, device="cuda", dtype=torch.bfloat16)
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def bias_path(qc: Any, kc: Any) -> Any:
        kr = kc.repeat_interleave(4, 1)
        return sdpa(qc, kr, kr, attn_mask=causal_lower_right(qc.shape[2], kc.shape[2]))

    variants = {
        "one_causal_call": lambda: sdpa(qq, kk, kk, is_causal=True, enable_gqa=True),
        "chunks_chunk_attention": lambda: [prefill.chunk_attention(None, qq[:, :, s:s + chunk], kk[:, :, :s + chunk],
                                                                   kk[:, :, :s + chunk], None)
                                           for s in range(0, n, chunk)],
        "chunks_sdpa_bias_repeat": lambda: [bias_path(qq[:, :, s:s + chunk], kk[:, :, :s + chunk])
                                            if s else sdpa(qq[:, :, :chunk], kk[:, :, :chunk].repeat_interleave(4, 1),
                                                           kk[:, :, :chunk].repeat_interleave(4, 1), is_causal=True)
                                            for s in range(0, n, chunk)],
    }
    for name, fn in variants.items():
        with torch.inference_mode():
            fn()
            torch.cuda.synchronize()
            start = time.perf_counter()
            fn()
            torch.cuda.synchronize()
        result[f"{name}_s"] = time.perf_counter() - start
    return result


def llama(results: dict[str, Any], tokens: int) -> None:
    model = build("llama-3.1-8b")
    gen = torch.Generator(device="cuda").manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (1, tokens), device="cuda", generator=gen)
    with torch.inference_mode():  # warm-up: kernels and allocator, both paths
        one_forward(model, ids[:, :2048])
        chunked(model, ids[:, :2048], 1024)
    ref = {}

    def whole() -> dict[str, Any]:
        logits, ttft, peak = timed(lambda: one_forward(model, ids))
        ref["logits"] = logits
        return {"tokens": tokens, "ttft_s": ttft, "torch_peak_gb": peak, "prefill_tok_s": tokens / ttft}

    check(results, "llama-3.1-8b/one_forward", whole)
    for chunk in (8192, 16384, 32768):
        def run(chunk: int = chunk) -> dict[str, Any]:
            logits, ttft, peak = timed(lambda: chunked(model, ids, chunk))
            row = {"tokens": tokens, "chunk": chunk, "ttft_s": ttft, "torch_peak_gb": peak,
                   "prefill_tok_s": tokens / ttft}
            if "logits" in ref:
                row.update(agreement(ref["logits"], logits))
            return row

        check(results, f"llama-3.1-8b/chunk_{chunk}", run)

    def decode() -> dict[str, Any]:
        # what the engine does: all but the last token chunked, generate feeds the rest
        with torch.inference_mode():
            _, cache = prefill.forward_chunks(model, ids[:, :-1], prefill.ATTENTION_CHUNK)
            mask = torch.ones_like(ids)
            a = model.generate(input_ids=ids, attention_mask=mask, past_key_values=cache, max_new_tokens=8,
                               do_sample=False)[0, tokens:].tolist()
            del cache
            gc.collect()
            torch.cuda.empty_cache()
            b = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=8, do_sample=False)[0, tokens:]
        return {"chunked_then_generate": a, "generate": b.tolist(), "equal": a == b.tolist()}

    check(results, "llama-3.1-8b/greedy_8_tokens", decode)  # the model is freed when this returns


def nemotron(results: dict[str, Any], tokens: int) -> None:
    model = build("nemotron-h-8b")
    chunk, why = prefill.choose_chunk(model.config, "cuda", None)
    results["nemotron-h-8b/automatic_chunk"] = {"chunk": chunk, "why": why}
    gen = torch.Generator(device="cuda").manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (1, tokens), device="cuda", generator=gen)
    with torch.inference_mode():
        one_forward(model, ids[:, :2048])
        chunked(model, ids[:, :2048], 1024)

    def auto() -> dict[str, Any]:
        _, ttft, peak = timed(lambda: chunked(model, ids, chunk))
        return {"tokens": tokens, "chunk": chunk, "ttft_s": ttft, "torch_peak_gb": peak,
                "prefill_tok_s": tokens / ttft}

    check(results, "nemotron-h-8b/automatic_chunk_run", auto)
    results["nemotron-h-8b/one_forward"] = {"skipped": f"{tokens} tokens is past the SSD kernels' int32 limit "
                                            f"(~{2 ** 31 // prefill._ssd_width(model.config)} tokens): it crashes"}
    short = ids[:, :65536]

    def agree() -> dict[str, Any]:
        ref, t1, p1 = timed(lambda: one_forward(model, short))
        got, t2, p2 = timed(lambda: chunked(model, short, 16384))
        return {"tokens": 65536, "one_forward_ttft_s": t1, "one_forward_peak_gb": p1, "chunk_16384_ttft_s": t2,
                "chunk_16384_peak_gb": p2, **agreement(ref, got)}

    check(results, "nemotron-h-8b/agreement_64k", agree)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--tokens", type=int, default=130_944)
    parser.add_argument("--only", choices=["llama", "nemotron"], default=None)
    args = parser.parse_args()
    import transformers

    results: dict[str, Any] = {"versions": {"torch": torch.__version__, "transformers": transformers.__version__},
                               "device": torch.cuda.get_device_name(), "attention_chunk": prefill.ATTENTION_CHUNK}
    started = time.perf_counter()
    check(results, "flash_gqa_lower_right", flash_gqa)
    for name, fn in (("llama", llama), ("nemotron", nemotron)):
        if args.only in (None, name):
            try:
                fn(results, args.tokens)
            except Exception as exc:  # noqa: BLE001 - building a model failed: record, go on
                results[f"{name}/error"] = f"{type(exc).__name__}: {exc}"[:2000]
                print(results[f"{name}/error"], flush=True)
            gc.collect()
            torch.cuda.empty_cache()
    results["wall_s"] = time.perf_counter() - started
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=str))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
