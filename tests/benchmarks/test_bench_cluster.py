"""`hexzd bench cluster`: what it pushes into the daemon's ingest is real Hex, and the command runs.

The ingest measurement pushes synthetic games: each must be a whole legal game by
OpenSpiel's Hex, with the winner OpenSpiel says, and carry a visit distribution per
move of the real size, or the figure would time something the daemon never takes.
"""

import json
import subprocess
import sys

import numpy as np
import pytest

from hexzd.benchmarks.cluster import VISITED, _synthetic_games
from hexzd.daemon import messages as m
from hexzd.game.notation import parse_trmph
from hexzd.game.records import decode_policy

pyspiel = pytest.importorskip("pyspiel")


@pytest.mark.parametrize("n", [9, 19])
def test_the_ingests_synthetic_games_are_whole_games_of_hex_by_openspiel(n):
    frames = _synthetic_games(n, 70)
    assert len(frames) == 70 and len({m.decode(f).uid for f in frames}) == 70
    for frame in frames[::7]:
        game = m.decode(frame)
        state = pyspiel.load_game("hex", {"board_size": n}).new_initial_state()
        actions = parse_trmph(game.moves, n)
        for action in actions:
            assert action in state.legal_actions()
            state.apply_action(action)
        assert state.is_terminal() and game.winner == (1 if state.returns()[0] > 0 else 2)
        policies = decode_policy(game.policy, game.length, n)
        assert game.length == len(actions)
        assert np.allclose(policies.sum(1), 1.0, atol=1e-2)  # float16, as self-play's
        assert ((policies > 0).sum(1) <= VISITED).all()
        assert (policies[np.arange(len(actions)), actions] > 0).all()  # each move played is one searched


@pytest.mark.slow  # a minute: two daemons and a Ray instance; the figures are the lead's to measure
@pytest.mark.e2e
def test_bench_cluster_runs_end_to_end():
    pytest.importorskip("ray", reason="the cluster extra: pip install 'hexzd[cluster]'")
    done = subprocess.run(
        [sys.executable, "-m", "hexzd", "bench", "cluster", "--size", "5", "--seconds", "3", "--json"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    rounds = result["selfplay"]["rounds"]
    assert len(rounds["local"]) == len(rounds["ray"]) == 3 and min(rounds["local"] + rounds["ray"]) > 0
    assert {int(n) for n in result["ingest"]} == {9, 19}
    assert all(i["games"] == 2000 and i["games_per_s"] > 0 for i in result["ingest"].values())
