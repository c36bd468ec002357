"""Perfect play as the reference ladder's top rung: checked against the plain-Python
solver of tests/solver.py, which shares no code with hexzd, in a real state file."""

import sqlite3
import time

import numpy as np
import pytest
from solver import to_play_of, winner, winning_moves, wins
from states import play_stored

from hexzd import store
from hexzd.config import Config, parse
from hexzd.evaluation import scale
from hexzd.evaluation.perfect import PerfectPlayer
from hexzd.game.notation import parse_trmph
from hexzd.game.rules import Games
from hexzd.store.writes import RESULTS_SQL


def random_positions(n: int, count: int, stones: tuple[int, int], seed: int) -> list[tuple]:
    """Distinct undecided positions (cells as tests/solver.py has them), with stones[0] to stones[1] stones."""
    rng, found = np.random.default_rng(seed), set()
    while len(found) < count:
        cells = [0] * (n * n)
        for ply, cell in enumerate(rng.permutation(n * n)[: rng.integers(stones[0], stones[1] + 1)]):
            cells[cell] = 1 + ply % 2
        if not winner(tuple(cells), n):
            found.add(tuple(cells))
    return sorted(found)


def hexzd_games(n: int, positions: list[tuple]) -> Games:
    """The positions as hexzd's games: each played from the empty board, Black's stones first."""
    games = Games.new(len(positions), n)
    for b, cells in enumerate(positions):
        black = [i for i, c in enumerate(cells) if c == 1]
        white = [i for i, c in enumerate(cells) if c == 2]
        for ply in range(len(black) + len(white)):
            moves = np.full(games.batch, -1, np.int64)
            moves[b] = (black if ply % 2 == 0 else white)[ply // 2]
            games.play(moves)
    return games


@pytest.mark.parametrize("n, stones", [(3, (0, 7)), (4, (7, 11))])  # the plain solver is slow on emptier 4x4s
def test_the_perfect_player_keeps_every_win(n, stones):
    positions = random_positions(n, 60, stones, seed=n)
    moves = PerfectPlayer(n).moves(hexzd_games(n, positions))
    won = 0
    for cells, move in zip(positions, moves):
        assert cells[move] == 0
        good = winning_moves(cells, n, to_play_of(cells))
        if good:
            won += 1
            assert move in good, (cells, move, good)
    assert 10 <= won < len(positions)  # both kinds of position were tried


def perfect_match(db, candidate_sims: int, pairs: int) -> int:
    with sqlite3.connect(db) as c:
        return c.execute(
            "INSERT INTO duels (kind, candidate_id, sims, opponent_id, opponent_sims, pairs, started_at,"
            " opponent_engine) VALUES ('rating', NULL, ?, NULL, 0, ?, ?, ?)",
            (candidate_sims, pairs, time.time(), scale.PERFECT),
        ).lastrowid


def test_a_rating_match_against_perfect_play_loses_every_game_perfect_play_holds(tmp_path):
    n, db = 3, tmp_path / "run.sqlite"
    store.prepare(db)
    config = Config.model_validate({"game": {"board_size": n}, "duel": {"pairs": 2}, "ratings": {"references": [4]}})
    games, end = play_stored(db, perfect_match(db, 4, pairs=5), config)
    assert (end.result, end.wins + end.losses) == ("played", 10) and len(games) == 10
    assert len({(moves, colour) for _, moves, _, colour in games}) == 10  # every game distinct
    for _, moves, won_by, colour in games:
        cells, perfect = [0] * (n * n), 3 - colour
        for action in parse_trmph(moves, n):
            if to_play_of(cells) == perfect and wins(tuple(cells), n, perfect):
                assert won_by == perfect, moves  # from a won position perfect play never lets go
                break
            cells[action] = to_play_of(cells)
    with sqlite3.connect(db) as c:
        results = c.execute(RESULTS_SQL).fetchall()
    rated = {row[0]: row for row in scale.rate(results, [4], perfect=True)}
    assert rated["perfect"][1:3] == (None, 0) and rated["perfect"][6] == 10
    assert rated["perfect"][3] > 0  # above rollouts @4, the anchor, which it never lost to more than it won


def test_perfect_play_tops_the_ladder_and_is_always_the_opponent():
    refs = [100, 200]
    assert scale.ladder_match(refs, {}, 1, perfect=True) == scale.Pairing(None, 200, None, 100)
    played = {(200, 100): 2}
    assert scale.ladder_match(refs, played, 1, perfect=True) == scale.Pairing(None, 200, None, 0, scale.PERFECT)
    assert scale.ladder_match(refs, played | {(200, scale.PERFECT): 2}, 1, perfect=True) is None
    assert scale.ladder_match(refs, played, 1) is None  # without it the ladder is complete
    results = [(None, 200, None, 100, 12, 20), (None, 200, None, 0, 2, 20, scale.PERFECT), (1, 64, None, 200, 15, 20)]
    s = scale.scale(results, refs, [(1, 64)], perfect=True)
    assert scale.PERFECT in s.ladder.players and s.sides[scale.PERFECT] == (None, 0, scale.PERFECT)
    for games in (2, 200):  # whichever match is chosen, perfect play is never the candidate side
        match = scale.next_match(s, refs, [1], 64, games, {}, 50.0, perfect=True)
        assert match.candidate_id is not None or match.sims in refs
    # A snapshot far above the rollouts learns most from perfect play, at even odds.
    even = [(None, 200, None, 100, 15, 20), (None, 200, None, 0, 1, 400, scale.PERFECT), (1, 64, None, 200, 40, 40)]
    s = scale.scale(even, refs, [(1, 64)], perfect=True)
    assert scale.next_match(s, refs, [1], 64, 8, {}, 50.0, perfect=True) == scale.Pairing(1, 64, None, 0, "perfect")


def test_perfect_play_joins_the_ladder_only_on_boards_the_solver_takes():
    assert scale.has_perfect(5, swap=False)
    assert not scale.has_perfect(6, swap=False) and not scale.has_perfect(5, swap=True)
    assert not scale.has_perfect(4, swap=False, wanted=False)


def test_perfect_is_not_an_engine_name():
    with pytest.raises(ValueError, match="config.toml:2: ratings.engines: Value error, engine name 'perfect' is taken"):
        parse('[ratings]\nengines = { perfect = "mohex" }\n')
