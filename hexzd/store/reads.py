"""The readers' queries: workers, the CLI and the dashboard, on read-only connections.

Each takes a sqlite3 connection (hexzd.store.read_only). Files of an older
schema that no daemon has migrated yet are read too: a table a version
added is probed with `has_table` and read as empty when missing.
"""

import sqlite3
from collections.abc import Iterator

GAME_COLUMNS = "id, board_size, moves, winner, policy, sims, model_id"
HISTORY = 40  # samples per dashboard series: enough for a sparkline
ROWS = 8  # rows of each dashboard table


def has_table(connection, name: str) -> bool:
    return connection.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (name,)).fetchone() is not None


def rows(connection, sql: str, params=()) -> list[dict]:
    cursor = connection.execute(sql, params)
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row)) for row in cursor.fetchall()]


# -- models --------------------------------------------------------------------


BEST_MODEL_SQL = "SELECT model_id FROM promotions ORDER BY at DESC, model_id DESC LIMIT 1"
COUNTERS_SQL = "SELECT key, value FROM meta WHERE key LIKE 'counter.%'"
# A model's rating, as models.rating holds it: that of its player with the most games.
MODEL_RATING_SQL = (
    "SELECT rating, half_width, status, games FROM rating_status WHERE model_id = ? ORDER BY games DESC LIMIT 1"
)


def best_model(connection) -> int | None:
    """The id of the most recently promoted model, or None before the first promotion."""
    row = connection.execute(BEST_MODEL_SQL).fetchone()
    return row[0] if row else None


def weights(connection, model_id: int) -> bytes:
    row = connection.execute("SELECT weights FROM models WHERE id = ?", (model_id,)).fetchone()
    if row is None:
        raise KeyError(f"no model {model_id} in the state file")
    if row[0] is None:
        raise KeyError(f"model {model_id}'s weights were pruned (see [retention])")
    return row[0]


def latest_checkpoint(connection) -> tuple[int, bytes] | None:
    """(model id, the trainer's full snapshot) to resume from, or None before the first."""
    return connection.execute(
        "SELECT id, checkpoint FROM models WHERE checkpoint IS NOT NULL ORDER BY id DESC LIMIT 1"
    ).fetchone()


def config_text(connection) -> str | None:
    """The config (JSON) the state file was made with."""
    row = connection.execute("SELECT value FROM meta WHERE key = 'config'").fetchone()
    return row[0] if row else None


def stop_reason(connection) -> str | None:
    """Why the daemon last stopped ("budget.games is spent", "signal SIGINT"), or None if it never has."""
    row = connection.execute(
        "SELECT message FROM events WHERE source = 'daemon' AND message LIKE 'stopping: %' ORDER BY id DESC LIMIT 1"
    ).fetchone()
    return row[0].removeprefix("stopping: ") if row else None


def counters(connection) -> dict[str, float]:
    return counters_of(connection.execute(COUNTERS_SQL))


def counters_of(rows) -> dict[str, float]:
    """The run's counters from COUNTERS_SQL rows."""
    return {key.removeprefix("counter."): float(value) for key, value in rows}


# -- games ---------------------------------------------------------------------


def games_after(connection, cursor: int, limit: int) -> list[tuple]:
    """Up to `limit` games with ids above `cursor`, oldest first, as GAME_COLUMNS."""
    return connection.execute(
        f"SELECT {GAME_COLUMNS} FROM games WHERE id > ? ORDER BY id LIMIT ?", (cursor, limit)
    ).fetchall()


def games_through(connection, cursor: int) -> Iterator[tuple]:
    """The games with ids up to `cursor`, newest first, as GAME_COLUMNS."""
    return connection.execute(f"SELECT {GAME_COLUMNS} FROM games WHERE id <= ? ORDER BY id DESC", (cursor,))


# -- duels and perfect play ----------------------------------------------------


EVALUATION_SECONDS_SQL = "SELECT kind, SUM(cpu_seconds) FROM duels WHERE cpu_seconds IS NOT NULL GROUP BY kind"


def evaluation_seconds(connection) -> dict[str, float]:
    """CPU seconds that the finished duels took, by kind (promotion, rating)."""
    return dict(connection.execute(EVALUATION_SECONDS_SQL).fetchall())


def next_duel(connection, promotions_only: bool = False) -> int | None:
    """The open duel the duel worker should play: a rating match first (promotions run
    inside it), or only a promotion."""
    row = connection.execute(
        "SELECT id FROM duels WHERE result IS NULL AND (kind = 'promotion' OR NOT ?)"
        " ORDER BY kind = 'rating' DESC, id LIMIT 1",
        (promotions_only,),
    ).fetchone()
    return row[0] if row else None


