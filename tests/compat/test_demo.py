"""examples/demo.py prints the same thing under our package and under Durus 4.3."""

from __future__ import annotations

import pytest

from tests.compat import harness

DEMO = harness.REPO_ROOT / "examples" / "demo.py"
DEMO_TIMEOUT_S = 60.0


def run_demo(side: harness.Side, cwd, *args: str) -> str:
    """The demo's stdout; stderr may hold log lines (Durus 4.3 logs every commit)."""
    env = dict(side.env)
    if side.name != "ours":
        env.pop("PYTHONPATH", None)  # nothing from this checkout, not even tests/compat
    runner = harness.Side(side.name, side.python, env)
    result = runner.run_script(DEMO, *args, cwd=cwd, timeout_s=DEMO_TIMEOUT_S)
    assert result.returncode == 0, f"{side.name}: demo failed:\n{result.stderr[-3000:]}"
    return result.stdout


def test_demo_same_output_in_temp_dir(sides, tmp_path):
    outputs = {name: run_demo(side, tmp_path) for name, side in sides.items()}
    assert outputs["ours"] == outputs["peer"]
    assert "Reopened from the file" in outputs["ours"]
    assert "BTree holds 3 accounts; 'dave' in it: False" in outputs["ours"]
    assert list(tmp_path.iterdir()) == [], "the demo left files behind"


@pytest.mark.parametrize("side_name", ["ours", "peer"])
def test_demo_with_path_argument(side_name, sides, tmp_path):
    path = tmp_path / "bank.durus"
    output = run_demo(sides[side_name], tmp_path, str(path))
    assert path.exists()
    assert output == run_demo(sides[side_name], tmp_path, str(tmp_path / "other.durus"))
    result = sides[side_name].run_script(DEMO, str(path), cwd=tmp_path, timeout_s=DEMO_TIMEOUT_S)
    assert result.returncode == 2 and "exists" in result.stderr
