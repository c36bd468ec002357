"""Cell names, trmph strings, the ASCII board, and the engine's input checks."""

import numpy as np
import pytest

from hexzd.game.notation import board_text, cell_name, parse_cell, parse_trmph, to_trmph
from hexzd.game.records import GameRecord, decode_policy
from hexzd.game.rules import BLACK, EMPTY, WHITE, Games, IllegalMove, replay
from hexzd.native import board as kernels


def test_cell_names_follow_hexgui():
    assert cell_name(0, 11) == "a1"
    assert cell_name(11 * 11 - 1, 11) == "k11"
    assert cell_name(1 * 9 + 2, 9) == "c2"
    assert cell_name(81, 9) == "swap"
    assert parse_cell("S19", 19) == 19 * 19 - 1
    assert parse_cell("swap", 5) == 25


@pytest.mark.parametrize("bad", ["z1", "a0", "a20", "f1", "a6", "", "1a", "a 1"])
def test_bad_cell_names_are_refused(bad):
    with pytest.raises(ValueError):
        parse_cell(bad, 5)


def test_trmph_round_trip():
    actions = [0, 12, 24, 25, 6]
    text = to_trmph(actions, 5)
    assert text == "a1c3e5swapb2"
    assert parse_trmph(text, 5) == actions
    with pytest.raises(ValueError):
        parse_trmph("a1zz", 5)


def test_board_text_is_a_rhombus():
    cells = np.zeros(9, np.int8)
    cells[0], cells[4] = BLACK, WHITE
    assert board_text(cells, 3) == "\n".join(
        [
            "  a b c",
            " 1\\X . .\\1",
            "  2\\. O .\\2",
            "   3\\. . .\\3",
            "     a b c",
        ]
    )


def test_illegal_moves_raise_and_leave_the_board_alone():
    games = Games.new(2, 3)
    games.play([4, 0])
    before = games.board.copy()
    for moves in ([4, -1], [-1, 9], [9, -1], [-1, 10]):
        with pytest.raises(IllegalMove):
            games.play(moves)
        assert np.array_equal(games.board, before)


def test_rotation_keeps_edges_with_their_owner():
    n = 3
    planes = np.arange(4 * n * n, dtype=np.float32).reshape(1, 4, n, n)
    policy = np.arange(n * n, dtype=np.float32).reshape(1, n * n)
    rp, rpol = kernels.rotate180(planes, policy)
    assert rp[0, 0, 0, 0] == planes[0, 0, 2, 2]
    assert rpol[0, 0] == policy[0, 8]
    back, back_pol = kernels.rotate180(rp, rpol)
    assert np.array_equal(back, planes) and np.array_equal(back_pol, policy)


def test_features_are_canonical_for_white():
    games = Games.new(1, 3)
    games.play([1])  # Black b1: row 0, column 1; White to move
    planes = games.features()[0]
    # White sees the board transposed with colours swapped: Black's b1 is an
    # opponent stone at row 1, column 0.
    assert planes[1, 1, 0] == 1 and planes[1].sum() == 1
    assert planes[0].sum() == 0 and planes[2].all()


def test_canonical_indices_read_the_planes_by_cell():
    n = 4
    games = Games.new(1, n)
    for action in [1, 6, 9, 14]:
        games.play([action])
        index = kernels.canonical_indices(games.board, games.to_play)[0]
        assert sorted(index) == list(range(n * n))
        planes = games.features()[0].reshape(-1, n * n)
        me, board = games.to_play[0], games.board[0]
        for a in range(n * n):
            assert planes[0, index[a]] == (board[a] == me)
            assert planes[1, index[a]] == (board[a] not in (EMPTY, me))
    games = Games.new(1, n)
    games.play([1])  # Black b1; White sees it at row 1, column 0
    assert kernels.canonical_indices(games.board, games.to_play)[0, 1] == n


def test_records_round_trip_and_reject_corruption():
    n = 3
    actions = [1, 0, 4, 2, 7]  # b1 a1 b2 c1 b3: Black joins top to bottom
    policies = np.eye(n * n + 1, dtype=np.float32)[actions]
    record = GameRecord.from_arrays(n, actions, policies, BLACK)
    assert record.moves == "b1a1b2c1b3"
    positions = record.positions(swap=False)
    assert positions.planes.shape == (5, 4, n, n)
    assert positions.value.tolist() == [1, -1, 1, -1, 1]
    # White's policy is seen transposed: a1 stays a1, c1 becomes a3.
    assert positions.policy[1, 0] == 1 and positions.policy[3, 6] == 1
    assert np.allclose(decode_policy(record.policy, 5, n), policies)
    with pytest.raises(ValueError):
        decode_policy(b"garbage", 5, n)
    with pytest.raises(IllegalMove):
        replay(n, False, [4, 4], np.zeros((2, n * n + 1)))
    with pytest.raises(ValueError):
        GameRecord.from_arrays(n, actions, policies, WHITE).positions(swap=False)
