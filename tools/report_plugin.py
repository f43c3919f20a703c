"""A pytest plugin that leaves the figures of a run in a JSON file for tools/report.py.

Owns the result file of one pytest run (``-p tools.report_plugin --report-json PATH``):
per test, its outcome, its duration and how many Hypothesis examples it ran (by phase
and status), and for the crash tests the crash-state tally of tests/crash/crash_points.py.

Examples are counted through ``hypothesis.statistics.collector``, the hook that
Hypothesis's own ``--hypothesis-show-statistics`` option uses. It costs nothing (the
engine computes the statistics anyway), and unlike the pytest plugin's per-item
statistics it also sees state machines run through ``run_state_machine_as_test`` inside
plain test functions. Hypothesis's observability callbacks were not used: they trace
every line of every example, which would slow the thorough runs several times over.

Never changes what a test does or whether it passes: the plugin only listens, and a
failure to count (a Hypothesis internal that moved) leaves the counts empty and says so
in the file, it never fails the run.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

try:
    from hypothesis.statistics import collector as _statistics_collector
except ImportError:  # pragma: no cover - only if Hypothesis reorganises its internals
    _statistics_collector = None

PHASES = ("explicit", "reuse", "generate", "target", "shrink", "explain")
# statuses of one test case in the engine's statistics, as we report them
STATUS_NAMES = {"valid": "passing", "interesting": "failing", "invalid": "invalid"}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--report-json",
        default=None,
        help="write this run's figures (outcomes, Hypothesis examples, crash points) here",
    )


class RunRecorder:
    """Collects the figures of one pytest run; writes them once at the end."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.started_s = time.time()
        self.tests: dict[str, dict[str, Any]] = {}
        self.counting = _statistics_collector is not None

    def entry(self, nodeid: str) -> dict[str, Any]:
        return self.tests.setdefault(
            nodeid, {"outcome": None, "duration_s": 0.0, "examples": {}, "runs": 0}
        )

    def note_statistics(self, nodeid: str, statistics: dict[str, Any]) -> None:
        """Add one Hypothesis run (a test may run several machines) to ``nodeid``."""
        entry = self.entry(nodeid)
        examples: Counter[str] = Counter(entry["examples"])
        for phase in PHASES:
            cases = statistics.get(f"{phase}-phase", {}).get("test-cases", [])
            for case in cases:
                status = STATUS_NAMES.get(case.get("status"), "invalid")
                examples[f"{phase}:{status}"] += 1
        entry["examples"] = dict(examples)
        entry["runs"] += 1
        entry["stopped_because"] = statistics.get("stopped-because")
        assert entry["runs"] >= 1

    @pytest.hookimpl(hookwrapper=True, trylast=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Iterator[None]:
        if _statistics_collector is None:
            yield
            return
        earlier: Callable[[Any], None] | None = _statistics_collector.value

        def note(statistics: dict[str, Any]) -> None:
            self.note_statistics(item.nodeid, statistics)
            if earlier is not None:
                earlier(statistics)

        with _statistics_collector.with_value(note):
            yield

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        entry = self.entry(report.nodeid)
        entry["duration_s"] += report.duration
        outcome = report.outcome
        if hasattr(report, "wasxfail"):
            outcome = "xfailed" if report.skipped else "xpassed"
        if report.when == "call" or (report.when == "setup" and outcome != "passed"):
            entry["outcome"] = outcome
        elif report.when == "teardown" and report.failed:
            entry["outcome"] = "error"

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        """A module skipped or broken at collection (e.g. a missing driver) is a row too."""
        if report.skipped or report.failed:
            entry = self.entry(report.nodeid)
            entry["outcome"] = "skipped" if report.skipped else "error"

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        result = {
            "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(self.started_s)),
            "duration_s": round(time.time() - self.started_s, 1),
            "exit_status": int(exitstatus),
            "hypothesis_profile": os.environ.get("HYPOTHESIS_PROFILE", "ci"),
            "examples_counted": self.counting,
            "tests": self.tests,
            "crash_points": crash_tally(),
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(result, indent=1, sort_keys=True), encoding="utf-8")
        assert json.loads(self.path.read_text(encoding="utf-8"))["tests"] == self.tests


def crash_tally() -> dict[str, Any] | None:
    """The crash-state tally of this run, if the crash tests ran in it (else None)."""
    module = sys.modules.get("tests.crash.crash_points")
    if module is None or not module.TALLY:
        return None
    by_label = {label: int(n) for label, n in sorted(module.TALLY.items())}
    return {"total": int(module.total()), "by_label": by_label}


def pytest_configure(config: pytest.Config) -> None:
    path = config.getoption("--report-json")
    if path:
        config.pluginmanager.register(RunRecorder(Path(path)), "report-run-recorder")
