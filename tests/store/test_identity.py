"""Whose file it is: every command refuses a state file it cannot use in one line, and reads a read-only one.

Real files of every kind a user may hand to `--db`: a state file cut short, a
text file, other programs' SQLite files (with and without an application_id,
with and without a user_version of their own), hexzd's league file, a state
file of a newer hexzd. Each command is run through the real command line
(click's runner) and must answer `hexzd: FILE: reason` on one line, exit code 1,
no traceback. A file of an earlier hexzd (application_id 0) is still read, and
takes the id when it is next opened to write.
"""

import gc
import os
import shutil
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest
from click.testing import CliRunner
from states import add_model

from hexzd import store
from hexzd.cli import main
from hexzd.store import ladder
from hexzd.store import league_file as league

V = store.VERSION
OTHER_ID = 0x12345678  # another program's application_id


def state_file(path: Path, promoted: bool = True) -> Path:
    """A state file as a stopped daemon leaves it: a promoted 3x3 snapshot, events, no -wal or -shm."""
    store.prepare(path)
    if promoted:
        add_model(path, board_size=3)
    with closing(sqlite3.connect(path)) as c, c:
        c.executemany(
            "INSERT INTO events (at, level, source, message) VALUES (0, 'info', 'test', ?)",
            [("x" * 400,) for _ in range(200)],  # pages enough that half the file is not the file
        )
    gc.collect()  # add_model's connection, left open by its `with`: closed, the WAL checkpointed
    return path


def truncated(path: Path) -> Path:
    state_file(path)
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 2)
    return path


def not_sqlite(path: Path) -> Path:
    path.write_text("a run's notes, not a database\n" * 100)
    return path


def sqlite_of(path: Path, *statements: str) -> Path:
    with closing(sqlite3.connect(path)) as c:
        for sql in statements:
            c.execute(sql)
        c.commit()
    return path


def foreign(path: Path) -> Path:
    return sqlite_of(path, "CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")


def foreign_versioned(path: Path) -> Path:
    """Another program that versions its schema as hexzd does, and has a `meta` table too."""
    return sqlite_of(path, "CREATE TABLE meta (key TEXT, value TEXT)", "PRAGMA user_version = 3")


def foreign_with_id(path: Path) -> Path:
    return sqlite_of(path, f"PRAGMA application_id = {OTHER_ID}", "CREATE TABLE models (id INTEGER)")


def league_file(path: Path) -> Path:
    league.open_league(path).close()
    return path


def newer(path: Path) -> Path:
    state_file(path, promoted=False)
    return sqlite_of(path, f"PRAGMA user_version = {V + 1}")


UNUSABLE = {  # how to make the file, and what every command says of it
    "truncated": (truncated, "damaged or truncated (database disk image is malformed)"),
    "not SQLite": (not_sqlite, "not a hexzd state file (file is not a database)"),
    "foreign": (foreign, "not a hexzd state file (another program's SQLite file: its tables are not hexzd's)"),
    "foreign, versioned": (
        foreign_versioned,
        "not a hexzd state file (another program's SQLite file: its tables are not hexzd's)",
    ),
    "foreign, with an id": (
        foreign_with_id,
        f"not a hexzd state file (another program's SQLite file: application_id {OTHER_ID:#x})",
    ),
    "a league file": (league_file, "not a hexzd state file (it is a hexzd league file)"),
    "newer": (newer, f"schema version {V + 1}, newer than this hexzd's {V}: upgrade hexzd"),
}

COMMANDS = {
    "status": ["status"],
    "stop": ["stop"],
    "attach": ["attach"],
    "ratings": ["ratings"],
    "report": ["report", "--out", "{tmp}/figures"],
    "htp": ["htp"],
    "play": ["play"],
    "perfect": ["perfect"],
    "start": ["start", "--headless", "--config", "{tmp}/config.toml", "--for", "1s"],
}


