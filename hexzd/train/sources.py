"""Where the trainer's finished games come from.

SqliteGames   the run's state file, read-only (the daemon's runs)
RecordFile    JSON lines, one game a line (runs without a daemon, tests)
"""

import json
from base64 import b64decode, b64encode
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Protocol

from hexzd import store
from hexzd.game.records import GameRecord


class GameSource(Protocol):
    """Where finished games come from. A cursor marks how far it has been read.

    Items are GameRecords, or the exception that stopped one from being read,
    so that the trainer can report it and go on.
    """

    cursor: int

    def read(self, limit: int) -> list[GameRecord | Exception]:
        """Up to `limit` games after the cursor, oldest first; moves the cursor past them."""
        ...

    def history(self, cursor: int) -> Iterator[GameRecord | Exception]:
        """The games up to and including `cursor`, newest first."""
        ...


def _record_of_row(row) -> GameRecord | Exception:
    """A game from a row of store.games_after or store.games_through."""
    _, board_size, moves, winner, policy, sims, model_id = row
    if not isinstance(moves, str) or not isinstance(policy, bytes):
        return ValueError(f"game {row[0]}: moves or policy of the wrong type")
    return GameRecord(board_size, moves, winner, policy, sims or 0, model_id)


class SqliteGames:
    """The `games` table of the run's state file, through a read-only connection.

    WAL lets this reader run beside the daemon's writer; each query sees the
    games committed before it. The cursor is the id of the last game read.
    """

    def __init__(self, path, cursor: int = 0):
        self.connection = store.read_only(path)
        self.cursor = cursor

    def read(self, limit: int) -> list[GameRecord | Exception]:
        rows = store.games_after(self.connection, self.cursor, limit)
        if rows:
            self.cursor = rows[-1][0]
        return [_record_of_row(row) for row in rows]

    def history(self, cursor: int) -> Iterator[GameRecord | Exception]:
        for row in store.games_through(self.connection, cursor):
            yield _record_of_row(row)

    def close(self) -> None:
        self.connection.close()


def record_to_json(record: GameRecord) -> str:
    data = asdict(record)
    data["policy"] = b64encode(record.policy).decode()
    return json.dumps(data)


def record_from_json(line: bytes) -> GameRecord | Exception:
    try:
        data = json.loads(line)
        data["policy"] = b64decode(data["policy"], validate=True)
        return GameRecord(**data)
    except (ValueError, TypeError, KeyError) as e:
        return ValueError(f"unreadable record line: {e!r}")


def write_records(path, records) -> None:
    """Appends games to a RecordFile, one JSON object a line."""
    with open(path, "a") as f:
        for record in records:
            f.write(record_to_json(record) + "\n")


class RecordFile:
    """A plain file of games, one JSON object a line (`write_records`).

    The policy blob is base64. The cursor is a byte offset; a last line
    without its newline is still being written and waits for the next read.
    """

    def __init__(self, path, cursor: int = 0):
        self.path = Path(path)
        self.cursor = cursor

    def _lines(self, start: int, stop: int | None = None) -> list[tuple[int, bytes]]:
        """(end offset, line) of the complete lines in [start, stop)."""
        if not self.path.exists():
            return []
        with open(self.path, "rb") as f:
            f.seek(start)
            data = f.read() if stop is None else f.read(stop - start)
        out, offset = [], start
        for line in data.splitlines(keepends=True):
            if not line.endswith(b"\n"):
                break
            offset += len(line)
            out.append((offset, line))
        return out

    def read(self, limit: int) -> list[GameRecord | Exception]:
        lines = self._lines(self.cursor)[:limit]
        if lines:
            self.cursor = lines[-1][0]
        return [record_from_json(line) for _, line in lines]

    def history(self, cursor: int) -> Iterator[GameRecord | Exception]:
        for _, line in reversed(self._lines(0, cursor)):
            yield record_from_json(line)
