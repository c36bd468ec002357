"""The league file: snapshots of several runs rated on one Elo scale (`hexzd league`).

One SQLite file, written by one `hexzd league` process and read by anyone
(WAL). It copies from each run's state file what a plot needs, so it stands
alone once the runs are gone. Versioned like the state file: MIGRATIONS[k]
takes a file from version k to k + 1 (hexzd.store.schema.migrate), and a
file newer than this code is refused. docs/guides/sweeps-leagues.md ("The
league file") documents every table, column and view.

A player is a snapshot at a simulation count, or a reference (random-rollout
MCTS) at one: its key in hexzd.evaluation.scale is the snapshot's id here
(None for a reference), unique across runs, so the rating code works
unchanged.
"""

import json
import sqlite3
from contextlib import contextmanager
from pathlib import Path

from hexzd.store.reads import rows
from hexzd.store.schema import Kind, open_writable

# The byte at offset i of a blob column `pair`, from its hex digits (SQLite has no blob-to-integer cast).
_HEX_BYTE = (
    "(instr('0123456789ABCDEF', substr(hex(pair), {0} * 2 + 1, 1)) - 1) * 16"
    " + instr('0123456789ABCDEF', substr(hex(pair), {0} * 2 + 2, 1)) - 1"
)

MIGRATIONS = [
    # 0 -> 1: the first schema.
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);

    CREATE TABLE runs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        path TEXT NOT NULL,
        name TEXT NOT NULL UNIQUE,
        first_model_at REAL,
        board_size INTEGER, blocks INTEGER, channels INTEGER,
        added_at REAL NOT NULL,
        checked_at REAL NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('used', 'skipped')),
        reason TEXT
    );

    CREATE TABLE snapshots (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id INTEGER NOT NULL REFERENCES runs(id),
        model_id INTEGER NOT NULL,
        created_at REAL NOT NULL,
        promoted_at REAL,
        train_step INTEGER NOT NULL,
        params INTEGER NOT NULL,
        flops_per_eval INTEGER NOT NULL,
        selfplay_flops REAL NOT NULL,
        train_flops REAL NOT NULL,
        wall_seconds REAL NOT NULL,
        positions_generated INTEGER NOT NULL,
        added_at REAL NOT NULL,
        UNIQUE (run_id, model_id)
    );

    CREATE TABLE matches (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        candidate_id INTEGER REFERENCES snapshots(id),
        sims INTEGER NOT NULL,
        opponent_id INTEGER REFERENCES snapshots(id),
        opponent_sims INTEGER NOT NULL,
        first_opening INTEGER NOT NULL,
        pairs INTEGER NOT NULL,
        started_at REAL NOT NULL,
        finished_at REAL,
        cpu_seconds REAL
    );

    CREATE TABLE games (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        match_id INTEGER NOT NULL REFERENCES matches(id),
        pair INTEGER NOT NULL,
        moves TEXT NOT NULL,
        winner INTEGER NOT NULL CHECK (winner IN (1, 2)),
        candidate_colour INTEGER NOT NULL CHECK (candidate_colour IN (1, 2)),
        created_at REAL NOT NULL,
        UNIQUE (match_id, pair, candidate_colour)
    );

    CREATE TABLE ratings (
        player TEXT NOT NULL,
        snapshot_id INTEGER REFERENCES snapshots(id),
        sims INTEGER NOT NULL,
        rating REAL NOT NULL,
        rating_lo REAL NOT NULL,
        rating_hi REAL NOT NULL,
        games INTEGER NOT NULL,
        anchor INTEGER NOT NULL,
        updated_at REAL NOT NULL,
        UNIQUE (snapshot_id, sims)
    );

    -- As the state file's: wider than +-150 Elo (scale.FIXED_ELO) is "too few games".
    CREATE VIEW rating_status AS
        SELECT r.player, u.name AS run, s.model_id, r.snapshot_id, r.sims, r.rating, r.rating_lo, r.rating_hi,
               r.games, r.anchor, (r.rating_hi - r.rating_lo) / 2 AS half_width,
               CASE WHEN r.anchor THEN 'anchor'
                    WHEN r.rating_hi - r.rating_lo <= 300 THEN 'rated'
                    ELSE 'too few games' END AS status
        FROM ratings r LEFT JOIN snapshots s ON s.id = r.snapshot_id LEFT JOIN runs u ON u.id = s.run_id;

    CREATE VIEW rating_vs_compute AS
        SELECT r.run, u.blocks, u.channels, s.model_id, r.sims, r.rating, r.rating_lo, r.rating_hi, r.games,
               r.status, s.train_step, s.params, s.flops_per_eval, s.selfplay_flops, s.train_flops,
               s.selfplay_flops + s.train_flops AS total_flops, s.wall_seconds, s.positions_generated
        FROM rating_status r JOIN snapshots s ON s.id = r.snapshot_id JOIN runs u ON u.id = s.run_id
        ORDER BY r.run, total_flops;
    """,
    # 1 -> 2: the kept ladder (hexzd.store.ladder): reference games of other runs, copied in as
    # matches of their own, marked with the run (its state file's meta `run`) and duel that played them.
    # Pair numbers stored as numpy int64s, which sqlite3 wrote as 8-byte little-endian blobs, become integers.
    f"""
    ALTER TABLE matches ADD COLUMN kept_from TEXT;
    ALTER TABLE matches ADD COLUMN kept_duel INTEGER;
    UPDATE games SET pair = {" + ".join(f"({_HEX_BYTE.format(i)}) * {256**i}" for i in range(4))}
        WHERE typeof(pair) = 'blob';
    """,
]
VERSION = len(MIGRATIONS)
LEAGUE = Kind("league file", frozenset({"meta", "runs", "snapshots", "matches"}), tuple(MIGRATIONS))

# Aggregated results, as hexzd.evaluation.scale takes them: (candidate, sims, opponent, opponent_sims,
# wins, games, no engine, complete pairs the candidate lost both games of, split, won both).
RESULTS_SQL = """
    WITH pairs AS (SELECT match_id, pair, COUNT(*) AS games, SUM(winner = candidate_colour) AS wins
                   FROM games GROUP BY match_id, pair)
    SELECT m.candidate_id, m.sims, m.opponent_id, m.opponent_sims, SUM(p.wins), SUM(p.games), NULL,
           SUM(p.games = 2 AND p.wins = 0), SUM(p.games = 2 AND p.wins = 1), SUM(p.games = 2 AND p.wins = 2)
    FROM pairs p JOIN matches m ON m.id = p.match_id
    GROUP BY m.candidate_id, m.sims, m.opponent_id, m.opponent_sims
