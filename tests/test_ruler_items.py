"""RULER's items are pinned to ``Ruler.items_version``: the prompts its generator and prompt builder make
are fingerprinted here, so a change to what a model reads fails this test until the version is raised
(which refuses the old items' baselines by name: tests/test_inputs.py). Tiny byte-level tokenizer, a fixed
essay and SQuAD/HotpotQA files written by the QA tests' writers: no data, no network."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from lcplugin.benchmarks import ruler_qa as rq
from lcplugin.benchmarks.ruler import CLASSES, Ruler, build, essay
from lcplugin.models.tiny import build_tokenizer

from .test_ruler_qa import write_hotpot, write_squad

# Ruler.items_version -> the fingerprint of its prompts (every task, 1k and 4k, the first three samples)
FINGERPRINTS = {1: "03bd2edb411c5c27"}
PROSE = ("The harbour town woke before the sun, and the fishing boats slid out past the breakwater one by one. "
         "Gulls followed them, loud and hopeful. By noon the market smelled of salt, tar and fresh bread; the "
         "old clock above the customs house had stopped years ago, and nobody had thought to mend it. ")


def fingerprint(tmp: Path) -> str:
    tok = build_tokenizer()
    (tmp / "essay.txt").write_text(PROSE * 40, encoding="utf-8")
    hay = essay(str(tmp / "essay.txt"))
    qa = {"qa_1": rq.qa_data("qa_1", str(write_squad(tmp / "squad.json"))),
          "qa_2": rq.qa_data("qa_2", str(write_hotpot(tmp / "hotpot.json")))}
    digest = hashlib.sha256()
    for task in sorted(CLASSES):
        for ctx in (1024, 4096):
            for index in range(3):
                made = build(tok, task, ctx, index, hay=hay if task.startswith("niah") else None, qa_data=qa.get(task))
                assert made is not None, (task, ctx, index)
                ids, draft, n, _ = made
                digest.update(json.dumps([task, ctx, index, tok.decode(ids), draft.answers, n]).encode())
    return digest.hexdigest()[:16]


def test_rulers_prompts_are_those_of_its_items_version(tmp_path):
    got = fingerprint(tmp_path)
    assert FINGERPRINTS.get(Ruler.items_version) == got, (
        f"RULER's prompts are not those of items_version {Ruler.items_version}: if the change is meant, raise "
        f"Ruler.items_version (lcplugin/benchmarks/ruler.py) and add {{{Ruler.items_version + 1}: {got!r}}} to "
        "FINGERPRINTS in tests/test_ruler_items.py, so results and baselines of the old items are refused")
