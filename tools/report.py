"""The verification report: run the checks, collect their figures, write docs/verification.md.

Owns ``nox -s report``'s work: it runs the stateful machines, the crash tests, a
coverage run, the mutants (tools/mutants.py) and CrossHair, each leaving a
machine-readable result under ``reports/`` (git-ignored); it then reads those
results and bench/results/latest.json and writes docs/verification.md (the page
template and its descriptive text live here) and docs/bench-ratios.png.

Never types a figure by hand: every number on the page comes from a result file,
and a missing one is shown as "not run". Never runs the benchmarks (they need a
quiet machine; the page says the date of the results it used). Never imports
durus: it only starts runs and reads what they leave behind.

    python tools/report.py [--quick]        # run everything, then write the page
    python tools/report.py --render-only    # write the page from reports/ as it is
    python tools/report.py [--quick] --only crosshair   # redo one step, keep the others
"""

from __future__ import annotations

import argparse
import ast
import datetime
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
REPORTS = ROOT / "reports"
PAGE = ROOT / "docs" / "verification.md"
CHART = ROOT / "docs" / "bench-ratios.png"
BENCH_RESULTS = ROOT / "bench" / "results" / "latest.json"
STEP_TIMEOUT_S = 2 * 3600  # one step of a full run; a hung step must not hang the session
# CPU seconds per condition; a full run uses the crosshair session's default (3 s)
CROSSHAIR_CONDITION_S = {"quick": "1", "thorough": os.environ.get("CROSSHAIR_CONDITION_S", "3")}
CHART_NOTE = "docs/bench-ratios.png"
CHART_TICKS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0)
TEMPLATE = ROOT / "tools" / "verification.template.md"
SECTION_MARKER = re.compile(r"^<!-- section: (\w+) -->\n", re.MULTILINE)


def load_templates(path: Path = TEMPLATE) -> dict[str, str]:
    """The page's descriptive text by section name (see the template's first comment)."""
    parts = SECTION_MARKER.split(path.read_text(encoding="utf-8"))
    templates = dict(zip(parts[1::2], parts[2::2], strict=True))
    assert "header" in templates and "bench" in templates, f"{path} lost a section"
    return templates


TEMPLATES = load_templates()


# -- running the checks ----------------------------------------------------------------------


def pytest_command(result_name: str, *arguments: str) -> list[str]:
    """A pytest run that leaves its figures in reports/<result_name> (tools/report_plugin.py)."""
    assert result_name.endswith(".json")
    return [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-p",
        "tools.report_plugin",
        "--report-json",
        str(REPORTS / result_name),
        *arguments,
    ]


def crosshair_targets(noxfile: Path = ROOT / "noxfile.py") -> tuple[str, ...]:
    """The files ``nox -s crosshair`` checks (read from the noxfile), or () without that session."""
    tree = ast.parse(noxfile.read_text(encoding="utf-8"))
    sessions = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
    if "crosshair" not in sessions:
        return ()
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == "CROSSHAIR_TARGETS"
            for target in node.targets
        ):
            return evaluate_constant(node.value)
    return ()


def evaluate_constant(expression: ast.expr) -> tuple[str, ...]:
    """The value of a constant expression of the noxfile (literals, comprehensions, f-strings).

    Runs without builtins: the noxfile is ours, and a target list that needs more than
    that is not something this reader understands, so it reports no targets.
    """
    try:
        value = eval(
            compile(ast.Expression(expression), "noxfile.py", "eval"), {"__builtins__": {}}
        )
    except Exception:
        return ()
    targets = tuple(value) if isinstance(value, (tuple, list)) else ()
    assert all(isinstance(target, str) for target in targets)
    return targets


