"""The state file's schema and its migrations.

The schema is versioned with `PRAGMA user_version`. MIGRATIONS[k] takes a
file from version k to k + 1; a file newer than this code is refused.
The README's "Querying the state file" documents every table and column.
"""

import sqlite3

MIGRATIONS = [
    # 0 -> 1: the first schema.
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);

    CREATE TABLE models (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        parent_id INTEGER REFERENCES models(id),
        created_at REAL NOT NULL,
        train_step INTEGER NOT NULL,
        positions_seen INTEGER NOT NULL,
        samples_trained INTEGER NOT NULL,
        params INTEGER NOT NULL,
        flops_per_eval INTEGER NOT NULL,
        selfplay_flops REAL NOT NULL,
        train_flops REAL NOT NULL,
        wall_seconds REAL NOT NULL,
        accel_seconds REAL NOT NULL,
        positions_generated INTEGER NOT NULL,
        promoted_at REAL,
        rating REAL, rating_lo REAL, rating_hi REAL,
        weights BLOB,
        checkpoint BLOB
    );

    CREATE TABLE games (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        model_id INTEGER REFERENCES models(id),
        created_at REAL NOT NULL,
        board_size INTEGER NOT NULL,
        sims INTEGER NOT NULL,
        moves TEXT NOT NULL,
        winner INTEGER NOT NULL CHECK (winner IN (1, 2)),
        length INTEGER NOT NULL,
        policy BLOB NOT NULL,
        evals INTEGER NOT NULL,
        worker TEXT NOT NULL
    );
    CREATE INDEX games_created ON games(created_at);

    CREATE TABLE duels (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL CHECK (kind IN ('promotion', 'rating')),
        candidate_id INTEGER REFERENCES models(id),
        opponent_id INTEGER REFERENCES models(id),
        sims INTEGER NOT NULL,
        opponent_sims INTEGER NOT NULL,
        pairs INTEGER,
        started_at REAL NOT NULL,
        finished_at REAL,
        wins INTEGER NOT NULL DEFAULT 0,
        losses INTEGER NOT NULL DEFAULT 0,
        llr REAL,
        result TEXT CHECK (result IN ('accepted', 'rejected', 'played'))
    );

    CREATE TABLE ratings (
        player TEXT PRIMARY KEY,
        model_id INTEGER REFERENCES models(id),
        sims INTEGER NOT NULL,
        rating REAL NOT NULL,
        rating_lo REAL NOT NULL,
        rating_hi REAL NOT NULL,
        games INTEGER NOT NULL,
        anchor INTEGER NOT NULL,
        updated_at REAL NOT NULL
    );

    CREATE TABLE duel_games (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        duel_id INTEGER NOT NULL REFERENCES duels(id),
        pair INTEGER NOT NULL,
        moves TEXT NOT NULL,
        winner INTEGER NOT NULL CHECK (winner IN (1, 2)),
        candidate_colour INTEGER NOT NULL CHECK (candidate_colour IN (1, 2)),
        created_at REAL NOT NULL,
        UNIQUE (duel_id, pair, candidate_colour)
    );

    CREATE TABLE promotions (
        model_id INTEGER PRIMARY KEY REFERENCES models(id),
        at REAL NOT NULL,
        duel_id INTEGER REFERENCES duels(id),
        score REAL
    );

    CREATE TABLE metrics (at REAL NOT NULL, source TEXT NOT NULL, name TEXT NOT NULL, value REAL NOT NULL);
    CREATE INDEX metrics_name_at ON metrics(name, at);

    CREATE TABLE tuning (at REAL NOT NULL, knob TEXT NOT NULL, old REAL, new REAL, reason TEXT NOT NULL);

    CREATE TABLE config_history (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at REAL NOT NULL,
        text TEXT NOT NULL,
        accepted INTEGER NOT NULL,
        error TEXT
    );

    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at REAL NOT NULL,
        level TEXT NOT NULL,
        source TEXT NOT NULL,
        message TEXT NOT NULL
    );

    CREATE VIEW throughput_hourly AS
        SELECT CAST(created_at / 3600 AS INTEGER) * 3600 AS hour,
               COUNT(*) AS games, SUM(length) AS positions, SUM(evals) AS evals,
               SUM(length) / 3600.0 AS positions_per_second
        FROM games GROUP BY hour ORDER BY hour;

    CREATE VIEW promotion_history AS
        SELECT p.model_id, p.at, p.duel_id, p.score, d.opponent_id AS replaced,
               d.wins, d.losses, d.llr, m.train_step, m.positions_seen
        FROM promotions p JOIN models m ON m.id = p.model_id
        LEFT JOIN duels d ON d.id = p.duel_id
        ORDER BY p.at;

    CREATE VIEW rating_vs_compute AS
        SELECT id AS model_id, rating, rating_lo, rating_hi,
               selfplay_flops, train_flops, selfplay_flops + train_flops AS total_flops,
               wall_seconds, accel_seconds, positions_generated, samples_trained,
               promoted_at IS NOT NULL AS promoted
        FROM models WHERE rating IS NOT NULL ORDER BY total_flops;

    CREATE VIEW pareto_front AS
        SELECT * FROM (
            SELECT *, MAX(rating) OVER (ORDER BY total_flops
                                        ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS best_before
            FROM rating_vs_compute)
        WHERE best_before IS NULL OR rating > best_before;
    """,
    # 1 -> 2: each promoted model's play against perfect play, on boards small enough to solve.
    """
    CREATE TABLE perfect_play (
        model_id INTEGER NOT NULL REFERENCES models(id),
        sims INTEGER NOT NULL,
        at REAL NOT NULL,
        seed INTEGER NOT NULL,
        positions INTEGER NOT NULL,
        won INTEGER NOT NULL,
        kept INTEGER NOT NULL,
        converted INTEGER NOT NULL,
        value_sign REAL,
        PRIMARY KEY (model_id, sims)
    );
    """,
    # 2 -> 3: whether each rating means something. A rating whose 95% interval is
    # wider than +-150 Elo (about 20 games against an even opponent) is "too few games".
    """
    CREATE VIEW rating_status AS
        SELECT player, model_id, sims, rating, rating_lo, rating_hi, games, anchor,
               (rating_hi - rating_lo) / 2 AS half_width,
               CASE WHEN anchor THEN 'anchor'
                    WHEN rating_hi - rating_lo <= 300 THEN 'rated'
                    ELSE 'too few games' END AS status
        FROM ratings;
    """,
    # 3 -> 4: the CPU time each duel took, so that matchmaking knows what a match costs.
    """
    ALTER TABLE duels ADD COLUMN cpu_seconds REAL;
    """,
    # 4 -> 5: outside HTP engines ([ratings] engines) as rating opponents: the engine's
    # name, with opponent_id NULL and opponent_sims 0.
    """
    ALTER TABLE duels ADD COLUMN opponent_engine TEXT;
    """,
    # 5 -> 6: every CPU second the run spent up to each snapshot (self-play with its rollout
    # phase, training, evaluation, the daemon), so strength can be read against CPU time too.
    """
    ALTER TABLE models ADD COLUMN cpu_seconds REAL;
    DROP VIEW rating_vs_compute;
    CREATE VIEW rating_vs_compute AS
        SELECT id AS model_id, rating, rating_lo, rating_hi,
               selfplay_flops, train_flops, selfplay_flops + train_flops AS total_flops,
               wall_seconds, accel_seconds, cpu_seconds, positions_generated, samples_trained,
               promoted_at IS NOT NULL AS promoted
        FROM models WHERE rating IS NOT NULL ORDER BY total_flops;
    """,  # pareto_front reads rating_vs_compute by name at query time, so it stands as it is
    # 6 -> 7: the kept ladder (hexzd.store.ladder). A run's own id, `run` in meta, names its
    # games there; a duel copied from there into a fresh file names the run that played it.
    """
    ALTER TABLE duels ADD COLUMN kept_from TEXT;
    INSERT OR IGNORE INTO meta VALUES ('run', lower(hex(randomblob(16))));
    """,
]
VERSION = len(MIGRATIONS)


class StateFileError(RuntimeError):
    """A state file this code cannot use: newer than the code, or not hexzd's."""


def migrate(connection: sqlite3.Connection, path="state file", migrations=MIGRATIONS) -> int:
    """Brings a file up to the last version, one migration per transaction; returns the old version.

    migrations: the state file's by default; the league file (hexzd.store.league_file) has its own."""
    version, newest = connection.execute("PRAGMA user_version").fetchone()[0], len(migrations)
    if version > newest:
        raise StateFileError(f"{path} has schema version {version}, newer than this hexzd's {newest}: upgrade hexzd")
    for target in range(version + 1, newest + 1):
        connection.executescript(f"BEGIN; {migrations[target - 1]}; PRAGMA user_version = {target}; COMMIT;")
    return version


def prepare(path) -> int:
    """Creates or migrates the state file, in WAL mode. Returns the version it had."""
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute("PRAGMA journal_mode = WAL")
        return migrate(connection, path)
    finally:
        connection.close()
