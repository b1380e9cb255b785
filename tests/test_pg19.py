"""PG-19 through the suite's engine path equals a direct transformers forward (relative 1e-4)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from lcplugin.benchmarks.base import BenchOptions, DataSource, EvalSession
from lcplugin.benchmarks.pg19 import PG19, window_starts
from lcplugin.engines.base import EngineConfig, SamplingSettings
from lcplugin.engines.worker import EngineWorker
from lcplugin.models.tiny import materialize


def test_window_starts_are_evenly_spread():
    assert window_starts(100, 200, 10) == []
    assert window_starts(200, 200, 10) == [0]
    assert window_starts(1000, 100, 10) == [0, 100, 200, 300, 400, 500, 600, 700, 800, 900]
    assert window_starts(105, 100, 10) == [0, 1, 2, 3, 4, 5]  # never more windows than positions


@pytest.mark.parametrize("model", ["tiny-llama", "tiny-mamba2"])
def test_suite_perplexity_matches_a_direct_forward(tmp_path, model, tiny_model):
    import torch
    from transformers import AutoTokenizer

    folder = str(materialize(model))
    tok = AutoTokenizer.from_pretrained(folder)
    ctx, k = 512, 50
    bench = PG19(BenchOptions(pg19_windows=3, pg19_score_last=k))
    items = bench.load_items(DataSource(kind="synthetic", location="seeded"), ctx, 2)
    worker = EngineWorker(EngineConfig(engine="hf", model=model, source=folder, tokenizer=folder, dtype="float32"),
                          Path(tmp_path))
    records: list[dict] = []
    try:
        session = EvalSession(generate=None, tokenizer=tok, ctx=ctx, chat_mode="off",  # type: ignore[arg-type]
                              sampling=SamplingSettings(), emit=records.append,
                              loglikelihood=lambda ids, n: worker.call("loglikelihood", ids, n))
        bench.evaluate(items, session)
    finally:
        worker.close()
    summary = bench.aggregate(records)
    assert summary["books"] == 2 and summary["windows"] == 6

    model_obj = tiny_model(model)  # the checkpoint the worker loaded, fp32
    total_nll = total_tokens = total_bytes = 0.0
    for item in items:
        text = item.fields["text"]
        enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = enc["input_ids"]
        for s in window_starts(len(ids), ctx, 3):
            window = torch.tensor([ids[s:s + ctx]])
            with torch.no_grad():
                logp = torch.log_softmax(model_obj(window).logits[0].double(), dim=-1)
            targets = window[0, -k:]
            total_nll += -logp[-k - 1:-1].gather(1, targets[:, None]).sum().item()
            total_tokens += k
            start, end = enc["offset_mapping"][s + ctx - k][0], enc["offset_mapping"][s + ctx - 1][1]
            total_bytes += len(text[start:end].encode())
    assert summary["perplexity"] == pytest.approx(math.exp(total_nll / total_tokens), rel=1e-4)
    assert summary["bits_per_byte"] == pytest.approx(total_nll / (total_bytes * math.log(2)), rel=1e-4)