def hexzd(tmp_path: Path, db: Path, command: str, stdin: str = ""):
    args = [a.format(tmp=tmp_path) for a in COMMANDS[command]] + ["--db", str(db)]
    return CliRunner().invoke(main, args, input=stdin)


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("kind", UNUSABLE)
def test_every_command_refuses_a_file_it_cannot_use_in_one_line(tmp_path, kind, command):
    make, reason = UNUSABLE[kind]
    db = make(tmp_path / "run.sqlite")
    before = db.read_bytes()
    result = hexzd(tmp_path, db, command, stdin="quit\n")
    assert (result.exit_code, result.output) == (1, f"hexzd: {db}: {reason}\n"), result.exception
    assert isinstance(result.exception, SystemExit)  # no traceback
    assert db.read_bytes() == before  # nothing adopted, migrated or marked


def newer_league(path: Path) -> Path:
    return sqlite_of(league_file(path), f"PRAGMA user_version = {league.VERSION + 1}")


@pytest.mark.parametrize("kind", ["not SQLite", "foreign", "foreign, with an id", "newer"])
def test_the_league_refuses_a_league_file_it_cannot_use_in_one_line(tmp_path, kind):
    make, reason = UNUSABLE[kind]
    if kind == "newer":
        make, reason = newer_league, f"schema version {league.VERSION + 1}, newer than this hexzd's {league.VERSION}"
    db = make(tmp_path / "league.sqlite")
    before = db.read_bytes()
    result = CliRunner().invoke(main, ["league", "--db", str(db)])
    reason = reason.replace("state file", "league file") + (": upgrade hexzd" if kind == "newer" else "")
    assert (result.exit_code, result.output) == (1, f"hexzd: {db}: {reason}\n"), result.exception
    assert db.read_bytes() == before
    state = state_file(tmp_path / "run.sqlite", promoted=False)
    result = CliRunner().invoke(main, ["league", "--db", str(state)])
    assert result.output == f"hexzd: {state}: not a hexzd league file (it is a hexzd state file)\n"


