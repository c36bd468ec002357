"""Outside HTP engines as rating opponents: real engine processes, a real state file.

The engine nobody here wrote is OpenSpiel's C++ MCTS (tests/openspiel_htp.py);
the broken ones are small scripts that misbehave on purpose. Each finished
game is replayed in OpenSpiel's `hex`, not with hexzd's rules.
"""

import asyncio
import re
import sqlite3
import sys
import time

import numpy as np
import pytest
from states import play_stored

from hexzd import store
from hexzd.config import Config, parse
from hexzd.daemon.scheduler import Scheduler
from hexzd.evaluation import scale
from hexzd.evaluation.engines import EngineFailure, EnginePlayer
from hexzd.evaluation.matches import play_pairs
from hexzd.evaluation.ratings import estimate
from hexzd.game.notation import parse_trmph
from hexzd.game.rules import BLACK, WHITE
from hexzd.search.player import Player
from hexzd.store.writes import RESULTS_SQL, Writer

pyspiel = pytest.importorskip("pyspiel")

OPENSPIEL = f"{sys.executable} tests/openspiel_htp.py --sims 30"


def openspiel_winner(moves: str, n: int) -> int:
    """BLACK or WHITE after replaying a trmph string in OpenSpiel; asserts each move legal and the game over."""
    state = pyspiel.load_game("hex", {"board_size": n}).new_initial_state()
    for action in parse_trmph(moves, n):
        assert action in state.legal_actions(), moves
        state.apply_action(action)
    assert state.is_terminal(), moves
    return BLACK if state.returns()[0] > 0 else WHITE


