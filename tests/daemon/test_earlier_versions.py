"""A state file and a config.toml that an earlier hexzd wrote open and resume.

tests/data/run-2026-12-04.sqlite.gz is a real run of main as it stood on
2026-12-04 (commit 14eafc4), on a 4x4 board with a 1x8 network, stopped after
20 seconds: 2,622 games, 60 snapshots (10 with weights), 3 promotions, 28
duels and rating matches. tests/data/run-2026-12-04.toml is the config.toml it
ran with, under that day's key names (selfplay.games, duel.cpu_share).
"""

import gzip
import shutil
import sqlite3
from pathlib import Path

import pytest
from daemon_run import DaemonRun

from hexzd import store

pytestmark = pytest.mark.e2e  # a real daemon: `pytest -m e2e`

DATA = Path(__file__).resolve().parent.parent / "data"
TABLES = ("games", "models", "duels", "duel_games", "promotions")


def test_a_run_of_an_earlier_hexzd_resumes_and_keeps_every_row(tmp_path):
    with gzip.open(DATA / "run-2026-12-04.sqlite.gz") as packed, open(tmp_path / "run.sqlite", "wb") as out:
        shutil.copyfileobj(packed, out)
    shutil.copy(DATA / "run-2026-12-04.toml", tmp_path / "config.toml")
    before = _rows(tmp_path / "run.sqlite")

    run = DaemonRun(tmp_path, duration="15s").start()
    assert run.process.wait(timeout=120) == 0, run.output.read_text()

    after = _rows(tmp_path / "run.sqlite")
    for table in TABLES:  # nothing lost: every earlier row is still there, unchanged
        assert before[table] <= after[table], table
    assert len(after["games"]) > len(before["games"])  # and the run went on
    assert max(after["models"])[0] > max(before["models"])[0]
    renamed = run.query("SELECT message FROM events WHERE level = 'warning' AND message LIKE '%is now%'")
    assert {m.split(": ", 1)[1].split(" is now")[0] for (m,) in renamed} >= {"selfplay.games", "duel.cpu_share"}
    with store.consistent_read(tmp_path / "run.sqlite") as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def _rows(db) -> dict[str, set]:
    with sqlite3.connect(db) as connection:
        columns = {
            "games": "id, moves, winner",
            "models": "id, train_step, created_at",
            "duels": "id, kind",
            "duel_games": "duel_id, pair, moves, winner",
            "promotions": "*",
        }
        return {t: set(connection.execute(f"SELECT {columns[t]} FROM {t}")) for t in TABLES}
