"""Differential test: hexzd's engine against OpenSpiel's `hex`, move by move."""

import numpy as np
import pytest

from hexzd.game.rules import BLACK, WHITE, Games

pyspiel = pytest.importorskip("pyspiel")

SIZES = range(2, 14)
GAMES_PER_CASE = 210  # 12 sizes x 2 swap settings x 210 = 5,040 games


def spiel_game(n, swap):
    return pyspiel.load_game("hex", {"board_size": n, "swap": swap})


@pytest.mark.parametrize("swap", [False, True])
@pytest.mark.parametrize("n", SIZES)
def test_random_games_match_openspiel(n, swap):
    rng = np.random.default_rng(1000 * n + swap)
    game = spiel_game(n, swap)
    states = [game.new_initial_state() for _ in range(GAMES_PER_CASE)]
    ours = Games.new(GAMES_PER_CASE, n, swap)
    nn = n * n
    while True:
        legal = ours.legal()
        moves = np.full(GAMES_PER_CASE, -1)
        for b, state in enumerate(states):
            assert state.is_terminal() == ours.done[b], f"game {b} ply {ours.ply[b]}"
            if state.is_terminal():
                returns = state.returns()
                assert ours.winner[b] == (BLACK if returns[0] > 0 else WHITE)
                continue
            expected = np.zeros(nn + 1, bool)
            expected[state.legal_actions()] = True
            assert np.array_equal(legal[b], expected), f"{n}x{n} game {b} ply {ours.ply[b]}"
            assert state.current_player() == ours.to_play[b] - 1
            moves[b] = rng.choice(state.legal_actions())
            state.apply_action(int(moves[b]))
        if (moves < 0).all():
            break
        ours.play(moves)
    assert ours.done.all()


def test_swap_takes_the_transposed_cell_like_openspiel():
    n = 5
    state = spiel_game(n, True).new_initial_state()
    ours = Games.new(1, n, swap=True)
    for a in (7, n * n):  # c2 (row 1, column 2), then swap
        state.apply_action(a)
        ours.play([a])
    spiel_board = str(state).replace(" ", "").replace("\n", "")
    assert ours.board[0, 2 * n + 1] == WHITE  # b3: row 2, column 1
    assert (ours.board != 0).sum() == 1
    assert spiel_board[2 * n + 1] == "o"