def duel(connection, duel_id: int) -> tuple:
    """(kind, candidate_id, sims, opponent_id, opponent_sims, pairs, opponent_engine) of a duel."""
    return connection.execute(
        "SELECT kind, candidate_id, sims, opponent_id, opponent_sims, pairs, opponent_engine FROM duels WHERE id = ?",
        (duel_id,),
    ).fetchone()


def duel_results(connection, duel_id: int) -> list[tuple]:
    """(pair, candidate colour, winner, moves) of each game of a duel stored so far."""
    return connection.execute(
        "SELECT pair, candidate_colour, winner, moves FROM duel_games WHERE duel_id = ?", (duel_id,)
    ).fetchall()


def pairing_games(connection, duel_id: int) -> list[tuple]:
    """(duel id, pair, moves, candidate colour) of every game of earlier duels between the same
    two players, either side round: the colour is the side of this duel's candidate.

    A pairing's duels go on down one list of openings (hexzd.evaluation.openings)
    and never count a game twice, so a duel starts from what earlier ones played.
    """
    return connection.execute(
        """
        WITH this AS (SELECT candidate_id c, sims s, opponent_id o, opponent_sims os, opponent_engine e
                      FROM duels WHERE id = :id)
        SELECT g.duel_id, g.pair, g.moves,
               CASE WHEN d.candidate_id IS c AND d.sims = s THEN g.candidate_colour ELSE 3 - g.candidate_colour END
        FROM duels d JOIN this JOIN duel_games g ON g.duel_id = d.id
        WHERE d.id < :id AND d.opponent_engine IS e AND (
            (d.candidate_id IS c AND d.sims = s AND d.opponent_id IS o AND d.opponent_sims = os)
            OR (d.candidate_id IS o AND d.sims = os AND d.opponent_id IS c AND d.opponent_sims = s))
        """,
        {"id": duel_id},
    ).fetchall()


def unjudged_promotions(connection) -> list[int]:
    """Promoted models with weights and no perfect-play result yet, newest promotion first;
    not those whose check was given up (it crashed the duel worker again and again)."""
    return [
        row[0]
        for row in connection.execute(
            "SELECT p.model_id FROM promotions p JOIN models m ON m.id = p.model_id"
            " WHERE m.weights IS NOT NULL AND p.model_id NOT IN (SELECT model_id FROM perfect_play)"
            " AND p.model_id NOT IN (SELECT model_id FROM perfect_play_crashes WHERE failed IS NOT NULL)"
            " ORDER BY p.at DESC"
        )
    ]


# -- what people read ----------------------------------------------------------


def rating_table(connection) -> list[dict]:
    """`hexzd ratings`: every rated player with its model's compute, references first.

    perfect_move: the share of won positions where the model's move keeps the
    win at the player's simulations (boards up to 5x5; None elsewhere).
    status: `anchor`, `rated`, or `too few games` (the rating_status view).
    """
    perfect = (
        "(SELECT 1.0 * kept / won FROM perfect_play q WHERE q.model_id = r.model_id AND q.sims = r.sims AND q.won > 0)"
        if has_table(connection, "perfect_play")
        else "NULL"
    )
    return rows(
        connection,
        f"""
        SELECT r.player, r.model_id, r.sims, r.rating, r.rating_lo AS lo, r.rating_hi AS hi, r.games, r.anchor,
               m.promoted_at IS NOT NULL AS promoted, m.selfplay_flops + m.train_flops AS flops,
               m.train_step AS step, {perfect} AS perfect_move, r.status, r.half_width
        FROM rating_status r LEFT JOIN models m ON m.id = r.model_id
        ORDER BY r.model_id IS NOT NULL, r.model_id, r.sims""",
    )


