"""Where transformers' Mamba-1 chunks go wrong on the GPU (issue 16; BENCHMARKS.md, 2026-12-01, check 4).

    python scripts/gpu/debug_hf_mamba1_carry.py OUT.json            # H200, after the mamba-ssm wheels
    python scripts/gpu/debug_hf_mamba1_carry.py OUT.json --smoke    # CPU, a tiny Mamba: the code path only

On the H200 the ``hf`` engine's carried chunks of transformers' ``MambaMixer`` (Mamba-2.8B shape, 64k, chunks
of 16,384) gave logits at cosine 0.81 from one forward's, while the same code agrees on CPU and Jamba's
mixers agree on the GPU. This runs the Mamba-2.8B shape cut to a few layers, one forward against chunks,
with each of transformers' two kernels (the causal conv, the selective scan) either mamba-ssm's /
causal-conv1d's or transformers' own torch code, so the failing pair names the kernel (seconds per pair).
Each pair is its own try/except; the JSON is rewritten after each.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from check_mamba1_carry import _compare  # noqa: E402  (beside this file: the check whose case 4 this takes apart)

from lcplugin.engines import mamba1_carry, prefill  # noqa: E402
from lcplugin.models.random_models import SHAPES  # noqa: E402

KERNELS = ("causal_conv1d_fn", "mamba_selective_scan")


def _model(smoke: bool, layers: int, device: str, dtype: Any) -> Any:
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = dict(SHAPES["mamba-2.8b-hf"]["config"])
    if smoke:
        cfg.update(hidden_size=64, vocab_size=1000)
    cfg.update(num_hidden_layers=layers)
    config = AutoConfig.for_model(cfg.pop("model_type"), **cfg)
    torch.manual_seed(0)
    with torch.device(device):
        return AutoModelForCausalLM.from_config(config, dtype=dtype).eval()


def _kernels(module: Any, torch_only: set[str]) -> dict[str, Any]:
    """Point the names in ``torch_only`` at transformers' torch code (inside its kernel decorator, reached
    through ``__wrapped__``); returns the originals to put back."""
    saved = {name: getattr(module, name) for name in KERNELS}
    for name in torch_only:
        setattr(module, name, inspect.unwrap(saved[name]))
    return saved


def _cos(a: Any, b: Any) -> float:
    return torch.nn.functional.cosine_similarity(a.float().flatten(), b.float().flatten(), dim=0).item()


def _layout(t: Any) -> Any:
    return None if t is None else {"shape": list(t.shape), "stride": list(t.stride()), "dtype": str(t.dtype),
                                   "ptr_mod_16": t.data_ptr() % 16}


def mixer_level(model: Any, module: Any, n: int, chunk: int) -> dict[str, Any]:
    """Layer 0's mixer alone on random hidden states: one call against calls of ``chunk`` tokens sharing a cache,
    per chunk (its first 8 tokens apart: those read the carried conv window), and the caches' final conv and
    recurrent states; with the layouts the scan kernel received in each call."""
    from transformers import DynamicCache

    m = model.backbone.layers[0].mixer
    gen = torch.Generator().manual_seed(7)
    h = torch.randn(1, n, model.config.hidden_size, generator=gen).to(m.A_log.device, model.dtype)
    seen: list[Any] = []
    inner = module.mamba_selective_scan

    def logged(u: Any, delta: Any, A: Any, B: Any, C: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append({"u": _layout(u), "delta": _layout(delta), "B": _layout(B), "C": _layout(C),
                     "z": _layout(kwargs.get("z"))})
        return inner(u, delta, A, B, C, *args, **kwargs)

    module.mamba_selective_scan = logged
    try:
        with torch.inference_mode(), mamba1_carry.carried_scans(model):
            one_cache, got_cache = DynamicCache(config=model.config), DynamicCache(config=model.config)
            one = m(h, cache_params=one_cache)
            got = torch.cat([m(h[:, s:s + chunk], cache_params=got_cache) for s in range(0, n, chunk)], dim=1)
    finally:
        module.mamba_selective_scan = inner
    a, b = one_cache.layers[0], got_cache.layers[0]
    out: dict[str, Any] = {"tokens": n, "chunk": chunk, "whole": _cos(one, got), "chunks": []}
    for s in range(0, n, chunk):
        e = min(s + chunk, n)
        out["chunks"].append({"start": s, "all": _cos(one[:, s:e], got[:, s:e]),
                              "first8": _cos(one[:, s:s + 8], got[:, s:s + 8]),
                              "after8": _cos(one[:, s + 8:e], got[:, s + 8:e]) if e > s + 8 else None})
    out["recurrent_state"] = _cos(a.recurrent_states[0], b.recurrent_states[0])
    out["conv_state_equal"] = bool(torch.equal(a.conv_states[0], b.conv_states[0]))
    out["scan_inputs"] = seen
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--dtype", choices=("bfloat16", "float32"), default=None, help="default: bfloat16 (smoke: float32)")
    args = ap.parse_args()
    device = "cpu" if args.smoke else "cuda"
    dtype = getattr(torch, args.dtype or ("float32" if args.smoke else "bfloat16"))
    model = _model(args.smoke, args.layers, device, dtype)
    module = sys.modules[type(model.backbone.layers[0].mixer).__module__]
    result: dict[str, Any] = {"device": device, "layers": args.layers, "dtype": str(dtype), "pairs": {}}
    # the failing case first, then one change each: a chunk that is no multiple of mamba-ssm's 2,048-token
    # block (its vectorized loads), shorter prompts, either kernel replaced by transformers' torch code (the
    # torch scan is a Python loop over tokens: short prompts for it)
    pairs = [((), 65536, 16384), ((), 65536, 16000), ((), 4096, 1024), (("causal_conv1d_fn",), 65536, 16384),
             (("mamba_selective_scan",), 2048, 512), (KERNELS, 2048, 512), ((), 2048, 512)]
    logits: dict[str, tuple[int, Any, Any]] = {}
    for torch_only, n, chunk in pairs:
        if args.smoke:
            n, chunk = n // 128, chunk // 128
        name = ("torch:" + "+".join(torch_only) if torch_only else "kernels") + f"@{n}/{chunk}"
        saved = _kernels(module, set(torch_only))
        try:
            ids = torch.randint(2, model.config.vocab_size, (1, n), generator=torch.Generator().manual_seed(4))
            ids = ids.to(device)
            with torch.inference_mode():
                one = model(ids, logits_to_keep=1).logits[0, -1]
                got = prefill.forward_chunks(model, ids, chunk)[0][-1]
            result["pairs"][name] = {"tokens": n, "chunk": chunk, **_compare(one, got)}
            logits[name] = (n, one, got)
        except Exception as exc:  # noqa: BLE001 - one pair failing must not lose the others
            result["pairs"][name] = {"error": f"{type(exc).__name__}: {exc}"[:400], "traceback": traceback.format_exc()[-1500:]}
        finally:
            for key, fn in saved.items():
                setattr(module, key, fn)
        print(name, json.dumps(result["pairs"][name])[:300], flush=True)
        Path(args.out).write_text(json.dumps(result, indent=1))
    # one mixer: which piece of the carry is wrong (the conv window: the first tokens of a chunk; the state: the rest)
    for torch_only, n, chunk in [((), 65536, 16384), ((), 4096, 1024), (("causal_conv1d_fn",), 65536, 16384),
                                 (("mamba_selective_scan",), 2048, 512)]:
        if args.smoke:
            n, chunk = n // 128, chunk // 128
        name = "mixer:" + ("torch:" + "+".join(torch_only) if torch_only else "kernels") + f"@{n}/{chunk}"
        saved = _kernels(module, set(torch_only))
        try:
            result["pairs"][name] = mixer_level(model, module, n, chunk)
        except Exception as exc:  # noqa: BLE001
            result["pairs"][name] = {"error": f"{type(exc).__name__}: {exc}"[:400], "traceback": traceback.format_exc()[-1500:]}
        finally:
            for key, fn in saved.items():
                setattr(module, key, fn)
        print(name, json.dumps({k: v for k, v in result["pairs"][name].items() if k != "scan_inputs"})[:600], flush=True)
        Path(args.out).write_text(json.dumps(result, indent=1))
    # which side is wrong: each path against the one forward that uses the most of transformers' torch code at
    # the same length (the scan kernel itself is checked by the mamba_ssm engine's check)
    for name, (n, one, got) in logits.items():
        ref_name = max((k for k, v in logits.items() if v[0] == n), key=lambda k: k.count("torch:") + k.count("+"))
        if ref_name != name:
            ref = logits[ref_name][1]
            result["pairs"][name]["vs_" + ref_name] = {"one": _compare(ref, one), "chunked": _compare(ref, got)}
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(json.dumps({k: {key: v[key] for key in v if key.startswith("vs_")} for k, v in result["pairs"].items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
