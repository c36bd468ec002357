"""Duels and rating matches: every pair its own opening, and an SPRT that sees independent pairs.

The openings are checked against a plain-Python enumeration of Hex
positions up to the board's half-turn; the duels are real, on a real state
file, with real players (an untrained network, random-rollout MCTS).
"""

import asyncio
import json
import sqlite3
import time

import numpy as np
import pytest
import solver as reference
from click.testing import CliRunner
from states import add_model, play_stored

from hexzd import store
from hexzd.cli import main
from hexzd.config import Config
from hexzd.evaluation.matches import load_player
from hexzd.evaluation.openings import BALANCE_STEP, Openings, opening, pairing_seed
from hexzd.evaluation.scale import rate
from hexzd.game.rules import BLACK, WHITE, Games
from hexzd.store.writes import Writer


def position(moves, n):
    """The position after `moves` (Black first), as one canonical key up to a half-turn."""
    board = [0] * (n * n)
    for ply, cell in enumerate(moves):
        board[cell] = BLACK if ply % 2 == 0 else WHITE
    return min(tuple(board), tuple(reversed(board)))


@pytest.mark.parametrize("n", [3, 4])
def test_openings_are_each_first_move_then_every_other_position_once(n):
    openings = Openings(n, seed=5)
    lines = [openings[i] for i in range(openings.count)]
    assert sorted(line[0] for line in lines[: n * n]) == list(range(n * n))
    keys = [position(line, n) for line in lines]
    deeper = keys[n * n :]  # every first move, half-turn twins too; after that each position once
    assert len(set(deeper)) == len(deeper), "two openings are the same position, or its half-turn"
    for line in lines:
        assert len(set(line)) == len(line)
        board = position(line, n)
        assert not reference.winner(board, n)
    # Every two-stone position up to the half-turn is there: counted by hand.
    two = {position([b, w], n) for b in range(n * n) for w in range(n * n) if b != w}
    assert {k for k, line in zip(keys, lines) if len(line) == 2} == two
    assert max(len(line) for line in lines) == n * n // 3
    with pytest.raises(IndexError):
        openings[openings.count]
    assert opening(openings, openings.count + 3) == lines[3]


