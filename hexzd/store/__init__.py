"""The state file: one SQLite database per run, queried by users while it runs.

The daemon is its only writer (aiosqlite, WAL, one connection); workers and
users read it through read-only connections, which WAL lets run beside the
writer. Every write is a transaction, so a `kill -9` at any moment leaves
the file as of the last commit: nothing committed is lost, nothing half
written is seen.

Every SQL statement of hexzd is in this package:
    schema   the tables and views, and the migrations between versions
    reads    the queries of workers, the CLI and the dashboard (sqlite3, sync)
    writes   the daemon's statements (aiosqlite), one method per kind of result
"""

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import aiosqlite

from hexzd.store.reads import (  # noqa: F401 (the package is the one entry point)
    best_model,
    config_text,
    counters,
    dashboard,
    duel,
    duel_results,
    evaluation_seconds,
    games_after,
    games_through,
    has_table,
    latest_checkpoint,
    next_duel,
    pairing_games,
    rating_table,
    run_span,
    samples_after,
    stop_reason,
    unjudged_promotions,
    weights,
)
from hexzd.store.schema import MIGRATIONS, VERSION, StateFileError, migrate, prepare  # noqa: F401


def read_only(path, timeout: float = 10.0) -> sqlite3.Connection:
    """A reader's connection: it can never write, and waits out the writer's locks.

    Use it in a `with` block to have it closed at the end (sqlite3's own
    context manager only ends a transaction).
    """
    uri = Path(path).resolve().as_uri() + "?mode=ro"
    connection = ReadOnly(uri, uri=True, timeout=timeout, check_same_thread=False)
    connection.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
    return connection


@contextmanager
def consistent_read(path, timeout: float = 10.0) -> Iterator[sqlite3.Connection]:
    """A read-only connection (`read_only`) in one read transaction, so that every query in
    the block sees the file as of one moment though its daemon writes on.

    Raises StateFileError, with a reason that does not name the file, for a file with no
    schema (not hexzd's), a newer schema than this code's, or one that cannot be read
    (sqlite3.Error, in the block too: "cannot be read: ...")."""
    try:
        with read_only(path, timeout) as connection:
            connection.execute("BEGIN")
            version = connection.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                raise StateFileError("not a hexzd state file (it has no schema)")
            if version > VERSION:
                raise StateFileError(f"schema version {version} is newer than this hexzd's {VERSION}: upgrade hexzd")
            yield connection
    except sqlite3.Error as e:
        raise StateFileError(f"cannot be read: {e}") from None


class ReadOnly(sqlite3.Connection):
    """A connection that `with` closes."""

    def __exit__(self, *exc) -> Literal[False]:
        self.close()
        return False


async def writer(path) -> aiosqlite.Connection:
    """The daemon's one connection. synchronous=NORMAL in WAL: a commit survives
    a crash of the process (kill -9); only a power cut may lose the last ones."""
    prepare(path)
    connection = await aiosqlite.connect(path, isolation_level=None)
    await connection.execute("PRAGMA busy_timeout = 10000")
    await connection.execute("PRAGMA synchronous = NORMAL")
    await connection.execute("PRAGMA foreign_keys = ON")
    return connection
