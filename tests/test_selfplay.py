"""Self-play's finished games, checked by OpenSpiel: legal moves, right winner, sound policies."""
import numpy as np
import pytest

from hexzd.config import SelfplayConfig
from hexzd.nn.inference import make_evaluator
from hexzd.nn.net import NetSpec
from hexzd.game.notation import parse_trmph
from hexzd.game.records import decode_policy
from hexzd.train.selfplay import Network, SelfPlay

pyspiel = pytest.importorskip("pyspiel")


def openspiel_winner(n: int, actions: list[int]) -> int:
    """Replays the moves in OpenSpiel; 1 if Black won, 2 if White (every move must be legal there)."""
    state = pyspiel.load_game("hex", {"board_size": n}).new_initial_state()
    for action in actions:
        assert action in state.legal_actions()
        state.apply_action(action)
    assert state.is_terminal()
    return 1 if state.returns()[0] > 0 else 2


@pytest.mark.parametrize("network", [False, True], ids=["rollouts", "network"])
def test_finished_games_are_legal_and_scored_as_openspiel_scores_them(network):
    n = 4
    games = SelfPlay(SelfplayConfig(games=6, groups=2, sims=12), n, swap=False, seed=3)
    if network:
        evaluator = make_evaluator(NetSpec(n, 1, 8).build(), backend="eager")
        games.network = Network(7, evaluator.evaluate)
    finished = []
    while len(finished) < 20:
        finished += games.move()
    games.close()
    for record, evals, seconds in finished:
        actions = parse_trmph(record.moves, n)
        assert openspiel_winner(n, actions) == record.winner
        policy = decode_policy(record.policy, len(actions), n)
        assert np.allclose(policy.sum(axis=1), 1.0, atol=1e-2)
        assert record.model_id == (7 if network else None) and record.sims == 12
        assert evals == (12 * len(actions) if network else 0)
        assert seconds >= 0 and (seconds > 0) == network
