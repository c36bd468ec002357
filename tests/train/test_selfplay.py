"""Self-play's finished games, checked by OpenSpiel: legal moves, right winner, sound policies."""

import numpy as np
import pytest

from hexzd.config import SelfplayConfig
from hexzd.game.notation import parse_trmph
from hexzd.game.records import GameRecord, decode_policy
from hexzd.nn.inference import make_evaluator
from hexzd.nn.loader import Network
from hexzd.nn.net import NetSpec
from hexzd.train.selfplay import SelfPlay

pyspiel = pytest.importorskip("pyspiel")


def openspiel_winner(n: int, actions: list[int]) -> int:
    """Replays the moves in OpenSpiel; 1 if Black won, 2 if White (every move must be legal there)."""
    state = pyspiel.load_game("hex", {"board_size": n}).new_initial_state()
    for action in actions:
        assert action in state.legal_actions()
        state.apply_action(action)
    assert state.is_terminal()
    return 1 if state.returns()[0] > 0 else 2


@pytest.mark.parametrize(
    "network, threads", [(False, 1), (True, 1), (True, 2)], ids=["rollouts", "network", "network-2-threads"]
)
def test_finished_games_are_legal_and_scored_as_openspiel_scores_them(network, threads):
    n = 4
    games = SelfPlay(SelfplayConfig(batch=6, groups=3, sims=12, threads=threads), n, swap=False, seed=3)
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


def play(games: SelfPlay, networks: list, moves: int) -> list[tuple[GameRecord, int, float, int]]:
    """Plays `moves` moves with networks[i] for move i; the finished games with the move each ended on."""
    finished = []
    for i in range(moves):
        games.network = networks[i]
        finished += [(record, evals, seconds, i) for record, evals, seconds in games.move()]
    games.close()
    return finished


@pytest.mark.timeout(60)
@pytest.mark.parametrize("gumbel", [False, True], ids=["puct", "gumbel"])
def test_one_simulation_per_move_with_a_network_still_plays_games(gumbel):
    # A fresh root's first simulation only expands it: a move needs a second.
    n = 3
    games = SelfPlay(SelfplayConfig(batch=4, groups=2, sims=1, gumbel=gumbel), n, swap=False, seed=5)
    network = Network(7, make_evaluator(NetSpec(n, 1, 8).build(), backend="eager").evaluate)
    finished = play(games, [network] * 40, 40)
    assert len(finished) >= 8  # a 3x3 game lasts at most 9 moves; every game moves every time
    for record, evals, seconds, _ in finished:
        actions = parse_trmph(record.moves, n)
        assert openspiel_winner(n, actions) == record.winner
        assert record.model_id == 7 and record.sims == 1
        assert evals >= len(actions) and seconds > 0


@pytest.mark.timeout(120)
def test_a_game_is_stamped_with_the_model_that_made_most_of_its_moves():
    # The worker promotes a new best mid-game: rollouts, then model 1, then model 2.
    n, sims = 4, 4
    games = SelfPlay(SelfplayConfig(batch=8, groups=2, sims=sims), n, swap=False, seed=11)
    one = Network(1, make_evaluator(NetSpec(n, 1, 8).build(), backend="eager").evaluate)
    two = Network(2, make_evaluator(NetSpec(n, 1, 8).build(), backend="eager").evaluate)
    networks = [None] * 2 + [one] * 8 + [two] * 14
    finished = play(games, networks, len(networks))
    stamped_late = 0
    for record, evals, _seconds, last in finished:
        length = len(record.actions)
        # Every game in flight plays a move at every call: this one played at calls last-length+1 .. last.
        used = [net.model_id if net else None for net in networks[last - length + 1 : last + 1]]
        most = max(set(used), key=lambda m: (used.count(m), max(i for i, u in enumerate(used) if u == m)))
        assert record.model_id == most, (used, record.model_id)
        assert evals == sims * sum(u is not None for u in used)
        stamped_late += most != used[-1]
    assert stamped_late >= 2  # games whose last moves were not their majority model's


@pytest.mark.parametrize("share", [0.0, 1.0])
def test_random_first_moves_open_on_every_cell_and_keep_the_search_policy(share):
    """With the whole share, first moves are uniform over the cells (a chi-square test);
    the empty board's policy target is still the search's visit distribution."""
    n, games = 3, 450
    config = SelfplayConfig(  # PUCT: the search's own choice is its most visited move
        sims=32, batch=games, groups=1, temperature_moves=0, random_first_moves=share, gumbel=False
    )
    play = SelfPlay(config, n, swap=False, seed=4)
    search = play.groups[0].search
    search.run(32)
    visits_first = search.visits()[:, : n * n].argmax(axis=1)
    play.groups[0].finish_move(32, None, 0)
    group = play.groups[0]
    first = np.array([a[0] for a in group.actions])
    counts = np.bincount(first, minlength=n * n)
    chi2 = ((counts - games / (n * n)) ** 2 / (games / (n * n))).sum()
    if share == 1.0:
        assert chi2 < 26.1  # the 99.9% point of chi-square with 8 degrees of freedom
    else:
        assert (first == visits_first).all()  # the search's own choice: its most visited move
    policy = np.array([p[0] for p in group.policies])
    assert np.allclose(policy.sum(axis=1), 1.0) and (policy.argmax(axis=1) == visits_first).all()


@pytest.mark.parametrize("network", [False, True], ids=["rollouts", "network"])
def test_a_new_batch_shape_plays_the_games_in_flight_out(network):
    """No game is thrown away: each old slot finishes its game, then the old groups go."""
    n = 3
    games = SelfPlay(SelfplayConfig(batch=5, groups=2, sims=4), n, swap=False, seed=2)
    if network:
        games.network = Network(1, make_evaluator(NetSpec(n, 1, 8).build(), backend="eager").evaluate)
    games.move()  # every game now has a stone: none is at its start
    old = games.groups
    in_flight = {(id(g), b): list(g.actions[b]) for g in old for b in range(5)}
    games.apply(SelfplayConfig(batch=3, groups=1, sims=4))
    assert games.settling and len(games.groups) == 1
    finished = []
    while games.settling:
        finished += games.move()
    games.close()
    games_played = [parse_trmph(r.moves, n) for r, _, _ in finished]
    for begun in in_flight.values():  # each game in flight ended, as it had begun
        assert any(moves[: len(begun)] == begun for moves in games_played)
    assert not any(g in games.groups for g in old) and len(finished) >= len(in_flight)
    for record, _, _ in finished:
        assert openspiel_winner(n, parse_trmph(record.moves, n)) == record.winner
