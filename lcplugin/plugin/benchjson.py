"""``--benchmark-json`` under pytest-xdist, written by the controller from the workers' figures.

pytest-benchmark switches itself off under xdist ("cannot be performed reliably in a parallelized
environment"), so its file would hold no test. lcplugin's tests time themselves (one round of the
whole evaluation; each worker has its own GPUs) and send their figures to the controller with their
reports (``record_property``); this writes them in pytest-benchmark's own format, so
``pytest-benchmark compare`` reads a ``-n N`` run like a ``-n 1`` one.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest


def measured(value: Any) -> float | None:
    """A recorded figure as a number; None where the test measured none (None, or its text "None")."""
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def benchmark_entry(rep: dict[str, Any]) -> dict[str, Any] | None:
    """One test in pytest-benchmark's format, from its report's ``lc_`` properties; None for a test with no
    measured wall time (resumed whole, with no earlier summary of it): no timing to list."""
    from pytest_benchmark.stats import Stats

    nodeid, props = rep["nodeid"], rep["props"]
    wall = measured(props.get("lc_wall_s"))
    if wall is None:
        return None
    stats = Stats()
    stats.update(wall)
    param = nodeid[nodeid.rindex("[") + 1:-1] if nodeid.endswith("]") else None
    return {
        "group": None, "name": nodeid.rsplit("::", 1)[-1], "fullname": nodeid,
        "params": {"lc_case": param} if param else None, "param": param,
        "extra_info": {k.removeprefix("lc_"): v for k, v in props.items() if k.startswith("lc_")},
        "options": {"disable_gc": False, "timer": "perf_counter", "min_rounds": 1, "max_time": 0,
                    "min_time": 0, "warmup": False},
        "stats": {**stats.as_dict(), "data": stats.data, "iterations": 1},
    }


def benchmark_json(config: pytest.Config, reports: list[dict[str, Any]]) -> dict[str, Any]:
    from pytest_benchmark import __version__

    hook = config.hook
    machine = hook.pytest_benchmark_generate_machine_info(config=config)
    hook.pytest_benchmark_update_machine_info(config=config, machine_info=machine)
    commit = hook.pytest_benchmark_generate_commit_info(config=config)
    hook.pytest_benchmark_update_commit_info(config=config, commit_info=commit)
    benchmarks = [entry for rep in reports if (entry := benchmark_entry(rep)) is not None]
    return {"machine_info": machine, "commit_info": commit, "benchmarks": benchmarks,
            "datetime": datetime.now(UTC).isoformat(), "version": __version__}