"""

SNAPSHOT_COLUMNS = (
    "model_id",
    "created_at",
    "promoted_at",
    "train_step",
    "params",
    "flops_per_eval",
    "selfplay_flops",
    "train_flops",
    "wall_seconds",
    "positions_generated",
)


def open_league(path) -> sqlite3.Connection:
    """The league file's one writing connection, created or migrated (hexzd.store.schema.open_writable);
    StateFileError if unusable: not a league file, newer than this code, read-only.

    Autocommit: every write below says where its transaction starts and ends."""
    connection, _ = open_writable(path, LEAGUE)
    connection.execute("PRAGMA synchronous = NORMAL")
    connection.execute("PRAGMA foreign_keys = ON")
    return connection


# -- settings ----------------------------------------------------------------


def setting(connection, key: str):
    """A setting fixed when the league began (board_size, references), or None."""
    row = connection.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return json.loads(row[0]) if row else None


def fix_setting(connection, key: str, value) -> None:
    connection.execute("INSERT OR IGNORE INTO meta VALUES (?, ?)", (key, json.dumps(value)))


# -- runs and their snapshots ----------------------------------------------------


def runs(connection) -> list[dict]:
    """Every run the league has seen, in the order it was added."""
    return rows(connection, "SELECT * FROM runs ORDER BY id")


def add_run(connection, path: Path, name: str, at: float) -> int:
    return connection.execute(
        "INSERT INTO runs (path, name, added_at, checked_at, status) VALUES (?, ?, ?, ?, 'skipped')",
        (str(path), name, at, at),
    ).lastrowid


def mark_used(connection, run_id: int, first_model_at: float, shape: tuple[int, int, int], at: float) -> None:
    """A run whose snapshots play: its identity, and its board size, blocks and channels."""
    connection.execute(
        "UPDATE runs SET first_model_at = ?, board_size = ?, blocks = ?, channels = ?, checked_at = ?,"
        " status = 'used', reason = NULL WHERE id = ?",
        (first_model_at, *shape, at, run_id),
    )


def mark_skipped(connection, run_id: int, reason: str, at: float) -> None:
    connection.execute(
        "UPDATE runs SET checked_at = ?, status = 'skipped', reason = ? WHERE id = ?", (at, reason, run_id)
    )


def add_snapshots(connection, run_id: int, snapshots: list[dict], at: float) -> int:
    """Copies the run's snapshots that the league does not have yet; how many were new."""
    before = connection.total_changes
    connection.executemany(
        f"INSERT OR IGNORE INTO snapshots (run_id, {', '.join(SNAPSHOT_COLUMNS)}, added_at)"
        f" VALUES (?, {', '.join('?' * len(SNAPSHOT_COLUMNS))}, ?)",
        [(run_id, *(s[c] for c in SNAPSHOT_COLUMNS), at) for s in snapshots],
    )
    return connection.total_changes - before


