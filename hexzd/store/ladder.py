"""The kept ladder: the reference players' games, kept across runs (`[ratings] ladder_file`).

The reference ladder (random-rollout MCTS at fixed simulations, perfect play
on top) is the same players on the same board in every run, so its games
need not be played again in each: a run keeps its own here as it plays them,
and a fresh state file starts with everyone else's (hexzd.daemon.core).
The ladder is then fixed before a run's first snapshot, and its rating games
all go to the snapshots; every run on the machine rates against the same
games, so their scales agree. Versioned like the state file
(hexzd.store.schema.migrate).

One table, `games`: each game of two references, under the `ladder` it
belongs to (board, swap, the reference search: hexzd.evaluation.matches.ladder_key,
so a change to the players starts a new ladder), by the `run` (the state
file's meta `run`) and `duel` that played it. A game already kept with the
same moves and colours is not kept twice: two runs that played it are one
trial, not two.
"""

import sqlite3
import time
from contextlib import closing
from pathlib import Path

from hexzd.store.schema import Kind, open_writable

MIGRATIONS = [
    # 0 -> 1: the first schema.
    """
    CREATE TABLE games (
        ladder TEXT NOT NULL,
        run TEXT NOT NULL,
        duel INTEGER NOT NULL,
        pair INTEGER NOT NULL,
        sims INTEGER NOT NULL,
        opponent_sims INTEGER NOT NULL,
        opponent_engine TEXT NOT NULL,
        candidate_colour INTEGER NOT NULL CHECK (candidate_colour IN (1, 2)),
        winner INTEGER NOT NULL CHECK (winner IN (1, 2)),
        moves TEXT NOT NULL,
        played_at REAL NOT NULL,
        kept_at REAL NOT NULL,
        PRIMARY KEY (run, duel, pair, candidate_colour),
        UNIQUE (ladder, sims, opponent_sims, opponent_engine, candidate_colour, moves)
    );
    """,
]


LADDER = Kind("kept ladder", frozenset({"games"}), tuple(MIGRATIONS))


def _open(path: Path) -> sqlite3.Connection:
    """The kept ladder, created or migrated, in WAL mode: several daemons of a sweep keep games
    at once. StateFileError if it cannot be used (hexzd.store.schema.open_writable)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return open_writable(path, LADDER, timeout=30.0)[0]


def keep(path: Path, ladder: str, run: str, games) -> int:
    """Keeps `games` (duel, pair, sims, opponent sims, opponent engine or '', candidate colour,
    winner, moves, played at) of run `run`; returns how many were new."""
    with closing(_open(path)) as connection:
        before = connection.total_changes
        connection.execute("BEGIN IMMEDIATE")
        connection.executemany(
            "INSERT OR IGNORE INTO games VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(ladder, run, *game, time.time()) for game in games],
        )
        connection.execute("COMMIT")
        return connection.total_changes - before


def kept(path: Path, ladder: str, run: str) -> list[tuple]:
    """The games of `ladder` that runs other than `run` kept, as (run, duel, pair, sims,
    opponent sims, opponent engine or '', candidate colour, winner, moves, played at),
    in the order they were kept."""
    if not path.exists():
        return []
    with closing(_open(path)) as connection:
        return connection.execute(
            "SELECT run, duel, pair, sims, opponent_sims, opponent_engine, candidate_colour, winner, moves, played_at"
            " FROM games WHERE ladder = ? AND run != ? ORDER BY kept_at, run, duel, pair",
            (ladder, run),
        ).fetchall()
