"""`bench engine` and `bench mcts`: every row is measured and reported, and the baselines do the work they claim."""

import pytest

pytest.importorskip("pyspiel", reason="the baselines are OpenSpiel's: pip install 'hexzd[bench]'")

from hexzd.benchmarks import mcts, rules  # noqa: E402

pytestmark = pytest.mark.e2e  # daemons and processes: `pytest -m e2e`


@pytest.fixture(autouse=True)
def _keep_environment(monkeypatch):
    """run() pins numba and OpenMP to one thread through the environment; undone after each test."""
    monkeypatch.delenv("NUMBA_NUM_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)


def check_rows(result, unit, names):
    assert result["unit"] == unit and result["size"] == 3 and result["batch"] == 256
    assert result["hexzd_per_s"] > 0
    assert [row["name"] for row in result["baselines"]] == names
    for row in result["baselines"]:
        assert row["per_s"] > 0 and row["ratio"] == pytest.approx(result["hexzd_per_s"] / row["per_s"])
    head = result["baselines"][0]  # the headline
    assert (result["baseline"], result["baseline_per_s"]) == (head["name"], head["per_s"])
    assert result["ratio"] == head["ratio"]


def test_engine_reports_the_cpp_and_python_baselines(capsys):
    result = rules.run(size=3, seconds=0.2)
    names = [f"OpenSpiel C++ RandomRolloutEvaluator({rules.ROLLOUTS})", "OpenSpiel Python loop, random.choice"]
    check_rows(result, "games/s", names)
    rules.report(result)
    printed = capsys.readouterr().out
    assert all(name in printed for name in names)


def test_one_cpp_call_plays_the_promised_number_of_whole_games():
    rollouts = 7
    bot, game = rules.rollout_bot(5, rollouts, seed=3)
    root = bot.mcts_search(game.new_initial_state())
    # One simulation: the root, evaluated by the mean of `rollouts` results of +1 or -1.
    assert root.explore_count == 1 and not root.children
    wins = (root.total_reward * rollouts + rollouts) / 2
    assert wins == pytest.approx(round(wins)) and 0 <= round(wins) <= rollouts


def test_mcts_reports_each_mctsbot_row(capsys):
    result = mcts.run(size=3, seconds=0.2)
    names = ["MCTSBot UCT c=2, solve=True", "MCTSBot UCT c=2, solve=False", "MCTSBot PUCT c=1.5, solve=True"]
    check_rows(result, "simulations/s", names)
    assert result["sims_per_move"] == mcts.SIMS
    mcts.report(result)
    assert "MCTSBot UCT c=2, solve=False" in capsys.readouterr().out


@pytest.mark.parametrize("solve", [False, True])
def test_mctsbot_counts_the_simulations_it_ran(solve):
    work = mcts.openspiel_search(5, 50, solve=solve)
    counts = [work() for _ in range(30)]  # over a game's end: a fresh game follows
    assert all(1 <= c <= 50 for c in counts)
    # Plain MCTS stops early only at a root with one legal move: a game's last cell, if ever.
    assert solve or counts.count(50) >= len(counts) - 2
