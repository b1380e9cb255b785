"""Raw-engine timing of the suite's own prompts, to measure the suite's overhead as a ratio.

Loads each reference model directly (no worker process, no pytest, no lcplugin engine class), runs
the same prompts the suite ran (rebuilt with the same builder from the same data), and times with
CUDA events (on CPU: the wall clock): prefill = one forward pass over the prompt; decode = a full
greedy generation of ``new_tokens`` minus that prefill. Writes one JSON object per (model, ctx).
Given the suite's ``summary.json`` of the same run (``--suite``), each row gains the ratios
suite / raw for prefill and decode tokens/s: the suite's overhead, measured side by side.

    python benches/reference/raw_timing.py --data lb2.jsonl.xz --ctx 8k,32k,128k --limit 2 --out raw.json \
        --suite results/<run>/summary.json
"""

from __future__ import annotations

import argparse
import json
import time
import tomllib
from pathlib import Path

import torch

from lcplugin.benchmarks.longbench_v2 import TEMPLATE_0SHOT, fill, load_file
from lcplugin.benchmarks.truncation import PromptBuilder
from lcplugin.config.contexts import parse_ctx_list

SPECS = Path(__file__).parent / "specs"
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _event_time(fn) -> float:
    if DEVICE == "cpu":
        start_s = time.perf_counter()
        fn()
        return time.perf_counter() - start_s
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / 1000.0


def _source(spec: dict) -> str:
    if spec["source"].startswith("builtin:"):
        from lcplugin.models.tiny import materialize

        return str(materialize(spec["source"].removeprefix("builtin:")))
    return spec["source"]


def run_model(spec: dict, items: list, contexts: list[int], new_tokens: int) -> list[dict]:
    from transformers import AutoTokenizer

    source = _source(spec)
    tok = AutoTokenizer.from_pretrained(source)
    dtype = getattr(torch, spec.get("dtype", "bfloat16"))
    if spec["engine"] == "mamba_ssm":
        from mamba_ssm.models.mixer_seq_simple import MambaLMHeadModel
        from mamba_ssm.utils.generation import update_graph_cache

        model = MambaLMHeadModel.from_pretrained(source, device="cuda", dtype=dtype).eval()

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

        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype,
                                                     attn_implementation="sdpa").to(DEVICE).eval()

        def prefill(ids):
            return model(input_ids=ids, logits_to_keep=1)

        def generate(ids):
            return model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                                  min_new_tokens=new_tokens, do_sample=False, eos_token_id=None,
                                  pad_token_id=0, top_p=None, top_k=None, temperature=None)

        def warm(max_len):
            generate(torch.zeros((1, 64), dtype=torch.long, device=DEVICE))

    chat = "off" if spec.get("chat_template") == "off" else "auto"
    rows = []
    for ctx in contexts:
        builder = PromptBuilder(tok, ctx, new_tokens, chat)
        prompts = [builder.build(fill(TEMPLATE_0SHOT, it.fields)).ids for it in items]
        warm(max(len(p) for p in prompts) + new_tokens)
        pre_t = dec_t = 0.0
        tokens = 0
        for p in prompts:
            ids = torch.tensor([list(p)], dtype=torch.long, device=DEVICE)
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


def join_suite(rows: list[dict], summary: dict) -> list[dict]:
    """Add suite/raw ratios to each raw row from the suite's summary of the same prompts."""
    suite = {(t["model"], t["ctx"]): t for t in summary["tests"] if t.get("benchmark") == "longbench_v2"}
    for row in rows:
        test = suite.get((row.get("model"), row.get("ctx")))
        if test is None:
            continue
        if test.get("n") != row["items"]:
            row["suite_mismatch"] = f"suite ran {test.get('n')} items, raw {row['items']}: not the same prompts"
        for figure in ("prefill_tok_s", "decode_tok_s"):
            if test.get(figure) and row.get(figure):
                row[f"suite_{figure}"] = test[figure]
                row[f"suite_over_raw_{figure.removesuffix('_tok_s')}"] = test[figure] / row[figure]
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--ctx", default="8k,32k,128k")
    ap.add_argument("--limit", type=int, default=2)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--models", default="")
    ap.add_argument("--specs", type=Path, default=SPECS, help="folder of spec TOML files")
    ap.add_argument("--suite", type=Path, help="the suite's summary.json of the same prompts: adds ratios")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    if args.suite and not args.suite.is_file():  # before the timing, not after it
        ap.error(f"--suite {args.suite}: no such summary.json")
    items = load_file(Path(args.data), args.limit)
    wanted = {m for m in args.models.split(",") if m}
    rows = []
    for path in sorted(args.specs.glob("*.toml")):
        spec = tomllib.loads(path.read_text())
        local = spec["source"].startswith("builtin:") or Path(spec["source"]).exists()
        if (wanted and spec["name"] not in wanted) or not local:
            continue
        try:
            rows += run_model(spec, items, parse_ctx_list(args.ctx), args.new_tokens)
        except Exception as exc:  # noqa: BLE001 - record a crash (e.g. an illegal memory access) and go on
            rows.append({"model": spec["name"], "error": f"{type(exc).__name__}: {exc}"[:500]})
            print(json.dumps(rows[-1]), flush=True)
            break  # a CUDA error poisons this process's context
    if args.suite:
        rows = join_suite(rows, json.loads(args.suite.read_text()))
        for row in rows:
            print({k: round(v, 3) for k, v in row.items() if k.startswith("suite_over_raw")}, row.get("ctx"))
    Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
