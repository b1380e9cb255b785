"""From scored records to one test's summary: quality, its uncertainty, and cost.

Efficiency figures are computed per batch, never per item, so a batch of eight prompts does not
count its one prefill eight times: prefill tokens/s is prompt tokens over time to first token, decode
tokens/s is generated tokens after the first over decode time. Anything not measured stays None.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from .stats import wilson


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    pos = (len(values) - 1) * q
    lo, hi = int(pos), min(int(pos) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (pos - lo)


def efficiency(records: Sequence[Mapping[str, Any]]) -> dict[str, float | None]:
    batches: dict[Any, list[Mapping[str, Any]]] = {}
    for r in records:
        if r.get("ttft_s") is not None:
            batches.setdefault(r.get("batch_key", r.get("batch_id")), []).append(r)
    prompt_tokens = sum(sum(r["prompt_tokens"] for r in rows) for rows in batches.values())
    ttft_total = sum(rows[0]["ttft_s"] for rows in batches.values())
    decoded = sum(sum(max(0, r["output_tokens"] - 1) for r in rows) for rows in batches.values())
    decode_total = sum(rows[0]["decode_s"] or 0.0 for rows in batches.values())
    ttfts = [rows[0]["ttft_s"] for rows in batches.values()]
    latencies = [r["ttft_s"] + (r["decode_s"] or 0.0) for r in records if r.get("ttft_s") is not None]
    return {
        "prefill_tok_s": prompt_tokens / ttft_total if ttft_total > 0 else None,
        "decode_tok_s": decoded / decode_total if decode_total > 0 and decoded > 0 else None,
        "ttft_s": statistics.median(ttfts) if ttfts else None,
        "latency_p50_s": _percentile(latencies, 0.5),
        "latency_p95_s": _percentile(latencies, 0.95),
    }


def summarize(records: Sequence[Mapping[str, Any]], extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Quality figures (accuracy with a Wilson 95 % interval, null rate) plus efficiency.

    Records of skipped items (over-length under the skip policy) are counted apart, never scored."""
    records = [r for r in records if not r.get("skipped")]
    n = len(records)
    out: dict[str, Any] = {"n": n, "correct": None, "nulls": None, "accuracy": None, "null_rate": None,
                           "accuracy_ci95": None, "truncated": sum(1 for r in records if r.get("truncated")),
                           "buckets": {}}
    if n and all("correct" in r for r in records):  # perplexity benchmarks have no accuracy
        correct = sum(1 for r in records if r["correct"])
        nulls = sum(1 for r in records if r.get("null"))
        out.update(correct=correct, nulls=nulls, accuracy=correct / n, null_rate=nulls / n,
                   accuracy_ci95=list(wilson(correct, n)))
    out.update(efficiency(records))
    out.update(extra or {})
    ran = out.get("items_run", n)  # the items this session's figures were measured over
    out["items_per_hour"] = items_per_hour(ran, out.get("wall_s"))
    energy = out.get("energy_j")
    out["energy_j_per_item"] = energy / ran if energy is not None and ran else None
    return out


def items_per_hour(items: int, wall_s: float | None) -> float | None:
    """Throughput beside per-item latency: items finished per hour of the test's wall time.

    Batching raises it while each item's latency stays; the wall time is the whole test's (prompt
    building, scoring and any first-use warm-up included), so it is what a run of that size costs."""
    return items * 3600.0 / wall_s if items and wall_s else None


# session figures that are no row of figures.FIGURES: what they are computed from, or what they mean
SESSION_KEYS = ("energy_j", "peak_mem_what")


def carry_resumed(summary: dict[str, Any], resumed: int, earlier: Mapping[str, Any] | None,
                  session_figures: Sequence[str]) -> None:
    """Make a test's session figures (``session_figures``: memory peaks, energy, wall time, measured while its
    items ran) say only what was measured, when ``resumed`` of its items come from an earlier session's records.

    Partly resumed: they cover the items this session ran (``summarize`` divides per-item figures by those), as
    ``session_figures_cover`` says. Wholly resumed: this session ran none of them, so the figures are the
    ``earlier`` summary's of the same test and inputs (``test_key``; the session that ran them, killed before the
    run ended) or, where it left none (killed after the test's last record), None with the reason.
    ``session_items`` says how many items the session figures cover (per-item costs divide by it).
    """
    summary["items_resumed"] = resumed
    ran = summary.get("items_run") or 0
    summary["session_items"] = ran  # the items the session figures were measured over
    if not resumed:
        return
    if ran:  # energy per item and items per hour already divide by these (summarize)
        summary["session_figures_cover"] = (f"the {ran} items this session ran; {resumed} more were resumed from an "
                                            "earlier session's records")
        return
    keys = (*session_figures, *SESSION_KEYS, "session_items")
    if earlier is not None and earlier.get("n") == summary.get("n") and earlier.get("test_key") is not None \
            and earlier.get("test_key") == summary.get("test_key"):  # the same inputs (config/inputs.py), not only n
        unmeasured = dict(summary.get("unmeasured") or {})
        for key in keys:
            summary[key] = earlier.get(key)
            unmeasured.pop(key, None)
            if key in (earlier.get("unmeasured") or {}):
                unmeasured[key] = earlier["unmeasured"][key]
        summary["unmeasured"] = unmeasured
        summary["session_figures_cover"] = (earlier.get("session_figures_cover")
                                            or "the earlier session that ran every item (all resumed here)")
        return
    why = ("every item was resumed from an earlier session's records, and that session left no summary of this "
           "test with these inputs: no session measured this figure over its items")
    summary["unmeasured"] = {**(summary.get("unmeasured") or {}), **{key: why for key in session_figures}}
    for key in keys:
        summary[key] = None
    summary["session_items"] = 0
    summary["session_figures_cover"] = "none of its items (all resumed)"