def plan(mode: str) -> list[dict[str, Any]]:
    """The steps of a run: name, command, environment additions, where stdout is kept."""
    assert mode in ("quick", "thorough")
    # The profiles of `nox -s stateful` and `nox -s crash` (the stateful machines'
    # own profile: the thorough one's 2,000 x 80 budget runs for hours there).
    quick = mode == "quick"
    profiles = {
        "stateful": "ci" if quick else "stateful",
        "crash": "ci" if quick else "thorough",
    }
    coverage_scope = ["tests/unit"] if mode == "quick" else []
    coverage_flags = ["--cov=durus", "--cov-branch", "--cov-report=json:reports/coverage.json"]
    mutant_flags = ["--no-baseline"] if mode == "quick" else []
    steps = [
        {"name": "stateful", "command": pytest_command("stateful.json", "tests/stateful")},
        {"name": "crash", "command": pytest_command("crash.json", "tests/crash")},
        {
            "name": "coverage",
            "command": pytest_command("coverage-run.json", *coverage_flags, *coverage_scope),
            # a data file of its own, so a concurrent `nox -s coverage` is not disturbed
            "env": {"HYPOTHESIS_PROFILE": "ci", "COVERAGE_FILE": str(REPORTS / ".coverage")},
        },
        {
            "name": "mutants",
            "command": [sys.executable, "tools/mutants.py", *mutant_flags],
            "stdout": "mutants.txt",
        },
    ]
    for step in steps[:2]:
        step["env"] = {"HYPOTHESIS_PROFILE": profiles[step["name"]]}
    targets = crosshair_targets()
    if targets:
        seconds = CROSSHAIR_CONDITION_S[mode]
        command = [sys.executable, "-m", "crosshair", "check", "--report_all"]
        command += [f"--per_condition_timeout={seconds}", *targets]
        steps.append(
            {"name": "crosshair", "command": command, "stdout": "crosshair.txt", "targets": targets}
        )
    return steps


