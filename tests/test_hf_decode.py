"""The hf engine's decode path (issue 12): batching and the static KV cache give batch-1, dynamic-cache tokens.

Random tiny models have nearly flat logits, so a greedy token that moved by one rounding step would
show here: equality of every token is a strict check, not a loose one.
"""

from __future__ import annotations

import random

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from lcplugin.engines.base import EngineConfig, SamplingSettings  # noqa: E402
from lcplugin.engines.hf import HFEngine  # noqa: E402
from lcplugin.models.tiny import materialize  # noqa: E402

TINY = ["tiny-llama", "tiny-mamba", "tiny-mamba2", "tiny-zamba2", "tiny-nemotron-h"]
GREEDY = SamplingSettings(max_new_tokens=12, temperature=0.0)


def _engine(name: str, **args) -> HFEngine:
    folder = str(materialize(name))
    return HFEngine(EngineConfig(engine="hf", model=name, source=folder, tokenizer=folder, dtype="float32",
                                 engine_args={"ignore_eos": True, **args}))


def _prompts(n: int = 6, seed: int = 3) -> list[list[int]]:
    rng = random.Random(seed)
    return [[256] + [rng.randrange(256) for _ in range(rng.randrange(10, 90))] for _ in range(n)]


@pytest.mark.parametrize("name", TINY)
def test_batched_greedy_output_equals_batch_one(name: str):
    prompts = _prompts()
    single = _engine(name, max_batch_size=1).generate(prompts, GREEDY)
    batched = _engine(name, max_batch_size=4).generate(prompts, GREEDY)
    assert max(c.batch_size for c in batched) == 4  # left-padded batches really ran
    assert [c.output_ids for c in batched] == [c.output_ids for c in single]