@pytest.mark.parametrize("n", [3, 4])
def test_an_engine_plays_pairs_against_rollouts_and_every_game_is_won_on_the_board(n):
    engine = EnginePlayer(OPENSPIEL)
    games = []
    try:
        play_pairs(Player(8), engine, n, False, [[0], [n + 1], [n * n - 1]], lambda *g: games.append(g), lambda: False)
    finally:
        engine.close()
    assert sorted(int(b) for b, *_ in games) == list(range(6))
    assert not engine.client.alive
    for b, moves, winner, candidate_colour in games:
        assert candidate_colour == (BLACK if b % 2 == 0 else WHITE)
        assert moves.startswith(("a1", "b2", f"{'abcd'[n - 1]}{n}")[b // 2])
        assert winner == openspiel_winner(moves, n), moves


def rating_match(db, engine: str, pairs: int) -> int:
    """A rating match of rollouts @100 (the first reference) against outside engine `engine`."""
    with sqlite3.connect(db) as c:
        return c.execute(
            "INSERT INTO duels (kind, candidate_id, sims, opponent_id, opponent_sims, pairs, started_at,"
            " opponent_engine) VALUES ('rating', NULL, 100, NULL, 0, ?, ?, ?)",
            (pairs, time.time(), engine),
        ).lastrowid


def engine_config(engines: dict, **duel) -> Config:
    return Config.model_validate(
        {
            "game": {"board_size": 4},
            "duel": {"pairs": 2, **duel},
            "ratings": {"references": [100], "engines": engines, "perfect": False},
        }
    )


def test_a_rating_match_against_an_engine_ends_as_the_engines_rating(tmp_path):
    db = tmp_path / "run.sqlite"
    store.prepare(db)
    config = engine_config({"openspiel": OPENSPIEL})
    games, end = play_stored(db, rating_match(db, "openspiel", pairs=3), config, log_dir=tmp_path)
    assert (end.result, end.wins + end.losses, end.error) == ("played", 6, "")
    assert len(games) == 6 and all(winner == openspiel_winner(moves, 4) for _, moves, winner, _ in games)
    # A second match of the pairing goes on down its openings: no game is played twice.
    later, _ = play_stored(db, rating_match(db, "openspiel", pairs=2), config, log_dir=tmp_path)
    assert not {(m, c) for _, m, _, c in later} & {(m, c) for _, m, _, c in games}
    with sqlite3.connect(db) as c:
        results = c.execute(RESULTS_SQL).fetchall()
    wins = end.wins + sum(w == c for _, _, w, c in later)
    assert [row[:7] for row in results] == [(None, 100, None, 0, wins, 10, "openspiel")]
    lost, split, won = results[0][7:]  # the 5 pairs, each complete
    assert lost + split + won == 5 and split + 2 * won == wins
    rows = {row[0]: row for row in scale.rate(results, [100])}
    assert rows["engine openspiel"][1:3] == (None, 0) and rows["engine openspiel"][6:] == (10, 0)
    assert rows["rollouts @100"][3] == 0.0 and rows["rollouts @100"][7] == 1  # the anchor
    assert (tmp_path / "engine-openspiel.log").exists()


BROKEN = {
    # answers every command with something that is not HTP
    "garbage": "print('hello', end='\\n\\n', flush=True)",
    # plays the first empty cell it was told of, legally, and dies at its 33th genmove
    "dies": (
        "import sys\n"
        "taken, moves = set(), 0\n"
        "for line in sys.stdin:\n"
        "    w = line.split()\n"
        "    if w[0] in ('boardsize', 'clear_board'): taken = set()\n"
        "    if w[0] == 'play': taken.add(w[2])\n"
        "    answer = ''\n"
        "    if w[0] == 'genmove':\n"
        "        moves += 1\n"
        "        if moves == 33: sys.exit(3)\n"
        "        answer = next(c + r for r in '123' for c in 'abc' if c + r not in taken)\n"
        "    print('= ' + answer, end='\\n\\n', flush=True)\n"
    ),
}


def test_a_broken_engine_ends_its_match_early_and_its_games_count(tmp_path):
    db = tmp_path / "run.sqlite"
    store.prepare(db)
    script = tmp_path / "dies.py"
    script.write_text(BROKEN["dies"])
    config = Config.model_validate(
        {"game": {"board_size": 3}, "duel": {"pairs": 1}, "ratings": {"engines": {"bad": f"{sys.executable} {script}"}}}
    )
    games, end = play_stored(db, rating_match(db, "bad", pairs=8), config, log_dir=tmp_path)
    assert end.result == "played" and end.error.startswith("engine bad: the engine exited during `genmove")
    complete = [p for p in {pair for pair, *_ in games} if sum(p == q for q, *_ in games) == 2]
    assert 4 <= len(games) < 16 and end.wins + end.losses == 2 * len(complete) > 0  # only whole pairs count
    assert all(winner == openspiel_winner(moves, 3) for _, moves, winner, _ in games)


@pytest.mark.parametrize(
    "command,why",
    [
        ("no-such-engine-xyz --quiet", "engine bad: cannot start `no-such-engine-xyz --quiet`"),
        ("garbage", "engine bad: `boardsize 4` gave an answer that is not HTP: 'hello'"),
        (None, "engine bad: no longer in [ratings] engines"),
    ],
)
def test_an_engine_that_cannot_play_ends_its_match_at_once(tmp_path, command, why):
    db = tmp_path / "run.sqlite"
    store.prepare(db)
    if command == "garbage":
        (tmp_path / "garbage.py").write_text(f"import sys\nfor line in sys.stdin:\n    {BROKEN['garbage']}\n")
        command = f"{sys.executable} {tmp_path / 'garbage.py'}"
    config = engine_config({"bad": command} if command else {})
    started = time.monotonic()
    games, end = play_stored(db, rating_match(db, "bad", pairs=2), config, log_dir=tmp_path)
    assert (games, end.result, end.wins, end.losses) == ([], "played", 0, 0)
    assert end.error.startswith(why) and time.monotonic() - started < 20


def answering(answer: str) -> str:
    """An engine that answers every genmove with `answer`, and everything else with success."""
    script = (
        f"import sys\nfor line in sys.stdin: print('= {answer}' if 'genmove' in line else '= ', end='\\n\\n');"
        " sys.exit() if line.startswith('quit') else None"
    )
    return f'{sys.executable} -u -c "{script}"'


def test_an_engine_that_moves_illegally_is_broken():
    engine = EnginePlayer(answering("a1"))  # the opening's stone is on a1 already
    try:
        with pytest.raises(EngineFailure, match="^an illegal move 'a1'$"):
            play_pairs(Player(4), engine, 3, False, [[0]], lambda *g: None, lambda: False)
    finally:
        engine.close()


def test_an_engine_that_resigns_loses_that_game():
    engine, games = EnginePlayer(answering("resign")), []
    try:
        play_pairs(Player(4), engine, 3, False, [[0]], lambda *g: games.append(g), lambda: False)
    finally:
        engine.close()
    # Game 0: after the opening's a1 the engine, White, resigns at once. Game 1: the rollouts,
    # White, answer a1, then the engine, Black, resigns: the record is those two moves.
    (b0, moves0, won0, _), (b1, moves1, won1, _) = sorted(games)
    assert (b0, moves0, won0, b1, won1) == (0, "a1", BLACK, 1, WHITE)
    assert len(parse_trmph(moves1, 3)) == 2 and moves1.startswith("a1")


def test_matchmaking_plays_an_unrated_engine_against_references_and_snapshots():
    refs = [100, 200, 400]
    ladder = [(None, 200, None, 100, 120, 200), (None, 400, None, 200, 120, 200)]
    snapshot = [(1, 64, None, 200, 100, 200), (1, 64, None, 400, 100, 200)]
    s = scale.scale(ladder + snapshot, refs, [(1, 64)], ["mohex"])
    assert s.sides["engine mohex"] == (None, 0, "mohex")
    match = scale.next_match(s, refs, [1], 64, 8, {}, 50.0, engines=["mohex"])
    assert match.opponent_engine == "mohex" and (match.opponent_id, match.opponent_sims) == (None, 0)
    assert scale.player(match.candidate_id, match.sims) in ("model 1 @64", *(scale.player(None, r) for r in refs))
    assert scale.next_match(s, refs, [1], 64, 8, {}, 50.0).opponent_engine is None  # none configured: none offered
    # A measured cost is the engine's own kind's.
    costs = scale.seconds_per_game([(None, 100, None, 0, 30.0, 10, "mohex"), (1, 64, None, 100, 1.0, 10, None)])
    rollouts, mohex, model = scale.Kind("rollouts", 100), scale.Kind("engine", engine="mohex"), scale.Kind("model", 64)
    assert costs == {frozenset((rollouts, mohex)): 3.0, frozenset((model, rollouts)): 0.1}


def test_an_engines_rating_sits_where_its_results_put_it():
    """An engine that scores 75% against rollouts @200 rates about 190 Elo above it."""
    refs = [100, 200]
    rows = [(None, 200, None, 100, 640, 1000), (None, 200, None, 0, 250, 1000, "mohex")]
    rated = {row[0]: row for row in scale.rate(rows, refs)}
    ladder = estimate([("rollouts @200", "rollouts @100", 640, 360)], {"rollouts @100": 0.0}, scale.PRIOR_GAMES)
    expected = ladder.ratings()["rollouts @200"].elo + 400 * np.log10(3)
    assert abs(rated["engine mohex"][3] - expected) < 10 and rated["engine mohex"][7] == 0


def test_the_engines_key_is_checked(tmp_path):
    ok = parse('[ratings]\nengines = { mohex = "mohex --use-book=false", six = "six --quiet" }\n')
    assert ok.ratings.engines == {"mohex": "mohex --use-book=false", "six": "six --quiet"}
    assert Config().ratings.engines == {}
    for text, message in (
        ('engines = { "mo hex" = "mohex" }', "config.toml:2: ratings.engines: Value error, engine name 'mo hex'"),
        ('engines = { mohex = "" }', "ratings.engines: Value error, engine mohex: the command line is empty"),
        ('engines = { mohex = "mohex \'--x" }', "engine mohex: No closing quotation"),
        ("engines = { mohex = 3 }", "ratings.engines.mohex: Input should be a valid string"),
    ):
        with pytest.raises(ValueError, match=re.escape(message)):
            parse(f"[ratings]\n{text}\n")
    with pytest.raises(ValueError, match=r"config.toml:4: ratings: Value error, engines play runs without the swap"):
        parse('[game]\nswap = true\n\n[ratings]\nengines = { mohex = "mohex" }\n')


def test_the_scheduler_offers_an_engine_and_rests_it_when_broken_until_its_command_changes(tmp_path):
    db = tmp_path / "run.sqlite"
    store.prepare(db)
    config = [engine_config({"mohex": "mohex --quiet", "six": "six"})]

    async def run():
        writer = Writer(await store.writer(db))
        scheduler = Scheduler(writer, lambda: config[0], lambda: 0.0)
        await writer.begin()
        await scheduler.schedule(best=None)  # one reference, no snapshot: only the engines can play
        await writer.commit()
        assert scheduler.line.startswith("rating 1: rollouts @100 vs engine ")
        assert "not chosen again until its command line" in scheduler.engine_failed("mohex")
        assert scheduler.engines() == ["six"]
        config[0] = engine_config({"mohex": "mohex --quiet --seed 1", "six": "six"})
        assert scheduler.engines() == ["mohex", "six"]
        assert scheduler.engine_failed("gone") == "it is no longer in [ratings] engines"
        await writer.close()

    asyncio.run(run())
    with sqlite3.connect(db) as c:
        row = c.execute("SELECT kind, candidate_id, sims, opponent_id, opponent_sims, opponent_engine FROM duels")
        assert row.fetchall() in ([("rating", None, 100, None, 0, "mohex")], [("rating", None, 100, None, 0, "six")])