def test_two_stone_openings_come_most_balanced_first_and_replay_from_the_seed():
    n = 5

    def evaluate(planes):
        # A made-up but fixed judge: the further Black's stone from the centre, the surer.
        black = planes[:, 0].reshape(len(planes), -1).argmax(axis=1)
        r, c = np.divmod(black, n)
        return np.zeros((len(planes), n * n), np.float32), (np.abs(r - 2) + np.abs(c - 2)) / 4.0 - 0.5

    openings = Openings(n, seed=1, evaluate=evaluate)
    two = [openings[i] for i in range(n * n, n * n + 200)]
    # The planes are the mover's view; Black is to move after two stones, so plane 0 is Black.
    sureness = [abs((abs(b // n - 2) + abs(b % n - 2)) / 4.0 - 0.5) for b, _ in two]
    steps = [int(s // BALANCE_STEP) for s in sureness]
    assert steps == sorted(steps) and steps[0] == 0
    again = Openings(n, seed=1, evaluate=evaluate)
    assert [again[i] for i in range(n * n + 200)] == [openings[i] for i in range(n * n + 200)]
    other = Openings(n, seed=2, evaluate=evaluate)
    assert [other[i] for i in range(n * n)] != [openings[i] for i in range(n * n)]


def test_a_pairing_has_one_seed_whichever_side_each_player_is_on():
    assert pairing_seed((None, 100), (None, 1000)) == pairing_seed((None, 1000), (None, 100))
    assert pairing_seed((3, 64), (1, 64)) == pairing_seed((1, 64), (3, 64))
    assert pairing_seed((3, 64), (1, 64)) != pairing_seed((3, 64), (1, 32))
    assert pairing_seed((None, 64), (1, 64)) != pairing_seed((1, 64), (1, 64))


def new_duel(db, kind, candidate, sims, opponent, opponent_sims, pairs=None) -> int:
    with sqlite3.connect(db) as c:
        return c.execute(
            "INSERT INTO duels (kind, candidate_id, sims, opponent_id, opponent_sims, pairs, started_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (kind, candidate, sims, opponent, opponent_sims, pairs, time.time()),
        ).lastrowid


def test_a_network_against_itself_never_replays_a_game_and_is_never_promoted(tmp_path):
    """Deterministic players: the same opening would give the same game, so none repeats.
    Under a gate that asks for +100 Elo (the default gate, elo1 0, would promote a copy)."""
    db = tmp_path / "run.sqlite"
    store.prepare(db)
    model = add_model(db, board_size=4)
    strict = {"max_pairs": 40, "pairs": 8, "elo0": 0.0, "elo1": 100.0}
    config = Config.model_validate({"game": {"board_size": 4}, "duel": strict})
    games, end = play_stored(db, new_duel(db, "promotion", model, 4, model, 4), config)
    assert end.result == "rejected"
    by_pair = {}
    for pair, moves, _, _ in games:
        by_pair.setdefault(pair, set()).add(moves)
    seen = [moves for pair in by_pair.values() for moves in pair]
    assert len(seen) == len(set(seen)), "a game of one pair is replayed in another"
    # The same two players meet again in a rating match: it goes on down their list of openings.
    later, _ = play_stored(db, new_duel(db, "rating", model, 4, model, 4, pairs=6), config)
    assert not {m for _, m, _, _ in later} & set(seen)


@pytest.mark.e2e
def test_equal_players_are_promoted_at_most_at_the_rate_alpha(tmp_path):
    """Random-rollout MCTS against itself (equal strength, so Elo 0 = elo0) over many short
    duels: the SPRT promotes at most alpha of them. 100 duels at alpha 0.05: if
    the true rate were alpha, more than 11 promotions would come with probability below
    0.5%. Within a duel no two games are the same."""
    db = tmp_path / "run.sqlite"
    store.prepare(db)
    # A gate at elo0 = 0: equal players sit exactly on H0. (The default gate is milder, elo0 -100
    # and elo1 0, so that a network as good as the best is promoted; the test holds at any elo0.)
    config = Config.model_validate({"game": {"board_size": 5}, "duel": {"pairs": 16, "elo0": 0.0, "elo1": 100.0}})
    promoted, lengths = 0, []
    for d in range(100):
        # One pairing: each duel goes on down its list of openings, with seeds of its own.
        games, end = play_stored(db, new_duel(db, "promotion", None, 16, None, 16), config, seed=1000 * d)
        pairs = {}
        for pair, moves, _, _ in games:
            pairs.setdefault(pair, set()).add(moves)
        moves = [m for pair in pairs.values() for m in pair]
        assert len(moves) == len(set(moves))
        promoted += end.result == "accepted"
        lengths.append(len(games))
    assert promoted <= 11, f"{promoted} of 100 equal duels promoted"
    assert np.mean(lengths) > 4


def test_ratings_without_enough_games_say_so(tmp_path):
    """`hexzd ratings` and the state file's rating_status: a rating from 4 games is no number."""
    db = tmp_path / "run.sqlite"
    store.prepare(db)
    few, many = add_model(db, board_size=4), add_model(db, board_size=4)
    # (candidate, sims, opponent, opponent_sims, candidate wins, games) against the anchor, rollouts @100.
    rows = rate([(few, 64, None, 100, 3, 4), (many, 64, None, 100, 240, 400)], [100])

    async def write():
        writer = Writer(await store.writer(db))
        await writer.begin()
        await writer.replace_ratings(time.time(), rows)
        await writer.commit()
        await writer.close()

    asyncio.run(write())
    table = {
        r["model_id"]: r for r in json.loads(CliRunner().invoke(main, ["ratings", "--db", str(db), "--json"]).output)
    }
    assert table[few]["status"] == "too few games" and table[few]["hi"] - table[few]["lo"] > 300
    assert table[many]["status"] == "rated" and table[many]["hi"] - table[many]["lo"] <= 300
    assert table[None]["status"] == "anchor"
    lines = CliRunner().invoke(main, ["ratings", "--db", str(db)]).output.splitlines()
    row = {line.split("@")[0].strip(): line for line in lines[1:]}
    assert "too few games" in row[f"model {few}"] and "too few games" not in row[f"model {many}"]
    assert f"{table[many]['rating']:.0f}" in row[f"model {many}"]


def test_a_reference_player_is_the_same_whatever_the_runs_search_settings():
    """The reference "rollouts @N" anchors every run's scale and the league's, so a run's [selfplay]
    (Gumbel search, a larger c_puct) must not change how it plays."""
    plain = Config.model_validate({"game": {"board_size": 5}})
    tuned = Config.model_validate({"game": {"board_size": 5}, "selfplay": {"gumbel": True, "c_puct": 4.0}})
    games = Games.new(12, 5)
    rng = np.random.default_rng(0)
    for _ in range(6):  # random positions of 0 to 5 stones
        moves = np.array([rng.choice(np.flatnonzero(row == 0)) for row in games.board])
        moves[rng.random(12) < 0.3] = -1
        games.play(np.where(games.done, -1, moves))
    a = load_player(None, None, 200, plain, seed=3).moves(games)
    b = load_player(None, None, 200, tuned, seed=3).moves(games)
    assert (a == b).all()