def snapshots(connection) -> list[dict]:
    """Every snapshot, with its run's name, path and status, by run then model."""
    return rows(
        connection,
        "SELECT s.id, s.run_id, s.model_id, u.name AS run, u.path, u.status"
        " FROM snapshots s JOIN runs u ON u.id = s.run_id ORDER BY u.id, s.model_id",
    )


# -- matches and games -----------------------------------------------------------


def results(connection) -> list[tuple]:
    return connection.execute(RESULTS_SQL).fetchall()


def ladder_games(connection) -> dict[tuple[int, int], int]:
    """Games between references, by (sims, opponent sims)."""
    counts = connection.execute(
        "SELECT m.sims, m.opponent_sims, COUNT(*) FROM games g JOIN matches m ON m.id = g.match_id"
        " WHERE m.candidate_id IS NULL AND m.opponent_id IS NULL GROUP BY m.sims, m.opponent_sims"
    )
    return {(a, b): n for a, b, n in counts}


def match_times(connection) -> list[tuple]:
    """(candidate_id, sims, opponent_id, opponent_sims, CPU seconds, games) of each match played through."""
    return connection.execute(
        "SELECT m.candidate_id, m.sims, m.opponent_id, m.opponent_sims, m.cpu_seconds, COUNT(g.id)"
        " FROM matches m JOIN games g ON g.match_id = m.id WHERE m.cpu_seconds IS NOT NULL GROUP BY m.id"
    ).fetchall()


PAIRING = """
    (m.candidate_id IS :a AND m.sims = :sa AND m.opponent_id IS :b AND m.opponent_sims = :sb)
    OR (m.candidate_id IS :b AND m.sims = :sb AND m.opponent_id IS :a AND m.opponent_sims = :sa)
"""


def next_opening(connection, a, sims_a: int, b, sims_b: int) -> int:
    """Where the pairing's next match starts on its list of openings: after every earlier match's."""
    row = connection.execute(
        f"SELECT MAX(first_opening + pairs) FROM matches m WHERE {PAIRING}",
        {"a": a, "sa": sims_a, "b": b, "sb": sims_b},
    ).fetchone()
    return row[0] or 0


def pairing_games(connection, a, sims_a: int, b, sims_b: int) -> set[tuple[str, int]]:
    """(moves, colour of player a) of every game the pairing played, either side round."""
    played = connection.execute(
        f"""
        SELECT g.moves, CASE WHEN m.candidate_id IS :a AND m.sims = :sa THEN g.candidate_colour
                             ELSE 3 - g.candidate_colour END
        FROM matches m JOIN games g ON g.match_id = m.id WHERE {PAIRING}""",
        {"a": a, "sa": sims_a, "b": b, "sb": sims_b},
    )
    return {(moves, colour) for moves, colour in played}


def own_ladder_games(connection) -> list[tuple]:
    """(match, pair, sims, opponent sims, '', candidate colour, winner, moves, played at) of every
    game the league itself played between two references, as hexzd.store.ladder.keep takes them."""
    return connection.execute(
        "SELECT m.id, g.pair, m.sims, m.opponent_sims, '', g.candidate_colour, g.winner, g.moves, g.created_at"
        " FROM games g JOIN matches m ON m.id = g.match_id"
        " WHERE m.candidate_id IS NULL AND m.opponent_id IS NULL AND m.kept_from IS NULL"
    ).fetchall()


