"""`hexzd bench selfplay` end to end on a small board: every row measured, both baselines, memory stated."""

import json

import pytest
from click.testing import CliRunner

from hexzd.benchmarks import selfplay
from hexzd.cli import main

pytestmark = pytest.mark.e2e  # daemons and processes: `pytest -m e2e`


def test_bench_selfplay_reports_each_backend_and_shape_with_both_baselines():
    result = CliRunner().invoke(main, ["bench", "selfplay", "--size", "4", "--seconds", "0.3", "--json"])
    assert result.exit_code == 0, result.output
    r = json.loads(result.output)
    assert {(row["blocks"], row["channels"]) for row in r["rows"]} == set(selfplay.SHAPES)
    for row in r["rows"]:
        assert row["evals_per_s"] > 0 and row["positions_per_s"] > 0 and row["synthetic_per_s"] > 0
        assert row["of_synthetic"] == row["evals_per_s"] / row["synthetic_per_s"]
        assert sorted(row["of_synthetic_rounds"])[len(row["of_synthetic_rounds"]) // 2] == row["of_synthetic"]
        assert 1 <= row["batch"] <= selfplay.BATCH
    assert r["zero_cost_per_core"] > 0
    threads = r["threads"]
    assert threads["one_per_s"] > 0 and threads["all_per_s"] > 0
    for hop in r["hop_us"].values():  # the process hop checks its server's answers itself
        assert hop["cpu_us"] > 0 and 0 < hop["wall_us"] < 1e6


def test_a_deeper_search_holds_more_memory_per_game():
    """Trees grow with the simulations: at 800 a game holds several times what it holds at 64."""
    shallow, deep = (selfplay.bytes_per_game(5, sims, games=4, moves=3) for sims in (64, 800))
    # A 5x5 tree's node and edge arrays alone: at least a node and 26 edges (18 bytes each) per simulation.
    assert deep >= 800 * 26 * 18 > shallow
