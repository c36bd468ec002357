"""What the dashboard shows, gathered without any widget: plain functions, testable alone.

`snapshot(db)` reads the state file through a read-only connection;
`query_daemon(db, command)` asks the daemon over its ZeroMQ control socket.
Both block briefly, so the dashboard runs them in a thread.
"""
import sqlite3
import time
from pathlib import Path

from hexzd import store
from hexzd.daemon.control import DaemonError, ask as query_daemon  # noqa: F401 (re-exported: the one control client)

SERIES = ("games_per_s", "positions_per_s", "train_step_per_s", "train_waiting", "policy_loss", "value_loss", "lr")
HISTORY = 40  # samples per series: enough for a sparkline
ROWS = 8  # rows of each table


def _rows(connection, sql, params=()) -> list[dict]:
    cursor = connection.execute(sql, params)
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row)) for row in cursor.fetchall()]


def _gpu_names(connection) -> list[str]:
    """Distinct metric names starting gpu_, one index seek each (the table grows for the whole run)."""
    names, last = [], "gpu_"
    while True:
        row = connection.execute("SELECT MIN(name) FROM metrics WHERE name > ? AND name < 'gpu`'",
                                 (last,)).fetchone()
        if row[0] is None:
            return names
        names.append(last := row[0])


def _series(connection, name: str) -> list[tuple[float, float]]:
    """The last HISTORY samples of a metric, oldest first, as (at, value)."""
    rows = connection.execute("SELECT at, value FROM metrics WHERE name = ? ORDER BY at DESC LIMIT ?",
                              (name, HISTORY)).fetchall()
    return rows[::-1]


def _references(connection) -> list[dict]:
    """The rated random-rollout players (the rating scale's anchors), where the schema has them."""
    if not connection.execute("SELECT 1 FROM sqlite_master WHERE name = 'ratings'").fetchone():
        return []
    return _rows(connection, "SELECT player, sims, rating, rating_lo, rating_hi, games, anchor FROM ratings"
                             " WHERE model_id IS NULL ORDER BY sims")


def _perfect_play(connection) -> dict[int, list[dict]]:
    """Promoted models' results against perfect play, by model id (schema 2 and later)."""
    if not connection.execute("SELECT 1 FROM sqlite_master WHERE name = 'perfect_play'").fetchone():
        return {}
    out: dict[int, list[dict]] = {}
    for row in _rows(connection, "SELECT model_id, sims, won, kept, converted FROM perfect_play"
                                 " ORDER BY model_id DESC, sims LIMIT ?", (4 * ROWS,)):
        out.setdefault(row["model_id"], []).append(row)
    return out


def snapshot(db) -> dict:
    """Everything the dashboard shows from the state file, as plain data.

    A missing or unreadable file gives {"db", "now", "error"} and nothing else.
    """
    snap = {"db": str(db), "now": time.time(), "error": None}
    if not Path(db).exists():
        snap["error"] = f"no state file at {db} yet"
        return snap
    try:
        connection = store.read_only(db, timeout=2.0)
    except sqlite3.Error as e:
        snap["error"] = f"cannot open {db}: {e}"
        return snap
    try:
        snap.update(_read(connection))
    except sqlite3.Error as e:
        snap["error"] = f"cannot read {db}: {e}"
    finally:
        connection.close()
    return snap


def _read(c) -> dict:
    version = c.execute("PRAGMA user_version").fetchone()[0]
    if version == 0:
        raise sqlite3.DatabaseError("not a hexzd state file (no schema yet)")
    gpu = _gpu_names(c)
    counters = {row["key"].removeprefix("counter."): float(row["value"]) for row in _rows(
        c, "SELECT key, value FROM meta WHERE key LIKE 'counter.%'")}
    return {
        "series": {name: _series(c, name) for name in (*SERIES, *gpu)},
        "gpu": gpu,
        "counters": counters,
        "best": store.best_model(c),
        "models": _rows(c, """
            SELECT m.id, m.parent_id, m.created_at, m.train_step, m.rating, m.rating_lo, m.rating_hi,
                   m.promoted_at, p.score, m.weights IS NOT NULL AS has_weights
            FROM models m LEFT JOIN promotions p ON p.model_id = m.id
            ORDER BY m.id DESC LIMIT ?""", (ROWS,)),
        "model_count": c.execute("SELECT COUNT(*) FROM models").fetchone()[0],
        "promotions": _rows(c, """
            SELECT model_id, at, duel_id, score, replaced, wins, losses, llr, train_step
            FROM promotion_history ORDER BY at DESC LIMIT ?""", (ROWS,)),
        "promotion_count": c.execute("SELECT COUNT(*) FROM promotions").fetchone()[0],
        "perfect_play": _perfect_play(c),
        # SELECT *: newer schemas add kind (promotion or rating) and opponent_sims, which the views use
        "duels": _rows(c, "SELECT * FROM duels ORDER BY id DESC LIMIT ?", (ROWS,)),
        "references": _references(c),
        "tuning": _rows(c, "SELECT at, knob, old, new, reason FROM tuning ORDER BY at DESC LIMIT ?", (5,)),
        "config": _rows(c, "SELECT id, at, accepted, error FROM config_history ORDER BY id DESC LIMIT ?",
                        (5,)),
        "events": _rows(c, "SELECT id, at, level, source, message FROM events ORDER BY id DESC LIMIT ?",
                        (ROWS,)),
    }
