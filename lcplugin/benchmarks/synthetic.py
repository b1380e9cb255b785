"""Seeded synthetic data in the real benchmarks' schemas, for the offline default and tests.

The LongBench-v2 generator hides one fact (a code word kept by a named object) in filler text and
asks for it among four choices. Items vary in length so that, at the tiny models' 1k and 2k
contexts, some prompts fit whole and some are cut in the middle, exercising truncation the way a
real 128k run does. Same seed, same items, on every machine.
"""

from __future__ import annotations

import random
from typing import Any

SEED = 20261128
VERSION = "synthetic-longbench-v1"
_WORDS = ["amber", "basin", "cedar", "delta", "ember", "fable", "grove", "harbor", "island", "juniper", "kettle", "lantern", "meadow", "nectar", "orchard", "pepper", "quarry", "raven", "saddle", "timber", "umber", "valley", "willow", "yarrow", "zephyr"]
_OWNERS = ("the old lighthouse", "the north mill", "the river ferry", "the glass tower", "the copper bell",
           "the stone bridge", "the east garden", "the clock house")


def _sentence(rng: random.Random) -> str:
    words = rng.choices(_WORDS, k=rng.randint(6, 12))
    return " ".join(words).capitalize() + "."


def synthetic_longbench(n: int, seed: int = SEED) -> list[dict[str, Any]]:
    """``n`` items in the LongBench-v2 schema (all fields strings, like the real file)."""
    items = []
    for i in range(n):
        rng = random.Random(seed * 1000 + i)
        n_words = rng.choice((60, 120, 250, 400, 700, 1000))
        owner = rng.choice(_OWNERS)
        codes = rng.sample(range(1000, 10000), 4)
        answer = rng.randrange(4)
        filler = []
        words = 0
        while words < n_words:
            s = _sentence(rng)
            filler.append(s)
            words += s.count(" ") + 1
        fact = f"The code word kept by {owner} is {codes[answer]}."
        filler.insert(rng.randrange(len(filler) + 1), fact)
        item = {
            "_id": f"syn-{seed}-{i:04d}",
            "domain": "Synthetic retrieval",
            "sub_domain": "Code word",
            "difficulty": "easy" if i % 3 else "hard",
            "length": "short" if n_words < 300 else ("medium" if n_words < 800 else "long"),
            "question": f"Which code word is kept by {owner}?",
            "answer": "ABCD"[answer],
            "context": " ".join(filler),
        }
        for j, letter in enumerate("ABCD"):
            item[f"choice_{letter}"] = str(codes[j])
        items.append(item)
    return items
