"""The command line, run as a user runs it: a real `hexzd` process."""

import json
import subprocess
import sys

import pytest

pytest.importorskip("pyspiel")


@pytest.mark.e2e
@pytest.mark.parametrize("name,unit", [("engine", "games/s"), ("mcts", "simulations/s"), ("net", "evals/s")])
def test_bench_json_has_the_promised_fields(name, unit):
    out = subprocess.run(
        [sys.executable, "-m", "hexzd", "bench", name, "--size", "5", "--seconds", "0.3", "--json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=240,
    ).stdout
    result = json.loads(out)
    assert result["unit"] == unit and result["size"] == 5
    assert result["hexzd_per_s"] > 0 and result["baseline_per_s"] > 0
    assert result["ratio"] == pytest.approx(result["hexzd_per_s"] / result["baseline_per_s"])
    if name == "net":  # every batch size from 1 to 4096, for the baseline and each backend
        for backend in {r["backend"] for r in result["table"]}:
            assert [r["batch"] for r in result["table"] if r["backend"] == backend] == [2**k for k in range(13)]


def test_bad_size_is_refused_with_a_clear_error():
    run = subprocess.run(
        [sys.executable, "-m", "hexzd", "bench", "engine", "--size", "25"], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 2 and "25" in run.stderr
