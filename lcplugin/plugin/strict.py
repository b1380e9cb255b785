"""``--lc-strict``: a session in which no lcplugin test ran fails.

Every lcplugin test skips with its reason where it cannot run (no GPU, weights not cached, hub
unreachable), and pytest counts skips as success: a CI runner that lost its GPU or its weights cache
would pass green without measuring anything. Under ``--lc-strict`` such a session — every selected
lcplugin test skipped, or none selected — exits 1 with a one-line reason.

Registered on the controller only (or the one process without pytest-xdist): it counts test reports,
which reach the controller from every worker, and an lcplugin test is known by its ``lc_benchmark``
mark, which travels with each report among its keywords.
"""

from __future__ import annotations

from typing import Any

import pytest


class StrictGate:
    def __init__(self) -> None:
        self.selected: set[str] = set()
        self.ran: set[str] = set()
        self.reason: str | None = None

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if "lc_benchmark" not in report.keywords:
            return
        self.selected.add(report.nodeid)
        if report.when == "call" and not report.skipped:
            self.ran.add(report.nodeid)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.ran or session.config.option.collectonly:
            return
        if session.exitstatus not in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
            return  # the session failed on its own (a failed setup, interrupted): that says enough
        what = f"{len(self.selected)} selected, all skipped" if self.selected else "none selected"
        self.reason = f"lcplugin --lc-strict: no lcplugin test ran ({what}); failing the session"
        if session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.reason:
            terminalreporter.write_line(self.reason, red=True, bold=True)
