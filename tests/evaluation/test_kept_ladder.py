"""The kept ladder: the reference players' games of one run start the next one's ladder.

Real state files and a real ladder file, written by the daemon's own code
(Daemon._keep_ladder) and checked with plain sqlite3 queries.
"""

import asyncio
import sqlite3

from daemon_run import config_text

from hexzd import store
from hexzd.config import parse
from hexzd.daemon.core import Daemon
from hexzd.evaluation import scale
from hexzd.evaluation.matches import _history
from hexzd.store.writes import RESULTS_SQL


def add_duel(db, sims, opponent_sims, games, candidate=None, engine=None) -> int:
    """A finished rating match with `games` (pair, candidate colour, winner, moves)."""
    with sqlite3.connect(db) as c:
        if candidate is not None:
            c.execute(
                "INSERT INTO models (id, created_at, train_step, positions_seen, samples_trained, params,"
                " flops_per_eval, selfplay_flops, train_flops, wall_seconds, accel_seconds, positions_generated)"
                " VALUES (?, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)",
                (candidate,),
            )
        duel = c.execute(
            "INSERT INTO duels (kind, candidate_id, sims, opponent_id, opponent_sims, started_at, finished_at,"
            " result, opponent_engine, cpu_seconds) VALUES ('rating', ?, ?, NULL, ?, 1, 2, 'played', ?, 5.0)",
            (candidate, sims, opponent_sims, engine),
        ).lastrowid
        c.executemany(
            "INSERT INTO duel_games (duel_id, pair, candidate_colour, winner, moves, created_at)"
            " VALUES (?, ?, ?, ?, ?, 1)",
            [(duel, *g) for g in games],
        )
    return duel


def keep(tmp_path, db, size: int = 5, ladder_file=None) -> list[str]:
    """Starts a daemon's state on `db` as `hexzd start` does, keeping its ladder; returns the
    events it recorded."""
    ladder_file = ladder_file or tmp_path / "ladder.sqlite"
    text = config_text({"[game]": [f"board_size = {size}"], "[ratings]": [f'ladder_file = "{ladder_file}"']})
    config = tmp_path / f"config-{size}.toml"
    config.write_text(text)

    async def start():
        daemon = Daemon(config, db, out=lambda line: None)
        daemon.config = parse(text, config)
        await daemon.open()
        try:
            await daemon._keep_ladder(start=True)
        finally:
            await daemon.store.close()

    store.prepare(db)
    before = len(query(db, "SELECT id FROM events"))
    asyncio.run(start())
    return [message for (message,) in query(db, "SELECT message FROM events ORDER BY id")[before:]]


def query(db, sql, *args):
    with sqlite3.connect(db) as c:
        return c.execute(sql, args).fetchall()


PAIRS = [(0, 1, 1, "a1b2c3"), (0, 2, 1, "a1b2c4"), (1, 1, 2, "c3a1"), (1, 2, 2, "c3a2")]


def test_a_fresh_run_starts_from_the_reference_games_other_runs_kept(tmp_path):
    a, b, c = tmp_path / "a.sqlite", tmp_path / "b.sqlite", tmp_path / "c.sqlite"
    store.prepare(a)
    add_duel(a, 200, 100, PAIRS)
    add_duel(a, 800, 0, [(0, 1, 1, "e5"), (0, 2, 1, "e4")], engine="perfect")
    add_duel(a, 64, 100, [(0, 1, 1, "b2")], candidate=7)  # a snapshot: not a reference
    add_duel(a, 100, 0, [(0, 1, 2, "b3")], engine="mohex")  # an outside engine: never a reference
    assert keep(tmp_path, a) == []  # not fresh: it only keeps its own
    kept = query(tmp_path / "ladder.sqlite", "SELECT sims, opponent_sims, opponent_engine, moves FROM games")
    perfect = [(800, 0, "perfect", "e5"), (800, 0, "perfect", "e4")]
    assert sorted(kept) == sorted([(200, 100, "", g[3]) for g in PAIRS] + perfect)

    events = keep(tmp_path, b)
    assert any("starts from 6 games kept" in e for e in events), events
    # B's results are A's reference games: the same pairings, wins and complete pairs.
    own = {row[:4]: row[4:] for row in query(a, RESULTS_SQL) if row[0] is None and row[6] != "mohex"}
    copied = {row[:4]: row[4:] for row in query(b, RESULTS_SQL)}
    assert copied == own
    # They cost this run nothing, and the ladder's first matches are already played.
    assert query(b, "SELECT SUM(cpu_seconds) FROM duels") == [(None,)]
    rows = query(b, "SELECT sims, opponent_sims, opponent_engine, wins + losses FROM duels")
    played = {(s, e or o): n for s, o, e, n in rows}
    assert scale.ladder_match([100, 200], played, 2) is None
    assert scale.ladder_match([100, 200], played, 3) is not None
    # A new match of the pairing goes on down the openings past the kept pairs, and knows their games.
    new = add_duel(b, 100, 200, [])
    with store.read_only(b) as connection:
        start, seen = _history(store.pairing_games(connection, new), [])
    assert start == 2 and ("a1b2c3", 2) in seen  # colours from the new duel's candidate, rollouts @100

    # B plays one game A had played (one trial, kept once) and one new one.
    add_duel(b, 200, 100, [(2, 1, 1, "a1b2c3"), (2, 2, 2, "d4")])
    keep(tmp_path, b)
    assert query(tmp_path / "ladder.sqlite", "SELECT COUNT(*) FROM games") == [(7,)]
    assert keep(tmp_path, b) == [] and query(tmp_path / "ladder.sqlite", "SELECT COUNT(*) FROM games") == [(7,)]

    events = keep(tmp_path, c)
    assert any("starts from 7 games kept" in e for e in events), events
    assert query(c, "SELECT COUNT(DISTINCT kept_from) FROM duels") == [(2,)]
    # Another board is another ladder: nothing to start from.
    assert keep(tmp_path, tmp_path / "d.sqlite", size=7) == []
    assert query(tmp_path / "d.sqlite", "SELECT COUNT(*) FROM duels") == [(0,)]


def test_a_ladder_file_that_cannot_be_used_is_named_and_the_run_goes_on(tmp_path):
    broken = tmp_path / "ladder.sqlite"
    broken.write_bytes(b"not a database" * 100)
    events = keep(tmp_path, tmp_path / "run.sqlite", ladder_file=broken)
    assert len(events) == 1 and f"the kept ladder {broken} cannot be used" in events[0], events
