"""The daemon's writes and the workers' reads of the state file, one piece at a time.

A real SQLite file, the daemon's real writer and real ZeroMQ sockets; each
test pins a defect that a read of the code found.
"""

import asyncio
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path

import pytest
import zmq
from states import game

from hexzd import store
from hexzd.config import Config
from hexzd.daemon import workers
from hexzd.daemon.core import Daemon
from hexzd.daemon.rundir import RunDir
from hexzd.store.writes import Writer


def add_model(connection, promoted: bool = False) -> int:
    cursor = connection.execute(
        "INSERT INTO models (created_at, train_step, positions_seen, samples_trained, params, flops_per_eval,"
        " selfplay_flops, train_flops, wall_seconds, accel_seconds, positions_generated, promoted_at, weights)"
        " VALUES (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, ?, x'00')",
        (time.time() if promoted else None,),
    )
    if promoted:
        connection.execute("INSERT INTO promotions VALUES (?, ?, NULL, NULL)", (cursor.lastrowid, time.time()))
    return cursor.lastrowid


def test_a_failed_flush_keeps_the_counters_of_a_flush_committed_meanwhile(tmp_path):
    """Two flushes at once: the first commits a game, the second fails (a game the schema
    refuses). The failed one must not put back counters from before the first's commit."""

    async def scenario() -> dict:
        daemon = Daemon(tmp_path / "config.toml", tmp_path / "run.sqlite")
        await daemon.open()
        try:
            daemon.pending.messages = [game()]
            first = asyncio.create_task(daemon._flush())
            await asyncio.sleep(0)  # the first holds the write lock and waits on its BEGIN
            daemon.pending.messages = [game(model_id=999)]  # no model 999: a foreign key violation
            second = asyncio.create_task(daemon._flush())
            await asyncio.gather(first, second)
            return dict(daemon.counters)
        finally:
            await daemon.store.close()

    counters = asyncio.run(scenario())
    with store.read_only(tmp_path / "run.sqlite") as connection:
        stored_games = connection.execute("SELECT COUNT(*) FROM games").fetchone()[0]
        saved = store.counters(connection)
    assert stored_games == 1
    assert counters["games"] == 1 and counters["positions"] == 7
    assert saved["games"] == 1


def test_retention_prunes_weights_while_a_ladder_duel_is_open(tmp_path):
    """A ladder duel (rollouts against rollouts) has no candidate model: its NULL must not
    stop the pruning of every other snapshot's weights."""
    db = tmp_path / "run.sqlite"
    store.prepare(db)
    with sqlite3.connect(db) as connection:
        ids = [add_model(connection) for _ in range(4)]
        connection.execute(
            "INSERT INTO duels (kind, candidate_id, sims, opponent_id, opponent_sims, started_at)"
            " VALUES ('rating', NULL, 64, NULL, 16, 0)"
        )
        connection.execute(
            "INSERT INTO duels (kind, candidate_id, sims, opponent_id, opponent_sims, started_at)"
            " VALUES ('promotion', ?, 64, NULL, 64, 0)",
            (ids[1],),
        )

    async def retain():
        writer = Writer(await store.writer(db))
        try:
            await writer.begin()
            await writer.retain(keep_positions=10**9, thin_every=0, snapshot_every=1000)
            await writer.commit()
        finally:
            await writer.close()

    asyncio.run(retain())
    with store.read_only(db) as connection:
        kept = [row[0] for row in connection.execute("SELECT id FROM models WHERE weights IS NOT NULL")]
    # Kept: the open promotion duel's candidate and the newest snapshot.
    assert kept == [ids[1], ids[3]]


@pytest.mark.timeout(30)
def test_a_worker_learns_of_a_promotion_whose_best_update_it_missed(monkeypatch):
    """A worker subscribes, then reads the best model. A `Best` published before its
    subscription reaches the daemon is lost; the worker must still find the new best."""
    short = Path(tempfile.mkdtemp(prefix="hz", dir="/tmp"))  # ipc socket paths are limited to ~100 characters
    db = short / "run.sqlite"
    store.prepare(db)
    run = RunDir.of(db)
    run.path.mkdir()
    run.write_config(Config().model_dump())
    context = zmq.Context()
    pull, pub = context.socket(zmq.PULL), context.socket(zmq.PUB)
    pull.bind(run.results)
    pub.bind(run.updates)
    monkeypatch.setattr(workers, "BEST_REFRESH", 0.2)
    link = workers.Link(run, db, "selfplay-0")
    try:
        assert link.best is None
        with sqlite3.connect(db) as connection:  # the daemon's commit; its `Best` never arrives
            promoted = add_model(connection, promoted=True)
        deadline = time.monotonic() + 10
        while link.best != promoted and time.monotonic() < deadline:
            link.wait(0.1)
        assert link.best == promoted
    finally:
        link.close()
        pull.close(0)
        pub.close(0)
        context.term()
        shutil.rmtree(short, ignore_errors=True)
