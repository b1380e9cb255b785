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
    # the energy was measured while this session's 2 items ran; the 6 resumed ones cost it nothing
    from lcplugin.results.summary import carry_resumed

    summary = summarize([_record(i) for i in range(8)], {"wall_s": 10.0, "items_run": 2, "energy_j": 500.0})
    carry_resumed(summary, 6, None, ["energy_j_per_item", "wall_s"])
    assert summary["energy_j_per_item"] == 250.0 and summary["items_resumed"] == 6
    assert "2 items this session ran" in summary["session_figures_cover"]
    assert summarize([_record(1)], {"energy_j": 40.0})["energy_j_per_item"] == 40.0  # nothing resumed: every item

def test_a_wholly_resumed_test_takes_session_figures_only_from_a_summary_of_the_same_inputs():
    from lcplugin.results.summary import carry_resumed

    earlier = {"n": 8, "test_key": "a", "wall_s": 40.0, "energy_j_per_item": 9.0, "items_run": 8, "session_items": 8}
    for key, expected in (("a", 40.0), ("b", None)):  # "b": the spec changed (batch 1 -> 16) since that summary
        summary = summarize([_record(i) for i in range(8)], {"wall_s": 0.1, "items_run": 0, "test_key": key})
        carry_resumed(summary, 8, earlier, ["wall_s", "energy_j_per_item"])
        assert summary["wall_s"] == expected and summary["session_items"] == (8 if expected else 0)


def test_crossover_cost_per_item_divides_by_the_items_the_wall_time_covers():
    from lcplugin.results.crossover import _per_item

    assert _per_item({"wall_s": 40.0, "items_run": 0, "session_items": 4, "n": 8}, "s per item") == 10.0
    assert _per_item({"wall_s": 40.0, "items_run": 2, "n": 8}, "s per item") == 20.0