def dashboard(c, series: tuple[str, ...]) -> dict:
    """Everything the dashboard shows from the state file, as plain data."""
    version = c.execute("PRAGMA user_version").fetchone()[0]
    if version == 0:
        raise sqlite3.DatabaseError("not a hexzd state file (no schema yet)")
    gpu = _gpu_names(c)
    return {
        "series": {name: _series(c, name) for name in (*series, *gpu)},
        "gpu": gpu,
        "ratings": promoted_ratings(c),  # few: one row per promotion
        "counters": counters(c),
        "best": best_model(c),
        "models": rows(
            c,
            """
            SELECT m.id, m.parent_id, m.created_at, m.train_step, m.rating, m.rating_lo, m.rating_hi,
                   m.promoted_at, p.score, m.weights IS NOT NULL AS has_weights
            FROM models m LEFT JOIN promotions p ON p.model_id = m.id
            ORDER BY m.id DESC LIMIT ?""",
            (ROWS,),
        ),
        "model_count": c.execute("SELECT COUNT(*) FROM models").fetchone()[0],
        "promotions": rows(
            c,
            """
            SELECT model_id, at, duel_id, score, replaced, wins, losses, llr, train_step
            FROM promotion_history ORDER BY at DESC LIMIT ?""",
            (ROWS,),
        ),
        "promotion_count": c.execute("SELECT COUNT(*) FROM promotions").fetchone()[0],
        "perfect_play": _perfect_play(c),
        # SELECT *: newer schemas add kind (promotion or rating) and opponent_sims, which the views use
        "duels": rows(c, "SELECT * FROM duels ORDER BY id DESC LIMIT ?", (ROWS,)),
        "references": _references(c),
        "tuning": rows(c, "SELECT at, knob, old, new, reason FROM tuning ORDER BY at DESC LIMIT ?", (5,)),
        "config": rows(c, "SELECT id, at, accepted, error FROM config_history ORDER BY id DESC LIMIT ?", (5,)),
        "events": rows(c, "SELECT id, at, level, source, message FROM events ORDER BY id DESC LIMIT ?", (ROWS,)),
    }


def samples_after(connection, name: str, after: float, limit: int) -> list[tuple[float, float]]:
    """Up to `limit` samples of a metric taken after `after`, oldest first: the charts read on from there."""
    return connection.execute(
        "SELECT at, value FROM metrics WHERE name = ? AND at > ? ORDER BY at LIMIT ?", (name, after, limit)
    ).fetchall()


def _gpu_names(connection) -> list[str]:
    """Distinct metric names starting gpu_, one index seek each (the table grows for the whole run)."""
    names: list[str] = []
    last = "gpu_"
    while True:
        row = connection.execute("SELECT MIN(name) FROM metrics WHERE name > ? AND name < 'gpu`'", (last,)).fetchone()
        if row[0] is None:
            return names
        names.append(last := row[0])


def _series(connection, name: str) -> list[tuple[float, float]]:
    """The last HISTORY samples of a metric, oldest first, as (at, value)."""
    samples = connection.execute(
        "SELECT at, value FROM metrics WHERE name = ? ORDER BY at DESC LIMIT ?", (name, HISTORY)
    ).fetchall()
    return samples[::-1]


def _references(connection) -> list[dict]:
    """The rated random-rollout players (the rating scale's anchors), where the schema has them."""
    if not has_table(connection, "ratings"):
        return []
    return rows(
        connection,
        "SELECT player, sims, rating, rating_lo, rating_hi, games, anchor FROM ratings"
        " WHERE model_id IS NULL ORDER BY player = 'perfect', sims",  # perfect play tops the ladder
    )


def _perfect_play(connection) -> dict[int, list[dict]]:
    """Promoted models' results against perfect play, by model id (schema 2 and later)."""
    if not has_table(connection, "perfect_play"):
        return {}
    out: dict[int, list[dict]] = {}
    for row in rows(
        connection,
        "SELECT model_id, sims, won, kept, converted FROM perfect_play ORDER BY model_id DESC, sims LIMIT ?",
        (4 * ROWS,),
    ):
        out.setdefault(row["model_id"], []).append(row)
    return out


# -- hexzd report ---------------------------------------------------------------


def run_span(connection) -> dict:
    """{start, end}: the first and last time anything happened in the run (None for an empty file).

    The first config_history row is the daemon's first start; games, models and
    metrics are looked at too, for files written by other means (the tests)."""
    start, end = connection.execute(
        """
        SELECT MIN(lo), MAX(hi) FROM (
            SELECT MIN(at) AS lo, MAX(at) AS hi FROM config_history
            UNION ALL SELECT MIN(created_at), MAX(created_at) FROM games
            UNION ALL SELECT MIN(created_at), MAX(created_at) FROM models
            UNION ALL SELECT MIN(at), MAX(at) FROM metrics)"""
    ).fetchone()
    return {"start": start, "end": end}


