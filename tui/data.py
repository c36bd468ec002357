"""What the dashboard shows, gathered without any widget: plain functions, testable alone.

`snapshot(db)` reads the state file through a read-only connection;
`query_daemon(db, command)` asks the daemon over its ZeroMQ control socket.
Both block briefly, so the dashboard runs them in a thread.
"""

import sqlite3
import time
from pathlib import Path

from hexzd import store
from hexzd.daemon.control import DaemonError
from hexzd.daemon.control import ask as query_daemon

__all__ = ["SERIES", "DaemonError", "query_daemon", "snapshot"]  # the control client re-exported: there is one

SERIES = ("games_per_s", "positions_per_s", "train_step_per_s", "train_waiting", "policy_loss", "value_loss", "lr")


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
        snap.update(store.dashboard(connection, SERIES))
    except sqlite3.Error as e:
        snap["error"] = f"cannot read {db}: {e}"
    finally:
        connection.close()
    return snap
