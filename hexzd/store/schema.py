"""The state file's schema and its migrations, and what makes a file hexzd's.

The schema is versioned with `PRAGMA user_version`. MIGRATIONS[k] takes a
file from version k to k + 1; a file newer than this code is refused.
The SQL comments in MIGRATIONS describe every table, column and view;
docs/reference.py turns them into docs/reference/state.md.

Every file hexzd makes says whose it is in `PRAGMA application_id`: STATE
(0x6865787A, "hexz") for a state file, and an id of its own for the league
file and the kept ladder (hexzd.store.league_file, hexzd.store.ladder). A
file of an earlier hexzd has id 0 and the tables every version of its kind
has had (`Kind.tables`): it is read as hexzd's and gets the id the next time
it is opened to write. `identify` is the one check every open goes through,
to read (hexzd.store.read_only) or to write (`open_writable`): a file that is
not SQLite, damaged or truncated, another program's, of another kind, newer
than this code or (to write) read-only is refused with a StateFileError
whose reason fits on one line after the file's name.
"""

import errno
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

MIGRATIONS = [
    # 0 -> 1: the first schema. The SQL comments describe each table, column and view:
    # SQLite keeps them in sqlite_master, and docs/reference.py writes the state file's
    # reference page from a fresh file's (a comment on a `CREATE TABLE t (` line is the
    # table's; a comment after a column, the column's; one after a view's AS, the view's).
    # Columns added by ALTER TABLE carry theirs as /* ... */ before the semicolon.
    """
    CREATE TABLE meta (  -- the run's fixed facts and counters, one value a key
        key TEXT PRIMARY KEY,  -- `config` (the run's fixed config: the config the file was made with, JSON),
                               -- `counter.*` (the run's counters: games, positions, evals, selfplay_flops,
                               -- train_flops, accel_seconds, wall_seconds, train_step, cpu_seconds), and `run`
                               -- (its id in the kept ladder, schema 7)
        value TEXT NOT NULL  -- the key's value, as text
    );

    CREATE TABLE models (  -- one row per snapshot the trainer sent
        id INTEGER PRIMARY KEY AUTOINCREMENT,  -- snapshot id, in order of creation, never reused
        parent_id INTEGER REFERENCES models(id),  -- the snapshot before it
        created_at REAL NOT NULL,  -- when the daemon stored it
        train_step INTEGER NOT NULL,  -- optimizer steps so far
        positions_seen INTEGER NOT NULL,  -- self-play positions the trainer had read
        samples_trained INTEGER NOT NULL,  -- positions trained on (with repeats)
        params INTEGER NOT NULL,  -- trainable parameters of the network
        flops_per_eval INTEGER NOT NULL,  -- FLOPs of one evaluation, counted from the network's real layers
        selfplay_flops REAL NOT NULL,  -- self-play compute spent by the run up to this snapshot
        train_flops REAL NOT NULL,  -- training compute spent by the run up to this snapshot
        wall_seconds REAL NOT NULL,  -- run time so far
        accel_seconds REAL NOT NULL,  -- time spent in inference and training steps so far
        positions_generated INTEGER NOT NULL,  -- self-play positions produced by the run so far
        promoted_at REAL,  -- when it became the best, or NULL
        rating REAL,  -- Elo, from its player with most games (NULL: not rated)
        rating_lo REAL,  -- lower end of the rating's 95% interval
        rating_hi REAL,  -- upper end of the rating's 95% interval
        weights BLOB,  -- the network (`hexzd.nn.snapshot.Snapshot` bytes); NULL once pruned
        checkpoint BLOB  -- weights with optimizer state; kept for the newest snapshot only
    );

    CREATE TABLE games (  -- one row per finished self-play game
        id INTEGER PRIMARY KEY AUTOINCREMENT,  -- self-play game, in order of arrival
        model_id INTEGER REFERENCES models(id),  -- the network that played it; NULL for random-rollout MCTS
        created_at REAL NOT NULL,  -- when the daemon stored it
        board_size INTEGER NOT NULL,  -- board side n
        sims INTEGER NOT NULL,  -- simulations per move
        moves TEXT NOT NULL,  -- the moves in trmph form, `a1b2c3`
        winner INTEGER NOT NULL CHECK (winner IN (1, 2)),  -- 1 Black, 2 White
        length INTEGER NOT NULL,  -- number of moves
        policy BLOB NOT NULL,  -- zlib'd float16 visit distributions, one row of n*n + 1 per move
                               -- (`hexzd.game.records.decode_policy`)
        evals INTEGER NOT NULL,  -- network evaluations spent on it
        worker TEXT NOT NULL  -- the self-play worker that played it
    );
    CREATE INDEX games_created ON games(created_at);

    CREATE TABLE duels (  -- promotion duels (SPRT) and rating matches (fixed pairs)
        id INTEGER PRIMARY KEY AUTOINCREMENT,  -- duel id, in order of creation
        kind TEXT NOT NULL CHECK (kind IN ('promotion', 'rating')),  -- `promotion` (SPRT) or `rating` (fixed pairs)
        candidate_id INTEGER REFERENCES models(id),  -- the candidate (NULL: rollout MCTS)
        opponent_id INTEGER REFERENCES models(id),  -- the opponent (NULL: rollout MCTS, perfect play or an engine)
        sims INTEGER NOT NULL,  -- the candidate's simulations per move
        opponent_sims INTEGER NOT NULL,  -- the opponent's simulations per move (0 for perfect play and engines)
        pairs INTEGER,  -- pairs to play (rating matches)
        started_at REAL NOT NULL,  -- when it was opened
        finished_at REAL,  -- when it ended; NULL while running
        wins INTEGER NOT NULL DEFAULT 0,  -- the candidate's won games over the decided pairs
        losses INTEGER NOT NULL DEFAULT 0,  -- the candidate's lost games over the decided pairs
        llr REAL,  -- the SPRT's log-likelihood ratio (promotion duels)
        result TEXT CHECK (result IN ('accepted', 'rejected', 'played'))  -- `accepted`, `rejected`, `played`,
                                                                          -- or NULL while running
    );

    CREATE TABLE ratings (  -- the latest rating fit: one row per player
        player TEXT PRIMARY KEY,  -- the player: `model 12 @64`, `rollouts @1000`, `perfect` or `engine mohex`
        model_id INTEGER REFERENCES models(id),  -- its snapshot; NULL for rollouts, perfect play and engines
        sims INTEGER NOT NULL,  -- its simulations per move (0 for perfect play and engines)
        rating REAL NOT NULL,  -- Elo, rollouts at the first reference's simulations at 0
        rating_lo REAL NOT NULL,  -- lower end of the 95% interval
        rating_hi REAL NOT NULL,  -- upper end of the 95% interval
        games INTEGER NOT NULL,  -- rated games it played
        anchor INTEGER NOT NULL,  -- 1 for the 0-Elo anchor
        updated_at REAL NOT NULL  -- when the fit that wrote the row ran
    );

    CREATE TABLE duel_games (  -- every game of every duel and rating match
        id INTEGER PRIMARY KEY AUTOINCREMENT,  -- game id, in order of arrival
        duel_id INTEGER NOT NULL REFERENCES duels(id),  -- the duel
        pair INTEGER NOT NULL,  -- the opening pair the game belongs to
        moves TEXT NOT NULL,  -- the moves in trmph form
        winner INTEGER NOT NULL CHECK (winner IN (1, 2)),  -- 1 Black, 2 White
        candidate_colour INTEGER NOT NULL CHECK (candidate_colour IN (1, 2)),  -- the candidate's colour:
                                                                               -- 1 Black, 2 White
        created_at REAL NOT NULL,  -- when the daemon stored it
        UNIQUE (duel_id, pair, candidate_colour)
    );

    CREATE TABLE promotions (  -- each promotion, and the duel that decided it
        model_id INTEGER PRIMARY KEY REFERENCES models(id),  -- the promoted snapshot
        at REAL NOT NULL,  -- when it was promoted
        duel_id INTEGER REFERENCES duels(id),  -- the duel that decided it
        score REAL  -- the candidate's score in that duel
    );

    CREATE TABLE metrics (  -- time series, for the dashboard and for queries
        at REAL NOT NULL,  -- when the sample was taken
        source TEXT NOT NULL,  -- who measured it: `daemon`, `trainer`, or the worker (`cpu_share`)
        name TEXT NOT NULL,  -- `games_per_s`, `positions_per_s`, `train_step_per_s` (daemon); `policy_loss`,
                             -- `value_loss`, `lr`, `window` (trainer); `cpu_share` (each worker's share of the
                             -- machine's cores over the last tick)
        value REAL NOT NULL  -- the sample
    );
    CREATE INDEX metrics_name_at ON metrics(name, at);

    CREATE TABLE tuning (  -- the auto-tuner's decisions
        at REAL NOT NULL,  -- when it decided
        knob TEXT NOT NULL,  -- what it moved: `sims` or `batch`
        old REAL,  -- the value before
        new REAL,  -- the value after
        reason TEXT NOT NULL  -- why
    );

    CREATE TABLE config_history (  -- every version of config.toml the daemon read
        id INTEGER PRIMARY KEY AUTOINCREMENT,  -- in order of reading
        at REAL NOT NULL,  -- when the daemon read it
        text TEXT NOT NULL,  -- the file's text
        accepted INTEGER NOT NULL,  -- 1 if applied, 0 if refused
        error TEXT  -- why it was refused (`config.toml:LINE: section.key: message`)
    );

    CREATE TABLE events (  -- starts, stops, restarts, promotions, refusals, dropped messages
        id INTEGER PRIMARY KEY AUTOINCREMENT,  -- in order of arrival
        at REAL NOT NULL,  -- when it happened
        level TEXT NOT NULL,  -- `debug`, `info`, `warning` or `error`
        source TEXT NOT NULL,  -- the daemon, a worker or a part of the daemon (`tuner`, `ratings`, ...)
        message TEXT NOT NULL  -- what happened
    );

    CREATE VIEW throughput_hourly AS  -- self-play games, positions and network evaluations per hour
        SELECT CAST(created_at / 3600 AS INTEGER) * 3600 AS hour,
               COUNT(*) AS games, SUM(length) AS positions, SUM(evals) AS evals,
               SUM(length) / 3600.0 AS positions_per_second
        FROM games GROUP BY hour ORDER BY hour;

    CREATE VIEW promotion_history AS  -- each promotion with its duel and the model it replaced
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

    CREATE VIEW pareto_front AS  -- the rated snapshots stronger than every cheaper one (`best_before`: the
                                 -- best rating at less compute)
        SELECT * FROM (
            SELECT *, MAX(rating) OVER (ORDER BY total_flops
                                        ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS best_before
            FROM rating_vs_compute)
        WHERE best_before IS NULL OR rating > best_before;
    """,
    # 1 -> 2: each promoted model's play against perfect play, on boards small enough to solve.
    """
    CREATE TABLE perfect_play (  -- promoted models against perfect play (boards up to 5x5, no swap)
        model_id INTEGER NOT NULL REFERENCES models(id),  -- the promoted model
        sims INTEGER NOT NULL,  -- its simulations per move: 0 (the raw policy) and the duels'
        at REAL NOT NULL,  -- when it was measured
        seed INTEGER NOT NULL,  -- the seed of the test positions
        positions INTEGER NOT NULL,  -- test positions (the same for every model of the run)
        won INTEGER NOT NULL,  -- positions won for the player to move
        kept INTEGER NOT NULL,  -- won positions where the model's move keeps the win
        converted INTEGER NOT NULL,  -- won positions where it wins the game against perfect defence
        value_sign REAL,  -- share of positions where the raw value's sign is right
        PRIMARY KEY (model_id, sims)
    );
    """,
    # 2 -> 3: whether each rating means something. A rating whose 95% interval is
    # wider than +-150 Elo (about 20 games against an even opponent) is "too few games".
    """
    CREATE VIEW rating_status AS  -- each rating with its interval's `half_width` and a `status`: `anchor`,
                                  -- `rated`, or `too few games` where the 95% interval is wider than +-150 Elo
                                  -- (about 20 games against an even opponent; `hexzd ratings` prints that
                                  -- instead of a number)
        SELECT player, model_id, sims, rating, rating_lo, rating_hi, games, anchor,
               (rating_hi - rating_lo) / 2 AS half_width,
               CASE WHEN anchor THEN 'anchor'
                    WHEN rating_hi - rating_lo <= 300 THEN 'rated'
                    ELSE 'too few games' END AS status
        FROM ratings;
    """,
    # 3 -> 4: the CPU time each duel took, so that matchmaking knows what a match costs.
    """
    ALTER TABLE duels ADD COLUMN cpu_seconds REAL /* the duel worker's CPU time on it (the session that
        finished it), an outside engine's included; matchmaking's cost measure */;
    """,
    # 4 -> 5: outside HTP engines ([ratings] engines) as rating opponents: the engine's
    # name, with opponent_id NULL and opponent_sims 0.
    """
    ALTER TABLE duels ADD COLUMN opponent_engine TEXT /* an outside engine of `[ratings] engines` as the
        opponent, by name, or `perfect` for perfect play (then `opponent_id` is NULL and `opponent_sims` 0);
        NULL otherwise */;
    """,
    # 5 -> 6: every CPU second the run spent up to each snapshot (self-play with its rollout
    # phase, training, evaluation, the daemon), so strength can be read against CPU time too.
    """
    ALTER TABLE models ADD COLUMN cpu_seconds REAL /* CPU time of every process of the run so far:
        self-play (its rollout phase too), trainer, evaluation, daemon; NULL in files made before schema 6 */;
    DROP VIEW rating_vs_compute;
    CREATE VIEW rating_vs_compute AS  -- rated snapshots by total compute, `total_flops` = self-play plus
                                      -- training, `promoted` 1 for promoted ones
        SELECT id AS model_id, rating, rating_lo, rating_hi,
               selfplay_flops, train_flops, selfplay_flops + train_flops AS total_flops,
               wall_seconds, accel_seconds, cpu_seconds, positions_generated, samples_trained,
               promoted_at IS NOT NULL AS promoted
        FROM models WHERE rating IS NOT NULL ORDER BY total_flops;
    """,  # pareto_front reads rating_vs_compute by name at query time, so it stands as it is
    # 6 -> 7: the kept ladder (hexzd.store.ladder). A run's own id, `run` in meta, names its
    # games there; a duel copied from there into a fresh file names the run that played it.
    """
    ALTER TABLE duels ADD COLUMN kept_from TEXT /* NULL for the run's own; for a ladder match copied from
        the kept ladder when the file was fresh, the `run` of the state file that played it (schema 7) */;
    INSERT OR IGNORE INTO meta VALUES ('run', lower(hex(randomblob(16))));
    """,
    # 7 -> 8: a match that crashes the duel worker again and again is given up, not resumed forever.
    """
    ALTER TABLE duels ADD COLUMN crashes INTEGER NOT NULL DEFAULT 0 /* times the duel worker crashed while
        playing it (schema 8); at 3 the match is given up */;
    ALTER TABLE duels ADD COLUMN failed TEXT /* why the match was given up (schema 8), its result then
        `rejected` (a promotion duel) or `played` (a rating match, with the games it has); NULL otherwise */;
    """,
    # 8 -> 9: self-play on a Ray cluster ([cluster] address). A game says which node made it,
    # and carries an id of its own, so that a batch delivered twice is stored once.
    """
    ALTER TABLE games ADD COLUMN node TEXT /* the Ray node whose self-play actor played it (schema 9); NULL
        for this machine's own self-play workers */;
    ALTER TABLE games ADD COLUMN uid TEXT /* the game's id from the actor that played it, `ACTOR:SEQ`
        (schema 9): a game delivered twice is stored once; NULL for this machine's own workers */;
    CREATE UNIQUE INDEX games_uid ON games(uid);
    """,
    # 9 -> 10: a perfect-play check that crashes the duel worker again and again is given up too.
    """
    CREATE TABLE perfect_play_crashes (  -- checks against perfect play that crashed the duel worker (schema 10)
        model_id INTEGER PRIMARY KEY REFERENCES models(id),  -- the promoted model being checked
        crashes INTEGER NOT NULL,  -- times the duel worker crashed during its check; at 3 it is given up
        failed TEXT  -- why its check was given up; NULL while it is tried again
    );
    """,
]
VERSION = len(MIGRATIONS)