def promoted_ratings(connection) -> list[dict]:
    """Rated promoted snapshots, oldest first, with when they were made and what they cost."""
    return rows(
        connection,
        """
        SELECT c.model_id, m.created_at, m.train_step, c.total_flops, c.rating, c.rating_lo, c.rating_hi
        FROM rating_vs_compute c JOIN models m ON m.id = c.model_id
        WHERE c.promoted ORDER BY c.model_id""",
    )


def rated_compute(connection) -> list[dict]:
    """Every rated snapshot's rating and compute (rating_vs_compute), the cheapest first."""
    return rows(
        connection, "SELECT model_id, total_flops, rating, rating_lo, rating_hi, promoted FROM rating_vs_compute"
    )


def pareto(connection) -> list[dict]:
    """The snapshots rated above every cheaper one (the pareto_front view), the cheapest first."""
    return rows(connection, "SELECT model_id, total_flops, rating, rating_lo, rating_hi FROM pareto_front")


def perfect_play_history(connection) -> list[dict]:
    """Promoted models' results against perfect play, with when each model was made (schema 2 and later)."""
    if not has_table(connection, "perfect_play"):
        return []
    return rows(
        connection,
        """
        SELECT q.model_id, m.created_at, q.sims, q.positions, q.won, q.kept, q.converted
        FROM perfect_play q JOIN models m ON m.id = q.model_id ORDER BY q.sims, q.model_id""",
    )


def metric_history(connection, names) -> list[dict]:
    """Every sample of the metrics `names`, as (name, at, value), by name and time."""
    return rows(
        connection,
        f"SELECT name, at, value FROM metrics WHERE name IN ({', '.join('?' * len(names))}) ORDER BY name, at",
        tuple(names),
    )


def tuning_history(connection) -> list[dict]:
    """Every decision of the tuner, oldest first."""
    return rows(connection, "SELECT at, knob, old, new, reason FROM tuning ORDER BY at, rowid")


# -- TensorBoard event files (hexzd.store.tensorboard_export) ---------------------------
# Each reads on from the rowid it was given: a table's rows are added in commit order by
# the daemon, its one writer, so a rowid above the last one read is a row not yet read
# (retention keeps each series' newest row, so the newest rowid is not freed for reuse).


def run_id(connection) -> str | None:
    """The state file's own id (`run` in meta, schema 7 on), or None in an older file."""
    row = connection.execute("SELECT value FROM meta WHERE key = 'run'").fetchone()
    return row[0] if row else None


def metric_samples_after(connection, after: int, limit: int) -> list[tuple]:
    """(rowid, at, source, name, value, train_step) of up to `limit` metric samples with rowids
    above `after`, oldest first; train_step is the one the trainer reported with the sample (its
    source, at the same moment), None for samples that came without one."""
    return connection.execute(
        "SELECT m.rowid, m.at, m.source, m.name, m.value, t.value FROM metrics m"
        " LEFT JOIN metrics t ON t.name = 'train_step' AND t.at = m.at AND t.source = m.source"
        " WHERE m.rowid > ? ORDER BY m.rowid LIMIT ?",
        (after, limit),
    ).fetchall()


def tuning_after(connection, after: int) -> list[tuple]:
    """(rowid, at, knob, new) of the tuner's decisions with rowids above `after`, oldest first."""
    return connection.execute(
        "SELECT rowid, at, knob, new FROM tuning WHERE rowid > ? AND new IS NOT NULL ORDER BY rowid", (after,)
    ).fetchall()


def promotions_after(connection, after: int) -> list[tuple]:
    """(model_id, at, score, train_step) of the promotions of models above `after`, in model order
    (a promotion duel's candidate is newer than every earlier one's)."""
    return connection.execute(
        "SELECT p.model_id, p.at, p.score, m.train_step FROM promotions p JOIN models m ON m.id = p.model_id"
        " WHERE p.model_id > ? ORDER BY p.model_id",
        (after,),
    ).fetchall()


def ratings_fitted_at(connection) -> float | None:
    """When the ratings were last fitted (the ratings table's rows all carry it); None before the first fit."""
    return connection.execute("SELECT MAX(updated_at) FROM ratings").fetchone()[0]


# -- hexzd league -----------------------------------------------------------------