@pytest.mark.e2e
@pytest.mark.parametrize("command", ["htp", "ratings", "start"])
def test_a_real_process_says_it_in_one_line_on_stderr(tmp_path, command):
    db = not_sqlite(tmp_path / "run.sqlite")
    args = [a.format(tmp=tmp_path) for a in COMMANDS[command]]
    run = subprocess.run(
        [sys.executable, "-m", "hexzd", *args, "--db", str(db)],
        input="quit\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (run.returncode, run.stdout) == (1, "")
    assert run.stderr == f"hexzd: {db}: not a hexzd state file (file is not a database)\n"


def test_new_files_carry_their_kind_and_other_kinds_are_refused(tmp_path):
    db, league_db, kept = tmp_path / "run.sqlite", tmp_path / "league.sqlite", tmp_path / "ladder.sqlite"
    store.prepare(db)
    league.open_league(league_db).close()
    ladder.keep(kept, "4x4", "run", [])
    ids = {}
    for path in (db, league_db, kept):
        with closing(sqlite3.connect(path)) as c:
            ids[path.name] = c.execute("PRAGMA application_id").fetchone()[0]
    assert ids == {"run.sqlite": 0x6865787A, "league.sqlite": 0x6865784C, "ladder.sqlite": 0x6865784B}
    with pytest.raises(store.StateFileError, match=r"^not a hexzd league file \(it is a hexzd kept ladder\)$"):
        league.open_league(kept)
    with pytest.raises(store.StateFileError, match=r"^not a hexzd kept ladder \(it is a hexzd state file\)$"):
        ladder.keep(db, "4x4", "run", [])
    with pytest.raises(store.StateFileError, match=r"^not a hexzd state file \(it is a hexzd kept ladder\)$"):
        store.read_only(kept)


def test_a_foreign_file_is_neither_adopted_nor_changed(tmp_path):
    """It used to be: user_version 0 read as a new file, and the state file's schema written into it."""
    for make in (foreign, foreign_versioned, foreign_with_id):
        db = make(tmp_path / f"{make.__name__}.sqlite")
        before = db.read_bytes()
        with pytest.raises(store.StateFileError, match=r"^not a hexzd state file \(another program's SQLite file"):
            store.prepare(db)
        with pytest.raises(store.StateFileError, match=r"^not a hexzd state file \(another program's SQLite file"):
            store.read_only(db)
        assert db.read_bytes() == before
        assert not Path(f"{db}-wal").exists()  # not even switched to WAL


def test_an_empty_file_is_a_new_state_file_to_write_and_no_state_file_to_read(tmp_path):
    db = tmp_path / "run.sqlite"
    db.touch()
    with pytest.raises(store.StateFileError, match=r"^not a hexzd state file \(it has no schema\)$"):
        store.read_only(db)
    store.writable(db)
    assert store.prepare(db) == 0
    with store.read_only(db) as c:
        assert store.best_model(c) is None


def earlier_state_file(path: Path, version: int) -> Path:
    """A state file as hexzd at schema `version` made it, before application_ids: id 0."""
    with closing(sqlite3.connect(path, isolation_level=None)) as c:
        c.execute("PRAGMA journal_mode = WAL")
        for target in range(1, version + 1):
            c.executescript(f"BEGIN; {store.MIGRATIONS[target - 1]}; PRAGMA user_version = {target}; COMMIT;")
        c.execute("INSERT INTO events (at, level, source, message) VALUES (1, 'info', 't', 'kept')")
    return path


@pytest.mark.parametrize("version", [1, 7])
def test_a_file_of_an_earlier_hexzd_is_read_then_marked_on_its_next_write_open(tmp_path, version):
    db = earlier_state_file(tmp_path / "run.sqlite", version)
    with store.consistent_read(db) as c:
        assert c.execute("SELECT message FROM events").fetchall() == [("kept",)]
    store.writable(db)
    with closing(sqlite3.connect(db)) as c:
        assert c.execute("PRAGMA application_id").fetchone() == (0,)  # reading wrote nothing
    assert store.prepare(db) == version
    with closing(sqlite3.connect(db)) as c:
        assert c.execute("PRAGMA application_id").fetchone() == (0x6865787A,)
        assert c.execute("PRAGMA user_version").fetchone() == (V,)
        assert c.execute("SELECT message FROM events").fetchall() == [("kept",)]


def test_a_league_file_of_an_earlier_hexzd_is_marked_on_its_next_open(tmp_path):
    path = tmp_path / "league.sqlite"
    with closing(sqlite3.connect(path, isolation_level=None)) as c:
        c.executescript(f"BEGIN; {league.MIGRATIONS[0]}; PRAGMA user_version = 1; COMMIT;")
    league.open_league(path).close()
    with closing(sqlite3.connect(path)) as c:
        assert c.execute("PRAGMA application_id").fetchone() == (0x6865784C,)
        assert c.execute("PRAGMA user_version").fetchone() == (league.VERSION,)


# -- read-only files -------------------------------------------------------------


def lock(target: Path) -> None:
    """Makes a file or a folder read-only, for root too (chattr +i: root ignores the mode bits)."""
    target.chmod(0o555 if target.is_dir() else 0o444)
    if os.geteuid() == 0 and shutil.which("chattr"):
        subprocess.run(["chattr", "+i", str(target)], capture_output=True)
    if os.access(target, os.W_OK):
        unlock(target)
        pytest.skip(f"cannot make {target} read-only here")


def unlock(target: Path) -> None:
    if os.geteuid() == 0 and shutil.which("chattr"):
        subprocess.run(["chattr", "-i", str(target)], capture_output=True)
    target.chmod(0o755 if target.is_dir() else 0o644)


@pytest.fixture(params=["file", "folder"])
def read_only_run(request, tmp_path):
    """A stopped run's state file, read-only: the file itself, or the folder it is in."""
    db = state_file((tmp_path / "ro").mkdir() or tmp_path / "ro" / "run.sqlite")
    target = db if request.param == "file" else db.parent
    lock(target)
    try:
        yield db
    finally:
        unlock(target)


def test_a_read_only_state_file_is_read_by_every_reader(read_only_run, tmp_path):
    db = read_only_run
    before = db.read_bytes()
    result = hexzd(tmp_path, db, "ratings")
    assert result.exit_code == 0 and "no ratings yet" in result.output, result.output
    result = hexzd(tmp_path, db, "htp", stdin="name\ngenmove b\nquit\n")
    assert result.exit_code == 0 and result.output.startswith("= hexzd\n\n= "), result.output
    result = hexzd(tmp_path, db, "status")
    assert result.exit_code == 1 and "no hexzd daemon answers" in result.output
    result = hexzd(tmp_path, db, "report")
    assert result.exit_code == 0, result.output
    with store.consistent_read(db) as c:
        assert c.execute("SELECT COUNT(*) FROM events").fetchone() == (200,)
    assert db.read_bytes() == before


def test_a_read_only_state_file_is_refused_by_start_with_the_reason(read_only_run, tmp_path):
    db = read_only_run
    result = hexzd(tmp_path, db, "start")
    if os.access(db, os.W_OK):  # the folder is read-only: SQLite cannot make its -wal and -shm there
        reason = f"read-only: its folder {db.parent} cannot be written (SQLite keeps a -wal and a -shm file there)"
    else:
        reason = "read-only: this user may not write the file"
    assert (result.exit_code, result.output) == (1, f"hexzd: {db}: {reason}\n"), result.exception
    with pytest.raises(store.StateFileError, match="^read-only: "):
        store.prepare(db)  # the daemon's own open says the same


# -- damaged or busy: what the daemon stops on and what it retries ------------------------


def test_damage_is_told_from_a_busy_file(tmp_path):
    cut = truncated(tmp_path / "cut.sqlite")
    with closing(sqlite3.connect(cut)) as c, pytest.raises(sqlite3.DatabaseError) as damage:
        c.execute("SELECT COUNT(*) FROM events").fetchone()
    assert store.damaged(damage.value)
    with closing(sqlite3.connect(not_sqlite(tmp_path / "text.sqlite"))) as c, pytest.raises(sqlite3.DatabaseError) as e:
        c.execute("SELECT 1 FROM sqlite_master").fetchone()
    assert store.damaged(e.value)
    with pytest.raises(store.DamagedFile) as refused, store.consistent_read(cut):
        pass
    assert store.damaged(refused.value)
    db = state_file(tmp_path / "run.sqlite", promoted=False)
    with closing(sqlite3.connect(db, isolation_level=None)) as holder, closing(sqlite3.connect(db, timeout=0)) as other:
        holder.execute("BEGIN IMMEDIATE")
        with pytest.raises(sqlite3.OperationalError, match="locked") as busy:
            other.execute("INSERT INTO meta VALUES ('k', 'v')")
        holder.execute("ROLLBACK")
    assert not store.damaged(busy.value)
    assert not store.damaged(store.StateFileError("cannot be read: database is locked"))
    assert not store.damaged(OSError("disk full"))


def test_attach_to_a_missing_file_says_so_at_once(tmp_path):
    """It used to open the dashboard on nothing, and wait there for a daemon that would never come."""
    db = tmp_path / "run.sqlite"
    run = subprocess.run(
        [sys.executable, "-m", "hexzd", "attach", "--db", str(db)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (run.returncode, run.stdout) == (1, "")
    assert run.stderr == f"hexzd: {db}: no such file: no run there to show; `hexzd start --db {db}` starts one\n"
    assert not db.exists()
