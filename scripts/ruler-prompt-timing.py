"""Time RULER prompt generation at a token count (default 1,048,576) with a real tokenizer.

For each task: the first two samples prepare what the tokenizer keeps (each haystack unit's ids) and are
checked against tokenizing their whole text (ruler._CALIBRATE); they are timed apart ("prepare_s").
The next samples are the per-sample cost. Every
prompt's length is counted exactly and checked to fit the budget (context less the task's generation).

    python scripts/ruler-prompt-timing.py [--tokenizer DIR] [--tokens N] [--samples K] [--tasks a,b]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lcplugin.benchmarks import ruler, ruler_tasks  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokenizer", default=str(REPO.parent / "shared/data/tokenizers/llama3.1"))
    parser.add_argument("--tokens", type=int, default=1 << 20)
    parser.add_argument("--samples", type=int, default=3, help="timed samples per task, after the first")
    parser.add_argument("--tasks", default=",".join(ruler_tasks.TASKS))
    parser.add_argument("--haystack", default=str(ruler.SHARED_TEXTS), help="essay text (RULER's --lc-data ruler_haystack)")
    args = parser.parse_args()
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(args.tokenizer)
    tok.model_max_length = 1 << 30  # no warning about long sequences: nothing here runs a model
    started = time.perf_counter()
    hay = ruler.essay(args.haystack)
    maker = ruler.PromptMaker(tok)
    print(f"tokenizer {args.tokenizer}, {args.tokens:,} tokens; essay read in {time.perf_counter() - started:.1f} s")
    print(f"{'task':18} {'prepare_s':>9} {'per_sample_s':>13} {'max_s':>7} {'tokens':>10} {'budget':>10} path")
    for task in args.tasks.split(","):
        budget = args.tokens - ruler_tasks.NEW_TOKENS[task]
        t0 = time.perf_counter()
        lengths = [len(ruler.build(tok, task, args.tokens, i, hay=hay, maker=maker)[0]) for i in range(2)]
        first_s = time.perf_counter() - t0
        times = []
        for index in range(2, args.samples + 2):
            t0 = time.perf_counter()
            ids, _, _, path = ruler.build(tok, task, args.tokens, index, hay=hay, maker=maker)
            times.append(time.perf_counter() - t0)
            lengths.append(len(ids))
        assert max(lengths) <= budget, (task, lengths, budget)
        print(f"{task:18} {first_s:9.2f} {sum(times) / len(times):13.2f} {max(times):7.2f} {min(lengths):>10,} "
              f"{budget:>10,} {path}")
    print(f"total {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
