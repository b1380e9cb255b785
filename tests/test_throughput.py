"""Throughput (items per hour) beside per-item latency in every summary (issue 12.3)."""

from lcplugin.results.summary import items_per_hour, summarize


def _record(i: int) -> dict:
    return {"id": str(i), "correct": True, "null": False, "prompt_tokens": 100, "output_tokens": 10,
            "ttft_s": 1.0, "decode_s": 2.0, "batch_key": "b"}


def test_items_per_hour_is_items_over_wall_time():
    summary = summarize([_record(i) for i in range(8)], {"wall_s": 4.0})
    assert summary["items_per_hour"] == 8 * 3600 / 4.0
    assert summary["latency_p50_s"] == 3.0  # per-item latency stays what it was: both are reported


def test_items_per_hour_counts_only_the_items_this_session_ran():
    summary = summarize([_record(i) for i in range(8)], {"wall_s": 10.0, "items_run": 2})  # 6 resumed
    assert summary["items_per_hour"] == 2 * 3600 / 10.0


def test_items_per_hour_is_none_when_unmeasured():
    assert items_per_hour(0, 5.0) is None and items_per_hour(3, None) is None
    assert summarize([_record(1)])["items_per_hour"] is None


def test_a_partly_resumed_tests_energy_per_item_divides_by_the_items_this_session_ran():
    from lcplugin.results.summary import carry_resumed

    summary = summarize([_record(i) for i in range(8)], {"wall_s": 10.0, "items_run": 2, "energy_j": 500.0,
                                                          "energy_j_per_item": 500.0 / 8})
    carry_resumed(summary, 6, None, ["energy_j_per_item", "wall_s"])
    assert summary["energy_j_per_item"] == 250.0 and summary["items_resumed"] == 6
    assert "2 items this session ran" in summary["session_figures_cover"]