def add_kept(connection, games, references: list[int], at: float) -> int:
    """Copies the kept ladder's games of other runs (hexzd.store.ladder.kept) that the league has
    not copied before, as one finished match per duel that played them; returns how many.

    Only games between two of the league's references count (perfect play is not in a league).
    A game the league already has, with the same players, moves and colours, is dropped: it
    would be the same trial twice. Pairs keep their numbers, so a pair split across runs never joins."""
    copied = set(connection.execute("SELECT kept_from, kept_duel FROM matches WHERE kept_from IS NOT NULL"))
    players = set(references)
    duels: dict[tuple, list[tuple]] = {}
    for run, duel, pair, sims, opponent_sims, engine, colour, winner, moves, played_at in games:
        if (run, duel) not in copied and not engine and {sims, opponent_sims} <= players:
            duels.setdefault((run, duel, sims, opponent_sims), []).append((pair, moves, winner, colour, played_at))
    count, seen = 0, {}  # seen: (moves, colour) by pairing, read once and kept up to date
    with transaction(connection):
        for (run, duel, sims, opponent_sims), played in duels.items():
            if (sims, opponent_sims) not in seen:
                seen[sims, opponent_sims] = pairing_games(connection, None, sims, None, opponent_sims)
            fresh = [g for g in played if (g[1], g[3]) not in seen[sims, opponent_sims]]
            seen[sims, opponent_sims].update((g[1], g[3]) for g in fresh)
            seen.get((opponent_sims, sims), set()).update((g[1], 3 - g[3]) for g in fresh)  # the other way round
            pairs = [pair for pair, *_ in played]
            match_id = connection.execute(
                "INSERT INTO matches (candidate_id, sims, opponent_id, opponent_sims, first_opening, pairs,"
                " started_at, finished_at, kept_from, kept_duel) VALUES (NULL, ?, NULL, ?, ?, ?, ?, ?, ?, ?)",
                (sims, opponent_sims, min(pairs), max(pairs) - min(pairs) + 1, at, at, run, duel),
            ).lastrowid  # a match even when every game repeats, so the duel is not looked at again
            connection.executemany(
                "INSERT INTO games (match_id, pair, moves, winner, candidate_colour, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                [(match_id, *game) for game in fresh],
            )
            count += len(fresh)
    return count


def new_match(connection, pairing, first_opening: int, pairs: int, at: float) -> int:
    """pairing: (candidate_id, sims, opponent_id, opponent_sims), as hexzd.evaluation.scale.Pairing."""
    return connection.execute(
        "INSERT INTO matches (candidate_id, sims, opponent_id, opponent_sims, first_opening, pairs, started_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (*pairing, first_opening, pairs, at),
    ).lastrowid


def add_pair(connection, match_id: int, games: list[tuple[int, str, int, int]], at: float) -> None:
    """Both games of a pair, (pair, moves, winner, candidate colour), in one transaction: a pair is whole or absent."""
    with transaction(connection):
        connection.executemany(
            "INSERT INTO games (match_id, pair, moves, winner, candidate_colour, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            [(match_id, *game, at) for game in games],
        )


def finish_match(connection, match_id: int, cpu_seconds: float | None, at: float) -> None:
    connection.execute("UPDATE matches SET finished_at = ?, cpu_seconds = ? WHERE id = ?", (at, cpu_seconds, match_id))


# -- ratings -----------------------------------------------------------------------


def replace_ratings(connection, ratings: list[tuple], at: float) -> None:
    """ratings: (player, snapshot_id, sims, rating, lo, hi, games, anchor)."""
    with transaction(connection):
        connection.execute("DELETE FROM ratings")
        connection.executemany("INSERT INTO ratings VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", [(*r, at) for r in ratings])


def rating_table(connection) -> list[dict]:
    """`hexzd league`'s table: every rated player with its snapshot's compute, references first."""
    return rows(
        connection,
        """
        SELECT r.player, r.run, r.model_id, r.sims, r.rating, r.rating_lo AS lo, r.rating_hi AS hi, r.games,
               r.anchor, r.status, r.half_width, s.train_step AS step, s.selfplay_flops + s.train_flops AS flops
        FROM rating_status r LEFT JOIN snapshots s ON s.id = r.snapshot_id
        ORDER BY r.snapshot_id IS NOT NULL, s.run_id, r.model_id, r.sims""",
    )


@contextmanager
def transaction(connection):
    """BEGIN IMMEDIATE ... COMMIT on the autocommit connection; ROLLBACK on an error, or a second Ctrl-C."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")
