"""``python -m lcplugin``: rescore outputs, show the prompt a model receives, count data, time prompt
preparation. Every user error ends with one line on stderr and exit code 2, never a traceback."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from ..errors import LcError


def _tokenizer(name: str) -> Any:
    from transformers import AutoTokenizer

    from ..models.hub import hub_status, is_local

    if not is_local(name):
        hub_status()  # switches to offline mode at once when the hub is unreachable
    try:
        return AutoTokenizer.from_pretrained(name)
    except OSError as exc:
        raise LcError(f"--tokenizer {name!r} cannot be loaded ({str(exc).splitlines()[0]}); pass a local folder "
                      "or a hub id that is cached") from None


def cmd_rescore(args: argparse.Namespace) -> int:
    from ..benchmarks.rescore import format_table, rescore_file

    if args.benchmark != "longbench_v2":
        raise LcError(f"rescore: --benchmark {args.benchmark!r} is not supported; use longbench_v2")
    results = [rescore_file(Path(f)) for f in args.files]
    if args.json:
        for r in results:
            print(json.dumps(r))
    else:
        print(format_table(results))
    return 0


def _find_item(args: argparse.Namespace, bench: Any, ctx: int) -> Any:
    from ..benchmarks.base import DataSource

    source = DataSource(kind="file", location=str(Path(args.data)))
    reason = bench.skip_reason(source, ctx)
    if reason:
        raise LcError(reason)
    for item in bench.load_items(source, ctx, None):
        if item.id == args.id:
            return item
    raise LcError(f"prompt: no item with id {args.id!r} in {args.data}")


def cmd_prompt(args: argparse.Namespace) -> int:
    from ..benchmarks.base import BenchOptions, get_benchmark
    from ..benchmarks.truncation import PromptBuilder
    from ..config.contexts import parse_ctx

    ctx = parse_ctx(args.ctx)
    bench = get_benchmark(args.benchmark, BenchOptions(mode=args.mode, budget=args.budget))
    if not hasattr(bench, "prompt_text"):
        raise LcError(f"prompt: {args.benchmark} sends no text prompt")
    item = _find_item(args, bench, ctx)
    tokenizer = _tokenizer(args.tokenizer)
    budget = bench.context_window(ctx, args.window or ctx)  # the same rule as a test's
    builder = PromptBuilder(tokenizer, budget, args.max_new_tokens or bench.sampling(False).max_new_tokens, args.chat,
                            max_len=bench.max_len(ctx))
    built = builder.build(bench.prompt_text(item), want_text=True)
    if args.ids:
        print(json.dumps(list(built.ids)))
    else:
        sys.stdout.write(built.text or "")
        sys.stdout.flush()
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    from ..benchmarks.longbench_v2 import load_file

    items = load_file(Path(args.data), need_context=False)
    out = {"n": len(items),
           "difficulty": dict(Counter(i.meta["difficulty"] for i in items)),
           "length": dict(Counter(i.meta["length"] for i in items)),
           "answer": dict(sorted(Counter(i.gold for i in items).items()))}
    print(json.dumps(out))
    return 0


def cmd_prep_bench(args: argparse.Namespace) -> int:
    """Time prompt preparation against one plain tokenization pass (the acceptance figure)."""
    import tempfile

    from ..benchmarks import truncation
    from ..benchmarks.longbench_v2 import TEMPLATE_0SHOT, fill, load_file
    from ..benchmarks.token_cache import TokenCache
    from ..config.contexts import parse_ctx_list

    items = load_file(Path(args.data), args.limit)
    tok = _tokenizer(args.tokenizer)
    texts = [(it.id, fill(TEMPLATE_0SHOT, it.fields)) for it in items]
    contexts = parse_ctx_list(args.ctx)
    t0 = time.perf_counter()
    for _, text in texts:
        tok.encode(text)
    one_pass = time.perf_counter() - t0

    def prepare(cache_dir: Path) -> float:
        truncation.forget_splice_checks()
        start = time.perf_counter()
        cache = TokenCache(cache_dir, tok, lambda t: tok.encode(t, add_special_tokens=False))
        ids = cache.content_ids("prep-bench", texts)
        for ctx in contexts:
            builder = truncation.PromptBuilder(tok, ctx, 128, "auto")
            for item_id, text in texts:
                builder.build(text, ids[item_id])
        return time.perf_counter() - start

    with tempfile.TemporaryDirectory() as tmp:
        cold = prepare(Path(tmp))
        warm = prepare(Path(tmp))
    result = {"items": len(texts), "contexts": [c // 1024 for c in contexts], "one_pass_s": round(one_pass, 2),
              "cold_s": round(cold, 2), "warm_s": round(warm, 2), "cold_ratio": round(cold / one_pass, 3),
              "warm_ratio": round(warm / one_pass, 3)}
    print(json.dumps(result))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from ..results.report import write_report

    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise LcError("report needs matplotlib: pip install 'lcplugin[plots]'") from None
    paths = write_report([Path(d) for d in args.runs], Path(args.out))
    print(f"wrote {len(paths)} files to {args.out}: " + ", ".join(p.name for p in paths))
    return 0


def cmd_gate_sim(args: argparse.Namespace) -> int:
    from ..results.gatesim import run

    print(json.dumps(run(Path(args.run_a), Path(args.run_b), args.reps, args.alpha), indent=1))
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    from ..results.runfolder import RunFolder

    summary = RunFolder.join([Path(r) for r in args.runs], Path(args.out))
    print(f"merged {len(args.runs)} runs, {len(summary.tests)} tests, into {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lcplugin", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("rescore", help="re-score LongBench-v2 outputs with the official extractor")
    p.add_argument("files", nargs="+")
    p.add_argument("--benchmark", default="longbench_v2")
    p.add_argument("--json", action="store_true", help="one JSON object per file")
    p.set_defaults(func=cmd_rescore)
    p = sub.add_parser("prompt", help="print exactly what the model receives for one item")
    p.add_argument("benchmark")
    p.add_argument("--data", required=True, help="data file (LongBench-v2) or folder (Ada-LEval)")
    p.add_argument("--id", required=True)
    p.add_argument("--ctx", required=True, help="context length, e.g. 8k")
    p.add_argument("--tokenizer", required=True, help="tokenizer folder or hub id")
    p.add_argument("--ids", action="store_true", help="print the token ids instead of the text")
    p.add_argument("--mode", default="0shot", choices=("0shot", "cot", "nocontext"))
    p.add_argument("--chat", default="auto", choices=("auto", "on", "off"))
    p.add_argument("--budget", default="context", choices=("context", "official"),
                   help="LongBench-v2 max_len: the context's arithmetic (default) or official (120,000 at 128k, scaled)")
    p.add_argument("--max-new-tokens", type=int, default=None)
    p.add_argument("--window", type=int, default=None, help="model window for Ada-LEval (default: --ctx)")
    p.set_defaults(func=cmd_prompt)
    p = sub.add_parser("stats", help="count LongBench-v2 items by the dataset's own labels")
    p.add_argument("data")
    p.set_defaults(func=cmd_stats)
    p = sub.add_parser("prep-bench", help="time prompt preparation against one tokenization pass")
    p.add_argument("--data", required=True)
    p.add_argument("--tokenizer", required=True)
    p.add_argument("--ctx", default="8k,16k,32k,64k,128k")
    p.add_argument("--limit", type=int, default=None)
    p.set_defaults(func=cmd_prep_bench)
    p = sub.add_parser("gate-sim", help="false-alarm rate and detectable drop of the gates, by simulation")
    p.add_argument("run_a", help="one real run's outputs (LongBench-v2 format)")
    p.add_argument("run_b", help="another run of the same model, for per-item noise")
    p.add_argument("--reps", type=int, default=2000)
    p.add_argument("--alpha", type=float, default=0.05)
    p.set_defaults(func=cmd_gate_sim)
    p = sub.add_parser("merge", help="join run folders made in shards (one model each) into one run")
    p.add_argument("runs", nargs="+")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_merge)
    p = sub.add_parser("report", help="plots and report.md of figures versus context length")
    p.add_argument("runs", nargs="+", help="run folders (results/<run-id>)")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except LcError as exc:
        print(f"lcplugin {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"lcplugin {args.command}: interrupted", file=sys.stderr)
        return 130
