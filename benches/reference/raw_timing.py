"""Raw-engine timing of the suite's own prompts, to measure the suite's overhead as a ratio.

Loads each reference model directly (no worker process, no pytest, no lcplugin engine class), runs
the same prompts the suite ran (rebuilt with the same builder from the same data), and times with
CUDA events: prefill = one forward pass over the prompt; decode = a full greedy generation of
``new_tokens`` minus that prefill. Writes one JSON object per (model, ctx).

    python benches/reference/raw_timing.py --data lb2.jsonl.xz --ctx 8k,32k,128k --limit 2 --out raw.json
"""

from __future__ import annotations

import argparse
import json
import tomllib
from pathlib import Path

import torch

from lcplugin.benchmarks.longbench_v2 import TEMPLATE_0SHOT, fill, load_file
from lcplugin.contexts import parse_ctx_list
from lcplugin.truncation import PromptBuilder

SPECS = Path(__file__).parent / "specs"


def _event_time(fn) -> float:
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / 1000.0


def run_model(spec: dict, items: list, contexts: list[int], new_tokens: int) -> list[dict]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(spec["source"])
    if spec["engine"] == "mamba_ssm":
        from mamba_ssm.models.mixer_seq_simple import MambaLMHeadModel
        from mamba_ssm.utils.generation import update_graph_cache

        model = MambaLMHeadModel.from_pretrained(spec["source"], device="cuda", dtype=torch.bfloat16).eval()

        def prefill(ids):
            return model(ids, num_last_tokens=1)

        def generate(ids):
            return model.generate(input_ids=ids, max_length=ids.shape[1] + new_tokens, cg=True, top_k=1)

        def warm(max_len):
            with torch.inference_mode():
                model(torch.zeros((1, 2048), dtype=torch.long, device="cuda"), num_last_tokens=1)
            model._decoding_cache = update_graph_cache(model, getattr(model, "_decoding_cache", None), 1, 8, max_len)
    else:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(spec["source"], dtype=torch.bfloat16,
                                                     attn_implementation="sdpa").to("cuda").eval()

        def prefill(ids):
            return model(input_ids=ids, logits_to_keep=1)

        def generate(ids):
            return model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                                  min_new_tokens=new_tokens, do_sample=False, eos_token_id=None,
                                  pad_token_id=0, top_p=None, top_k=None, temperature=None)

        def warm(max_len):
            generate(torch.zeros((1, 64), dtype=torch.long, device="cuda"))

    chat = "off" if spec.get("chat_template") == "off" else "auto"
    rows = []
    for ctx in contexts:
        builder = PromptBuilder(tok, ctx, new_tokens, chat)
        prompts = [builder.build(fill(TEMPLATE_0SHOT, it.fields)).ids for it in items]
        warm(max(len(p) for p in prompts) + new_tokens)
        pre_t = dec_t = 0.0
        tokens = 0
        for p in prompts:
            ids = torch.tensor([list(p)], dtype=torch.long, device="cuda")
            with torch.inference_mode():
                t_pre = _event_time(lambda ids=ids: prefill(ids))
                t_all = _event_time(lambda ids=ids: generate(ids))
            pre_t += t_pre
            dec_t += t_all - t_pre
            tokens += len(p)
        rows.append({"model": spec["name"], "ctx": ctx, "items": len(prompts), "prefill_tok_s": tokens / pre_t,
                     "decode_tok_s": len(prompts) * (new_tokens - 1) / dec_t, "ttft_s": pre_t / len(prompts)})
        print(json.dumps(rows[-1]), flush=True)
    return rows  # the model is freed with this frame


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--ctx", default="8k,32k,128k")
    ap.add_argument("--limit", type=int, default=2)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--models", default="")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    items = load_file(Path(args.data), args.limit)
    wanted = {m for m in args.models.split(",") if m}
    rows = []
    for path in sorted(SPECS.glob("*.toml")):
        spec = tomllib.loads(path.read_text())
        if (wanted and spec["name"] not in wanted) or not Path(spec["source"]).exists():
            continue
        try:
            rows += run_model(spec, items, parse_ctx_list(args.ctx), args.new_tokens)
        except Exception as exc:  # noqa: BLE001 - record a crash (e.g. an illegal memory access) and go on
            rows.append({"model": spec["name"], "error": f"{type(exc).__name__}: {exc}"[:500]})
            print(json.dumps(rows[-1]), flush=True)
            break  # a CUDA error poisons this process's context
    Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