def run_step(step: dict[str, Any]) -> dict[str, Any]:
    """Run one step from the project root; its stdout is echoed and kept if asked.

    The step runs in its own process group, which is killed (servers the tests started
    included) if it outlives STEP_TIMEOUT_S.
    """
    print(f"report: {step['name']}: {' '.join(step['command'])}", flush=True)
    env = dict(os.environ, **step.get("env", {}))
    started_s = time.monotonic()
    kept: list[str] = []
    with subprocess.Popen(
        step["command"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    ) as process:
        assert process.stdout is not None
        watchdog = threading.Timer(STEP_TIMEOUT_S, os.killpg, (process.pid, signal.SIGKILL))
        watchdog.start()
        try:
            for line in process.stdout:
                sys.stdout.write(line)
                kept.append(line)
            status = process.wait()
        finally:
            watchdog.cancel()
    if "stdout" in step:
        (REPORTS / step["stdout"]).write_text("".join(kept), encoding="utf-8")
    assert isinstance(status, int)
    result = {"exit_status": status, "duration_s": round(time.monotonic() - started_s, 1)}
    return result | ({"targets": list(step["targets"])} if "targets" in step else {})


def run_all(mode: str, only: list[str] | None = None) -> None:
    """Every step (or the ``only`` ones), in order; a failing step is recorded, not fatal.

    reports/run.json is rewritten after each step, so an interrupted run still says which
    steps it finished. With ``only``, the other steps' results of an earlier run of the
    same mode are kept (to redo one step after a fix); without, reports/ starts empty.
    """
    REPORTS.mkdir(exist_ok=True)
    steps = plan(mode)
    earlier = read_json(REPORTS / "run.json")
    if only:
        unknown = set(only) - {step["name"] for step in steps}
        if unknown:
            raise SystemExit(f"report: no step named {', '.join(sorted(unknown))}")
        if earlier is None or earlier.get("mode") != mode:
            raise SystemExit(f"report: --only needs an earlier {mode} run in reports/")
        steps = [step for step in steps if step["name"] in only]
        run = earlier
    else:
        for stale in REPORTS.iterdir():
            stale.unlink()
        run = {"mode": mode, "started": utc_now(), "finished": None, "steps": {}}
    for step in steps:
        run["steps"][step["name"]] = run_step(step)
        run["finished"] = utc_now()
        (REPORTS / "run.json").write_text(json.dumps(run, indent=1), encoding="utf-8")
    assert all(step["name"] in run["steps"] for step in steps)


def utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


# -- reading the results ---------------------------------------------------------------------


def read_json(path: Path) -> Any:
    """The JSON in ``path``, or None when it is missing or unreadable (a step did not run)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        return None


def counts_as_example(key: str) -> bool:
    """Whether a ``phase:status`` count of the plugin is an example run (as Hypothesis
    counts them against max_examples: valid ones, outside shrinking)."""
    phase, _, status = key.partition(":")
    return phase != "shrink" and status in ("passing", "failing")


def pytest_figures(result: dict[str, Any] | None) -> dict[str, Any] | None:
    """Outcome counts and example totals of one pytest run's result file."""
    if result is None:
        return None
    outcomes: dict[str, int] = {}
    examples = 0
    rows = []
    for nodeid, test in sorted(result["tests"].items()):
        outcome = test.get("outcome") or "not run"
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        ran = sum(n for key, n in test["examples"].items() if counts_as_example(key))
        examples += ran
        if test["runs"]:
            rows.append((nodeid, outcome, ran, test["runs"], test["duration_s"]))
    assert examples >= 0
    return {
        "profile": result["hypothesis_profile"],
        "started": result["started"],
        "duration_s": result["duration_s"],
        "exit_status": result["exit_status"],
        "outcomes": outcomes,
        "examples": examples,
        "examples_counted": result.get("examples_counted", False),
        "hypothesis_tests": rows,
        "crash_points": result.get("crash_points"),
    }


MUTANT_ROW = re.compile(
    r"^\|\s*(?P<name>[\w-]+)\s*\|\s*(?P<file>[\w/.]+)\s*\|\s*(?P<verdict>[\w-]+)\s*\|"
    r"\s*(?P<seconds>\d+)\s*\|\s*(?P<detail>.*?)\s*\|\s*$"
)


def mutant_figures(output: str | None, descriptions: dict[str, str]) -> dict[str, Any] | None:
    """The table tools/mutants.py prints, as rows; None if it did not run."""
    if output is None:
        return None
    rows = []
    for line in output.splitlines():
        match = MUTANT_ROW.match(line)
        if match and match["name"] != "mutant":
            row = match.groupdict()
            row["what"] = descriptions.get(row["name"], "")
            rows.append(row)
    killed = sum(1 for row in rows if row["verdict"] == "killed")
    baseline = re.search(r"^baseline \(no mutant\): (.*)$", output, re.MULTILINE)
    return {
        "rows": rows,
        "killed": killed,
        "total": len(rows),
        "baseline": baseline.group(1) if baseline else None,
    }


def mutant_descriptions() -> dict[str, str]:
    """name -> what the mutant breaks, from tools/mutants.py's list (empty if unreadable)."""
    path = ROOT / "tools" / "mutants.py"
    spec = importlib.util.spec_from_file_location("report_mutant_list", path)
    if spec is None or spec.loader is None:
        return {}
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while defined
    try:
        spec.loader.exec_module(module)
    except Exception:  # a half-edited mutant list must not stop the report
        return {}
    finally:
        del sys.modules[spec.name]
    return {mutant.name: mutant.what for mutant in getattr(module, "MUTANTS", [])}


CROSSHAIR_LINE = re.compile(r"^(?P<where>\S+?):(?P<line>\d+): (?P<level>\w+): (?P<message>.*)$")


def crosshair_figures(output: str | None, exit_status: int | None) -> dict[str, Any] | None:
    """Conditions confirmed, not refuted in the time given, and counterexamples."""
    if output is None:
        return None
    confirmed = unrefuted = 0
    problems = []
    for line in output.splitlines():
        match = CROSSHAIR_LINE.match(line.strip())
        if match is None:
            continue
        if match["message"].startswith("Confirmed over all paths"):
            confirmed += 1
        elif match["message"].startswith("Not confirmed"):
            unrefuted += 1
        elif match["level"] == "error":
            where = (
                os.path.relpath(match["where"], ROOT)
                if match["where"].startswith("/")
                else match["where"]
            )
            problems.append(f"{where}:{match['line']}: {match['message']}")
    return {
        "confirmed": confirmed,
        "unrefuted": unrefuted,
        "problems": problems,
        "exit_status": exit_status,
    }


def coverage_figures(report: dict[str, Any] | None) -> dict[str, Any] | None:
    """Total and per-file branch coverage from ``coverage json`` output."""
    if report is None:
        return None
    files = []
    for name, data in report["files"].items():
        files.append((name, data["summary"]["percent_covered"]))
    files.sort(key=lambda item: item[1])
    totals = report["totals"]
    return {
        "percent": totals["percent_covered"],
        "statements": totals["num_statements"],
        "branches": totals.get("num_branches", 0),
        "lowest": files[:5],
        "files": len(files),
    }


def collect(reports: Path = REPORTS, bench_results: Path = BENCH_RESULTS) -> dict[str, Any]:
    """Every figure the page shows, from the result files (missing ones are None)."""
    run = read_json(reports / "run.json") or {"mode": None, "steps": {}}
    crosshair_step = run["steps"].get("crosshair", {})
    figures = {
        "run": run,
        "stateful": pytest_figures(read_json(reports / "stateful.json")),
        "crash": pytest_figures(read_json(reports / "crash.json")),
        "coverage_run": pytest_figures(read_json(reports / "coverage-run.json")),
        "coverage": coverage_figures(read_json(reports / "coverage.json")),
        "mutants": mutant_figures(read_text(reports / "mutants.txt"), mutant_descriptions()),
        "crosshair": crosshair_figures(
            read_text(reports / "crosshair.txt"), crosshair_step.get("exit_status")
        ),
        "bench": read_json(bench_results),
    }
    return figures


# -- the chart -------------------------------------------------------------------------------


def bench_rows(bench: dict[str, Any] | None) -> list[tuple[str, float]]:
    """(label, ratio) per benchmark figure that has a ratio, in the order of the results."""
    if not bench:
        return []
    rows = []
    for row in bench.get("rows", []):
        if isinstance(row.get("ratio"), (int, float)) and row["ratio"] > 0:
            rows.append((f"{row['workload']}: {row['metric']}", float(row["ratio"])))
    return rows


def draw_chart(bench: dict[str, Any], path: Path) -> bool:
    """A horizontal bar chart of ours / best peer per figure; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows = list(reversed(bench_rows(bench)))
    assert rows, "no benchmark ratios to draw"
    labels = [label for label, _ in rows]
    ratios = [ratio for _, ratio in rows]
    colours = ["#2e7d32" if ratio >= 1.0 else "#c62828" for ratio in ratios]
    figure, axes = plt.subplots(figsize=(8.5, 0.55 * len(rows) + 1.6), dpi=110)
    # bars start at 1.0 (parity), so a worse figure points left and a better one right
    axes.barh(labels, [ratio - 1.0 for ratio in ratios], left=1.0, color=colours)
    axes.set_xscale("log")
    axes.axvline(1.0, color="black", linewidth=1.2)
    for index, ratio in enumerate(ratios):
        better = ratio >= 1.0
        axes.annotate(
            f"{ratio:.2f}",
            (ratio, index),
            xytext=(4 if better else -4, 0),
            textcoords="offset points",
            ha="left" if better else "right",
            va="center",
            fontsize=9,
        )
    low, high = min([*ratios, 1.0]), max([*ratios, 1.0])
    axes.set_xlim(low / 2.5, high * 2.5)
    ticks = [t for t in CHART_TICKS if low / 2.5 <= t <= high * 2.5]
    axes.set_xticks(ticks, [f"{t:g}" for t in ticks])
    axes.minorticks_off()
    axes.set_xlabel("ours relative to the best peer (log scale; right of 1.0: ours better)")
    axes.set_title(f"Benchmarks against Durus 4.3 and ZODB ({bench.get('date', 'undated')})")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path.exists()


# -- the page --------------------------------------------------------------------------------


def number(value: int | float) -> str:
    return f"{value:,}"


def outcome_text(figures: dict[str, Any] | None) -> str:
    if figures is None:
        return "not run"
    parts = [f"{n} {outcome}" for outcome, n in sorted(figures["outcomes"].items())]
    return ", ".join(parts)


def from_template(name: str, **values: str) -> str:
    """One section of the page: descriptive text (below) with the figures filled in."""
    text = TEMPLATES[name]
    for key, value in values.items():
        text = text.replace("{" + key + "}", value)
    assert "{" not in re.sub(r"`[^`]*`", "", text), f"unfilled field in section {name}"
    return text


def section_glance(figures: dict[str, Any]) -> str:
    stateful, crash, cov = figures["stateful"], figures["crash"], figures["coverage"]
    mutants, cross = figures["mutants"], figures["crosshair"]
    lines = ["| check | figure | run |", "|---|---|---|"]
    if stateful:
        lines.append(
            f"| stateful machines | {number(stateful['examples'])} examples in "
            f"{len(stateful['hypothesis_tests'])} Hypothesis tests ({outcome_text(stateful)}) "
            f"| profile `{stateful['profile']}`, {stateful['started']}, "
            f"{stateful['duration_s']:.0f} s |"
        )
    else:
        lines.append("| stateful machines | not run | |")
    points = (crash or {}).get("crash_points")
    if crash and points:
        lines.append(
            f"| crash states of the storage | {number(points['total'])} checked "
            f"({outcome_text(crash)}) | profile `{crash['profile']}`, {crash['started']}, "
            f"{crash['duration_s']:.0f} s |"
        )
    else:
        lines.append("| crash states of the storage | not run | |")
    if mutants and not mutants["total"] and mutants["baseline"]:
        lines.append(f"| mutants caught | none run: baseline {mutants['baseline']} | |")
    elif mutants and mutants["total"]:
        stale = sum(1 for row in mutants["rows"] if row["verdict"] == "stale-patch")
        stale_text = f" ({stale} with a stale patch, see section 4)" if stale else ""
        lines.append(
            f"| mutants caught | {mutants['killed']} of {mutants['total']}{stale_text} | "
            f"baseline: {mutants['baseline'] or 'not run (quick run)'} |"
        )
    else:
        lines.append("| mutants caught | not run | |")
    if cov:
        scope = coverage_scope(figures)
        lines.append(f"| branch coverage of `durus/` | {cov['percent']:.1f}% | {scope} |")
    else:
        lines.append("| branch coverage of `durus/` | not run | |")
    lines.append(
        f"| CrossHair contracts | {crosshair_summary(cross)} | {crosshair_scope(figures)} |"
    )
    bench = figures["bench"]
    bench_text = f"results of {bench.get('date', 'undated')}" if bench else "no results"
    lines.append(f"| benchmarks against the peers | {bench_text} | `nox -s bench` |")
    return "\n".join(lines)


def coverage_scope(figures: dict[str, Any]) -> str:
    run = figures["coverage_run"]
    if figures["run"].get("mode") == "quick":
        scope = "`tests/unit` only (quick run)"
    else:
        scope = "the default test run"
    if run:
        scope += f", {outcome_text(run)}, {run['started']}"
    return scope


def crosshair_summary(cross: dict[str, Any] | None) -> str:
    if cross is None:
        return "not run"
    return (
        f"{cross['confirmed']} proved over all paths, {cross['unrefuted']} without a "
        f"counterexample in the time given, {len(cross['problems'])} counterexamples or errors"
    )


def crosshair_scope(figures: dict[str, Any]) -> str:
    mode = figures["run"].get("mode")
    if figures["crosshair"] is None or mode is None:
        return ""
    seconds = CROSSHAIR_CONDITION_S.get(mode, "?")
    return f"{seconds} s of CPU per condition"


def section_stateful(figures: dict[str, Any]) -> str:
    stateful = figures["stateful"]
    if stateful is None:
        return from_template("stateful", table="The stateful machines were not run.")
    lines = ["| test | outcome | examples | machine runs | s |", "|---|---|---:|---:|---:|"]
    for nodeid, outcome, examples, runs, seconds in stateful["hypothesis_tests"]:
        name = nodeid.removeprefix("tests/stateful/")
        lines.append(f"| `{name}` | {outcome} | {number(examples)} | {runs} | {seconds:.0f} |")
    lines.append(
        f"| **all** | {outcome_text(stateful)} | **{number(stateful['examples'])}** | | "
        f"{stateful['duration_s']:.0f} |"
    )
    return from_template("stateful", table="\n".join(lines))


def section_crash(figures: dict[str, Any]) -> str:
    crash = figures["crash"]
    points = (crash or {}).get("crash_points")
    if not crash or not points:
        return from_template("crash", table="The crash tests were not run.")
    lines = ["| crash states | test |", "|---:|---|"]
    for label, count in sorted(points["by_label"].items(), key=lambda item: -item[1]):
        lines.append(f"| {number(count)} | {label} |")
    lines.append(f"| **{number(points['total'])}** | total, `[other]` lines not included |")
    summary = (
        f"Last run: profile `{crash['profile']}`, {crash['started']}, "
        f"{crash['duration_s']:.0f} s; tests: {outcome_text(crash)}."
    )
    return from_template("crash", table=summary + "\n\n" + "\n".join(lines))


def section_mutants(figures: dict[str, Any]) -> str:
    mutants = figures["mutants"]
    if mutants and not mutants["total"] and mutants["baseline"]:
        text = f"No mutant was run: the unmutated suite did not pass ({mutants['baseline']})."
        return from_template("mutants", table=text)
    if not mutants or not mutants["total"]:
        return from_template("mutants", table="The mutants were not run.")
    lines = ["| mutant | file | what it breaks | verdict | caught by |", "|---|---|---|---|---|"]
    for row in mutants["rows"]:
        detail = row["detail"].replace("|", "\\|")
        caught = f"`{detail}`" if row["verdict"] == "killed" and "::" in detail else detail
        lines.append(
            f"| `{row['name']}` | `{row['file']}` | {row['what'].replace('|', '/')} "
            f"| {row['verdict']} | {caught} |"
        )
    baseline = mutants["baseline"] or "not run in this run (quick)"
    summary = (
        f"{mutants['killed']} of {mutants['total']} mutants caught. "
        f"Unmutated suite (baseline): {baseline}."
    )
    stale = sum(1 for row in mutants["rows"] if row["verdict"] == "stale-patch")
    if stale:
        summary += (
            f" {stale} patch(es) no longer apply because the code under them changed: "
            "those mutants test nothing until tools/mutants.py is updated."
        )
    return from_template("mutants", table=summary + "\n\n" + "\n".join(lines))


def section_coverage(figures: dict[str, Any]) -> str:
    cov = figures["coverage"]
    if cov is None:
        return from_template("coverage", table="Coverage was not measured.")
    lines = [
        f"{cov['percent']:.1f}% of the statements and branches of `durus/` "
        f"({number(cov['statements'])} statements, {number(cov['branches'])} branches, "
        f"{cov['files']} files), measured over {coverage_scope(figures)}.",
        "",
        "The five files with the lowest coverage:",
        "",
        "| file | covered |",
        "|---|---:|",
    ]
    lines += [f"| `{name}` | {percent:.1f}% |" for name, percent in cov["lowest"]]
    return from_template("coverage", table="\n".join(lines))


def section_crosshair(figures: dict[str, Any]) -> str:
    cross = figures["crosshair"]
    if cross is None:
        return from_template("crosshair", table="CrossHair: not run.")
    targets = figures["run"]["steps"].get("crosshair", {}).get("targets", [])
    text = f"Last run ({crosshair_scope(figures)}): {crosshair_summary(cross)}."
    if targets:
        text += " Checked: " + ", ".join(f"`{target}`" for target in targets) + "."
    if cross["problems"]:
        text += "\n\n```text\n" + "\n".join(cross["problems"]) + "\n```"
    return from_template("crosshair", table=text)


def section_bench(figures: dict[str, Any], chart_drawn: bool) -> str:
    bench = figures["bench"]
    rows = bench_rows(bench)
    if not rows:
        return from_template(
            "bench", table="No benchmark results (bench/results/latest.json): chart omitted."
        )
    assert bench is not None
    lines = []
    if chart_drawn:
        lines += ["![ours relative to the best peer](bench-ratios.png)", ""]
    else:
        lines += [f"(The chart, {CHART_NOTE}, was not drawn: matplotlib is missing.)", ""]
    lines += [
        f"Results of {bench.get('date', 'an undated run')} "
        f"({number(bench.get('objects', 0))} objects, {bench.get('rounds', '?')} round(s)).",
        "",
        "| workload | figure | ours / best peer |",
        "|---|---|---:|",
    ]
    lines += [
        f"| {label.split(': ')[0]} | `{label.split(': ')[1]}` | {r:.2f} |" for label, r in rows
    ]
    return from_template("bench", table="\n".join(lines))


MODE_NAMES = {"quick": "quick run", "thorough": "full run"}


def render(figures: dict[str, Any], generated_at: str, chart_drawn: bool) -> str:
    """The whole page; pure (no files read or written)."""
    mode = MODE_NAMES.get(figures["run"].get("mode"), "no run recorded")
    page = [
        from_template("header", generated_at=generated_at, mode=mode),
        section_glance(figures),
        from_template("spec"),
        section_stateful(figures),
        section_crash(figures),
        section_mutants(figures),
        section_coverage(figures),
        section_crosshair(figures),
        from_template("elsewhere"),
        section_bench(figures, chart_drawn),
    ]
    text = "\n\n".join(part.strip("\n") for part in page) + "\n"
    assert "```python" not in text, "the docs test would run a python block of this page"
    return text


def write_page(
    reports: Path = REPORTS,
    page: Path = PAGE,
    chart: Path | None = CHART,
    bench_results: Path = BENCH_RESULTS,
    generated_at: str | None = None,
) -> str:
    """Collect, draw the chart (if a path is given and there are results), write the page."""
    figures = collect(reports, bench_results)
    drawn = bool(
        chart is not None and bench_rows(figures["bench"]) and draw_chart(figures["bench"], chart)
    )
    text = render(figures, generated_at or utc_now(), drawn)
    page.write_text(text, encoding="utf-8")
    assert page.read_text(encoding="utf-8") == text
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="ci profiles, sampled scope")
    parser.add_argument("--render-only", action="store_true", help="write the page, run nothing")
    parser.add_argument("--only", nargs="+", metavar="STEP", help="redo these steps, keep others")
    options = parser.parse_args(argv)
    if not options.render_only:
        run_all("quick" if options.quick else "thorough", options.only)
    write_page()
    print(f"report: wrote {PAGE.relative_to(ROOT)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
