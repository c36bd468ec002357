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
    filesystem  whether a folder is on a network filesystem, where WAL does not work
"""

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import aiosqlite

from hexzd.store.filesystem import check_local
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
from hexzd.store.schema import (  # noqa: F401
    APPLICATION_IDS,
    MIGRATIONS,
    SQLITE_CANTOPEN,
    SQLITE_READONLY,
    STATE,
    VERSION,
    DamagedFile,
    StateFileError,
    check_writable,
    damaged,
    disk_full,
    identify,
    migrate,
    prepare,
    refusal,
)


def read_only(path, timeout: float = 10.0) -> sqlite3.Connection:
    """A reader's connection: it can never write, and waits out the writer's locks.

    Raises StateFileError for a file that is not a state file this code can read
    (schema.identify), or one with no schema yet. Use it in a `with` block to have
    it closed at the end (sqlite3's own context manager only ends a transaction).
    """
    connection = _reader(path, timeout)
    try:
        version, _ = identify(connection)
    except StateFileError:
        connection.close()
        raise
    if version == 0:
        connection.close()
        raise StateFileError("not a hexzd state file (it has no schema)")
    return connection


def _reader(path, timeout: float) -> "ReadOnly":
    """A read-only connection that has read the file's header; StateFileError if it cannot.

    A file in WAL mode is read with the -shm file beside it, which a reader makes
    when there is none. In a folder it cannot write, with no -wal file there either,
    no writer can be at work: the file is read as it stands (immutable)."""
    path = Path(path).resolve()
    try:
        return _opened(f"{path.as_uri()}?mode=ro", timeout)
    except sqlite3.Error as e:
        code = (getattr(e, "sqlite_errorcode", None) or 0) & 0xFF
        stands = path.is_file() and not Path(f"{path}-wal").exists() and not os.access(path.parent, os.W_OK)
        if code not in (SQLITE_READONLY, SQLITE_CANTOPEN) or not stands:
            raise refusal(e) from None
    try:
        return _opened(f"{path.as_uri()}?mode=ro&immutable=1", timeout)
    except sqlite3.Error as e:
        raise refusal(e) from None


def _opened(uri: str, timeout: float) -> "ReadOnly":
    connection = ReadOnly(uri, uri=True, timeout=timeout, check_same_thread=False)
    try:
        connection.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
        connection.execute("PRAGMA schema_version").fetchone()  # the first read: the header, the WAL's index
    except sqlite3.Error:
        connection.close()
        raise
    return connection


def writable(path) -> None:
    """Raises StateFileError unless the daemon could open `path` to write: a file that is not
    a state file this code can use, read-only (the file, or its folder), or in a folder on a
    network filesystem (filesystem.check_local). Writes nothing."""
    if Path(path).is_file() and Path(path).stat().st_size:
        with _reader(path, 10.0) as connection:
            identify(connection)
    check_writable(path)
    check_local(path)


@contextmanager
def consistent_read(path, timeout: float = 10.0) -> Iterator[sqlite3.Connection]:
    """A read-only connection (`read_only`) in one read transaction, so that every query in
    the block sees the file as of one moment though its daemon writes on.

    Raises StateFileError, with a reason that does not name the file, for a file that
    `read_only` refuses, or a sqlite3.Error in the block (`schema.refusal`: damaged,
    or "cannot be read: ...")."""
    try:
        with read_only(path, timeout) as connection:
            connection.execute("BEGIN")
            yield connection
    except sqlite3.Error as e:
        raise refusal(e) from None


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