def timed_results(connection) -> list[tuple]:
    """(created_at, candidate_id, sims, opponent_id, opponent_sims, candidate won, opponent_engine,
    duel_id, pair) of every duel game, oldest first: the results as they stood at any time."""
    columns = {row[1] for row in connection.execute("PRAGMA table_info(duels)")}
    engine = "d.opponent_engine" if "opponent_engine" in columns else "NULL"  # schema 5 on
    return connection.execute(
        f"""
        SELECT g.created_at, d.candidate_id, d.sims, d.opponent_id, d.opponent_sims,
            g.winner = g.candidate_colour, {engine}, g.duel_id, g.pair
        FROM duel_games g JOIN duels d ON d.id = g.duel_id ORDER BY g.created_at"""
    ).fetchall()


def promotion_times(connection) -> list[tuple[int, float]]:
    """(model_id, at) of every promotion, oldest first."""
    return connection.execute("SELECT model_id, at FROM promotions ORDER BY at").fetchall()


def first_model_at(connection) -> float | None:
    """When the run's first model was stored: with the file's path, what tells one run from a later one there."""
    row = connection.execute("SELECT created_at FROM models ORDER BY id LIMIT 1").fetchone()
    return row[0] if row else None


def rateable_snapshots(connection) -> list[dict]:
    """The promoted snapshots that can still play (weights kept), in order of promotion,
    with what the league file copies of each."""
    return rows(
        connection,
        """
        SELECT m.id AS model_id, m.created_at, p.at AS promoted_at, m.train_step, m.params, m.flops_per_eval,
               m.selfplay_flops, m.train_flops, m.wall_seconds, m.cpu_seconds, m.positions_generated
        FROM promotions p JOIN models m ON m.id = p.model_id WHERE m.weights IS NOT NULL ORDER BY p.at, p.model_id""",
    )


# -- hexzd doctor -------------------------------------------------------------------


def events_where(connection, levels=(), containing=()) -> list[dict]:
    """The events of any of `levels`, or whose message contains any of `containing`
    (case-insensitive), oldest first."""
    tests = [f"level IN ({', '.join('?' * len(levels))})"] if levels else []
    tests += ["message LIKE ?"] * len(containing)
    if not tests:
        return []
    return rows(
        connection,
        f"SELECT id, at, level, source, message FROM events WHERE {' OR '.join(tests)} ORDER BY id",
        (*levels, *(f"%{text}%" for text in containing)),
    )


# -- hexzd games ---------------------------------------------------------------------

RECORD_COLUMNS = "id, model_id, sims, board_size, moves, winner, created_at"
MATCH_RECORD_COLUMNS = """g.id, g.duel_id, d.kind, g.moves, g.winner, g.candidate_colour, g.created_at,
    d.candidate_id, d.sims, d.opponent_id, d.opponent_sims"""


def has_model(connection, model_id: int) -> bool:
    return connection.execute("SELECT 1 FROM models WHERE id = ?", (model_id,)).fetchone() is not None


def selfplay_records(connection, model: int | None, first: int, last: int | None, newest: int | None) -> list[dict]:
    """`hexzd games`: the self-play games with ids from `first` to `last` (None: no end), of
    model `model` (None: any), the newest `newest` of them (None: all), oldest first, as
    RECORD_COLUMNS."""
    found = rows(
        connection,
        f"""
        SELECT {RECORD_COLUMNS} FROM games
        WHERE (:model IS NULL OR model_id = :model) AND id >= :first AND (:last IS NULL OR id <= :last)
        ORDER BY id DESC LIMIT COALESCE(:newest, -1)""",
        {"model": model, "first": first, "last": last, "newest": newest},
    )
    return found[::-1]


def match_records(
    connection, kinds: tuple[str, ...], model: int | None, first: int, last: int | None, newest: int | None
) -> list[dict]:
    """`hexzd games`: the games of the duels of `kinds` (promotion, rating), selected as
    `selfplay_records` selects, `model` as either player; oldest first, as
    MATCH_RECORD_COLUMNS and the opponent's engine (NULL in files before schema 5)."""
    columns = {row[1] for row in connection.execute("PRAGMA table_info(duels)")}
    engine = "d.opponent_engine" if "opponent_engine" in columns else "NULL"
    found = rows(
        connection,
        f"""
        SELECT {MATCH_RECORD_COLUMNS}, {engine} AS opponent_engine
        FROM duel_games g JOIN duels d ON d.id = g.duel_id
        WHERE d.kind IN ({", ".join("?" * len(kinds))}) AND (? IS NULL OR ? IN (d.candidate_id, d.opponent_id))
            AND g.id >= ? AND (? IS NULL OR g.id <= ?)
        ORDER BY g.id DESC LIMIT COALESCE(?, -1)""",
        (*kinds, model, model, first, last, last, newest),
    )
    return found[::-1]
