"""Protocol options are declared once, as ``BenchOptions`` fields: the command line is made from them, so a
benchmark's new option is one field (its help and type beside it) and reaches the run's settings."""

from __future__ import annotations

import dataclasses

import pytest

from lcplugin.benchmarks.base import BenchOptions

pytest_plugins = ["pytester"]

# A protocol option added for one benchmark, declared as a field the way a new benchmark adds it.
Extended = dataclasses.make_dataclass(
    "Extended", [("tsort_shuffle", int, dataclasses.field(default=0, metadata={"help": "test option", "type": int}))],
    bases=(BenchOptions,), frozen=True, kw_only=True)


def test_every_option_is_on_the_command_line_and_reaches_the_settings(pytester: pytest.Pytester, monkeypatch):
    from lcplugin.plugin import options

    monkeypatch.setattr(options, "BenchOptions", Extended)
    config = pytester.parseconfig("--lc-mode", "cot", "--lc-select", "length=short", "--lc-pg19-windows", "3",
                                  "--lc-tsort-shuffle", "7")
    bench = options.settings_from(config).bench
    assert bench == Extended(mode="cot", select=(("length", ("short",)),), pg19_windows=3, tsort_shuffle=7)
    default = options.settings_from(pytester.parseconfig()).bench
    assert default == Extended() and default.as_dict()["select"] == {}
    # a usage error when the command line is parsed, naming the option and the fix
    with pytest.raises(pytest.UsageError, match=r"argument --lc-select: 'length': write FIELD=V1,V2"):
        pytester.parseconfig("--lc-select", "length")
    with pytest.raises(pytest.UsageError, match=r"argument --lc-pg19-windows: '0' is not a whole number >= 1"):
        pytester.parseconfig("--lc-pg19-windows", "0")


def test_the_options_record_as_before():
    assert BenchOptions(select=(("difficulty", ("hard",)),)).as_dict() == {
        "mode": "0shot", "select": {"difficulty": ["hard"]}, "overlength": "truncate", "budget": "context",
        "fill": "auto", "pg19_windows": 10, "pg19_score_last": 100, "ruler_depths": 10}