# PRAGMA application_id of each kind of file hexzd makes: "hexz", "hexL", "hexK" in ASCII.
APPLICATION_IDS = {"state file": 0x6865787A, "league file": 0x6865784C, "kept ladder": 0x6865784B}
SQLITE_READONLY, SQLITE_CORRUPT, SQLITE_FULL, SQLITE_CANTOPEN, SQLITE_NOTADB = 8, 11, 13, 14, 26  # primary codes


class StateFileError(RuntimeError):
    """A file hexzd cannot use, and why, in one line that does not name the file: not SQLite,
    damaged, another program's, of another kind, newer than this code, read-only (to write),
    or one that cannot be read now (busy, I/O)."""


class DamagedFile(StateFileError):
    """A file SQLite finds damaged or truncated (SQLITE_CORRUPT) or not a database at all
    (SQLITE_NOTADB): trying again cannot help."""


@dataclass(frozen=True)
class Kind:
    """A kind of SQLite file that hexzd makes."""

    noun: str  # "state file": a key of APPLICATION_IDS
    tables: frozenset[str]  # tables every version of it has had: a file of an earlier hexzd (id 0) has them
    migrations: tuple[str, ...]

    @property
    def application_id(self) -> int:
        return APPLICATION_IDS[self.noun]

    @property
    def version(self) -> int:
        return len(self.migrations)


