"""Cross-engine check on the GPU (issue 15): the same prompts through ``vllm`` and ``hf`` in bf16.

    python scripts/gpu/check_vllm_agreement.py CKPT OUT.json [--ctx 8k,32k] [--new 32] [--text FILE]

For each context: one prompt of (context - new) tokens of real text (``--text``: a file whose
tokens are repeated as needed; default a fixed pseudo-random sequence), greedy with end-of-sequence
ignored. vLLM generates ``new`` tokens with their log-probabilities; transformers generates its own
``new`` tokens and scores vLLM's by teacher forcing (``loglikelihood`` over prompt + vLLM's tokens),
so the chosen tokens' log-probabilities are compared on the same tokens. Reported per context: how
many of the first ``new`` tokens are identical (and the first position that differs), the summed
and the per-token mean difference of the chosen tokens' log-probabilities (vLLM's minus transformers'), and the NLL of the last
100 tokens of one context-long window from each engine with their relative difference. Random
weights give near-ties that bf16 can flip, so a differing token is reported, not failed.
vLLM is loaded once at the largest context, in a child process of its own: closing vLLM does not
give its pre-allocated pool back to a process (seen on the H200: transformers then ran out of memory
beside it), while a process's exit does. Transformers is loaded once, after.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from lcplugin.config.contexts import parse_ctx_list  # noqa: E402
from lcplugin.engines.base import EngineConfig, SamplingSettings  # noqa: E402


def prompt_ids(tokenizer, text: str | None, n: int, seed: int) -> list[int]:
    if text:
        ids = tokenizer.encode(text, add_special_tokens=False)
        return (ids * (n // max(1, len(ids)) + 1))[seed:seed + n]
    import random

    rng = random.Random(seed)
    vocab = min(len(tokenizer), 30000)
    return [rng.randrange(100, vocab) for _ in range(n)]


def missing_kernels(ckpt: str) -> str | None:
    """Why the transformers half cannot run here, or None: on a GPU, a model with Mamba layers needs
    mamba-ssm's and causal-conv1d's kernels, without which transformers' reference path asked for 128 GiB
    at 8k (Codestral on the H200) or ran past the call's time (Zamba2)."""
    import importlib.util

    import torch
    from transformers import AutoConfig

    from lcplugin.engines.memory import layer_kinds

    kinds = set(layer_kinds(AutoConfig.from_pretrained(ckpt)))
    if not torch.cuda.is_available() or not kinds & {"mamba", "hybrid"}:
        return None
    absent = [m for m in ("mamba_ssm", "causal_conv1d") if importlib.util.find_spec(m) is None]
    return (f"{ckpt} has Mamba layers and {', '.join(absent)} is not installed: install the wheels first "
            "(bash scripts/gpu/reference-run.sh setup, carrying .whl)") if absent else None


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("ckpt")
    ap.add_argument("out")
    ap.add_argument("--ctx", default="8k,32k")
    ap.add_argument("--new", type=int, default=32)
    ap.add_argument("--text", default=None)
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--rope", default=None, help="JSON rope parameters for both engines (e.g. YaRN)")
    ap.add_argument("--vllm-only", default=None, help=argparse.SUPPRESS)  # the child: vLLM's half into this file
    args = ap.parse_args()
    missing = missing_kernels(args.ckpt)
    if missing:
        print(f"check_vllm_agreement: {missing}", file=sys.stderr)
        return 2
    from transformers import AutoTokenizer

    contexts = parse_ctx_list(args.ctx)
    tok = AutoTokenizer.from_pretrained(args.ckpt)
    text = Path(args.text).read_text(encoding="utf-8", errors="replace") if args.text else None
    prompts = {c: prompt_ids(tok, text, c - args.new, seed=c % 997) for c in contexts}
    windows = {c: prompt_ids(tok, text, c, seed=c % 991 + 1) for c in contexts}
    rope = json.loads(args.rope) if args.rope else None
    result: dict = {"ckpt": args.ckpt, "new_tokens": args.new, "contexts": {}}

    def config(engine: str, **extra) -> EngineConfig:
        return EngineConfig(engine=engine, model=Path(args.ckpt).name, source=args.ckpt, tokenizer=args.ckpt,
                            dtype=args.dtype, rope=rope, engine_args={"ignore_eos": True, **extra},
                            max_model_len=max(contexts) if engine == "vllm" else None)

    if args.vllm_only:  # the child process: vLLM's half, written for the parent
        from lcplugin.engines.vllm import VLLMEngine

        t0 = time.perf_counter()
        vllm = VLLMEngine(config("vllm", max_num_seqs=4))
        load_s = time.perf_counter() - t0
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        got: dict = {}
        for c in contexts:
            # ids only (detokenize=False): random weights choose ids past the tokenizer's vocabulary
            params = SamplingParams(max_tokens=args.new, temperature=0.0, logprobs=0, ignore_eos=True,
                                    detokenize=False)
            out = vllm.llm.generate([TokensPrompt(prompt_token_ids=prompts[c])], params, use_tqdm=False)[0].outputs[0]
            ids = list(out.token_ids)
            got[str(c)] = {"ids": ids, "logprobs": [out.logprobs[i][t].logprob for i, t in enumerate(ids)],
                           "nll_window": vllm.loglikelihood(windows[c], 100).nll,
                           # vLLM's prefill on its own tokens: against its decode's log-probabilities, it
                           # tells which engine a disagreement with transformers is in
                           "nll_self_prefill": vllm.loglikelihood(prompts[c] + ids, len(ids)).nll}
        hf_config = vllm.llm.llm_engine.model_config.hf_config  # the rope vLLM loaded (hf_overrides applied)
        loaded = getattr(hf_config, "rope_parameters", None) or getattr(hf_config, "rope_scaling", None)
        Path(args.vllm_only).write_text(json.dumps({"load_s": load_s, "contexts": got, "rope": loaded}, default=str))
        return 0
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        half = Path(tmp) / "vllm.json"
        child = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--vllm-only", str(half)], check=False)
        if child.returncode != 0 or not half.exists():
            print(f"vLLM's half failed (exit {child.returncode}); see its output above", file=sys.stderr)
            return 1
        done = json.loads(half.read_text())
    result["vllm_load_s"], result["vllm_rope"] = done["load_s"], done.get("rope")
    got = {int(c): v for c, v in done["contexts"].items()}
    from lcplugin.engines.hf import HFEngine

    t0 = time.perf_counter()
    hf = HFEngine(config("hf"))
    result["hf_load_s"] = time.perf_counter() - t0
    result["hf_rope"] = getattr(hf.model.config, "rope_parameters", None)  # what transformers loaded
    result["hf_model_fixes"] = hf.model_fixes  # corrections to transformers the reference ran with (fixes.py)
    for c in contexts:
        try:
            mine = hf.generate([prompts[c]], SamplingSettings(max_new_tokens=args.new))[0].output_ids
            theirs = got[c]["ids"]
            same = [a == b for a, b in zip(mine, theirs, strict=False)]
            first_diff = next((i for i, s in enumerate(same) if not s), None)
            nll_h = hf.loglikelihood(prompts[c] + theirs, len(theirs)).nll  # transformers on vLLM's tokens
            nll_v = -sum(got[c]["logprobs"])
            nll_vp = got[c].get("nll_self_prefill")
            win_h = hf.loglikelihood(windows[c], 100).nll
            win_v = got[c]["nll_window"]
            result["contexts"][str(c)] = {
                "identical_tokens": sum(same), "compared": len(same), "first_difference": first_diff,
                "chosen_logprob_sum_diff": nll_h - nll_v, "chosen_logprob_mean_diff": (nll_h - nll_v) / len(theirs),
                "nll_last100_vllm": win_v, "nll_last100_hf": win_h, "nll_rel_diff": abs(win_v - win_h) / abs(win_h),
                # vLLM's prefill minus its decode on the same tokens, per token (0: its two paths agree)
                "vllm_prefill_vs_decode_mean_diff": None if nll_vp is None else (nll_vp - nll_v) / len(theirs),
            }
        except Exception:  # noqa: BLE001 - report and go on to the next context
            result["contexts"][str(c)] = {"error": traceback.format_exc(limit=3)}
        print(json.dumps({c: result["contexts"][str(c)]}), flush=True)
    hf.close()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