STATE = Kind("state file", frozenset({"meta", "models", "games", "duels"}), tuple(MIGRATIONS))


def damaged(error: BaseException) -> bool:
    """Whether an error says the file itself is damaged or not a database (SQLITE_CORRUPT,
    SQLITE_NOTADB, or a DamagedFile), so that trying again cannot help; busy, locked, full,
    read-only and I/O errors say no. For the daemon: stop on these, retry the others."""
    if isinstance(error, DamagedFile):
        return True
    if not isinstance(error, sqlite3.DatabaseError):
        return False
    code = getattr(error, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (SQLITE_CORRUPT, SQLITE_NOTADB)
    return any(words in str(error) for words in ("malformed", "not a database"))


def disk_full(error: BaseException) -> bool:
    """Whether an error says the disk is full (SQLITE_FULL, or ENOSPC from the OS): trying
    again helps once space returns."""
    if isinstance(error, OSError):
        return error.errno == errno.ENOSPC
    if not isinstance(error, sqlite3.Error):
        return False
    code = getattr(error, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF == SQLITE_FULL
    return "disk is full" in str(error)


def refusal(error: sqlite3.Error, kind: Kind = STATE) -> StateFileError:
    """The StateFileError that a sqlite3 error met on a file of `kind` means."""
    code = (getattr(error, "sqlite_errorcode", None) or 0) & 0xFF
    if code == SQLITE_NOTADB or code == 0 and "not a database" in str(error):
        return DamagedFile(f"not a hexzd {kind.noun} ({error})")
    if damaged(error):
        return DamagedFile(f"damaged or truncated ({error})")
    if code == SQLITE_READONLY:
        return StateFileError(f"read-only: {error}")
    if code == SQLITE_CANTOPEN:
        return StateFileError(f"cannot be opened ({error})")
    return StateFileError(f"cannot be read: {error}")


def identify(connection: sqlite3.Connection, kind: Kind = STATE) -> tuple[int, int]:
    """(schema version, application_id) of a file that is a `kind` this code can use;
    version 0 for an empty file, a new one. Raises StateFileError with the reason."""
    try:
        found = connection.execute("PRAGMA application_id").fetchone()[0]
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        # Reading the schema reads the first page of the tables: a truncated file fails here.
        tables = {name for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.Error as e:
        raise refusal(e, kind) from None
    if found != kind.application_id:
        other = {number: noun for noun, number in APPLICATION_IDS.items()}.get(found)
        if other:
            raise StateFileError(f"not a hexzd {kind.noun} (it is a hexzd {other})")
        if found:
            raise StateFileError(f"not a hexzd {kind.noun} (another program's SQLite file: application_id {found:#x})")
        if tables and (version == 0 or not kind.tables <= tables):
            raise StateFileError(f"not a hexzd {kind.noun} (another program's SQLite file: its tables are not hexzd's)")
    if version > kind.version:
        raise StateFileError(f"schema version {version}, newer than this hexzd's {kind.version}: upgrade hexzd")
    return version, found


def check_writable(path) -> None:
    """Raises StateFileError ("read-only: ...") where this user cannot write the file, or the
    folder that SQLite keeps its -wal and -shm files in."""
    path = Path(path)
    if path.exists() and not os.access(path, os.W_OK):
        raise StateFileError("read-only: this user may not write the file")
    folder = path.absolute().parent
    while not folder.exists():  # folders a writer makes first (hexzd.daemon.rundir)
        folder = folder.parent
    if not os.access(folder, os.W_OK | os.X_OK):
        raise StateFileError(
            f"read-only: its folder {folder} cannot be written (SQLite keeps a -wal and a -shm file there)"
        )


def migrate(connection: sqlite3.Connection, kind: Kind = STATE) -> int:
    """Brings a file of `kind` up to the last version, one migration per transaction, and marks
    it with the kind's application_id; returns the old version. Raises StateFileError for a file
    that is not a `kind` this code can use (`identify`); sqlite3.Error for one it cannot write."""
    version, _ = identify(connection, kind)
    for target in range(version + 1, kind.version + 1):
        connection.executescript(f"BEGIN; {kind.migrations[target - 1]}; PRAGMA user_version = {target}; COMMIT;")
    # Every time, not only when the id is missing: writing the header proves that the file can be written.
    connection.executescript(f"BEGIN IMMEDIATE; PRAGMA application_id = {kind.application_id}; COMMIT;")
    return version


def open_writable(path, kind: Kind = STATE, timeout: float = 10.0) -> tuple[sqlite3.Connection, int]:
    """(an autocommit connection that writes the file, the version it had) for a file of `kind`
    created or migrated (`migrate`), in WAL mode. Raises StateFileError: read-only, or a file
    that is not a `kind` this code can use, checked before anything in it changes."""
    check_writable(path)
    connection = sqlite3.connect(path, isolation_level=None, timeout=timeout)
    try:
        identify(connection, kind)
        connection.execute("PRAGMA journal_mode = WAL")
        return connection, migrate(connection, kind)
    except sqlite3.Error as e:
        connection.close()
        raise refusal(e, kind) from None
    except StateFileError:
        connection.close()
        raise


def prepare(path) -> int:
    """Creates or migrates the state file, in WAL mode. Returns the version it had.
    Raises StateFileError (`open_writable`)."""
    connection, version = open_writable(path)
    connection.close()
    return version
