"""Retention keeps the state file bounded: games, events, metrics, tuner decisions, config versions.

Each test writes through the daemon's own Writer into a real state file.
"""

import asyncio
import random
import sqlite3
from pathlib import Path

from hexzd import store
from hexzd.store.writes import Writer


def add_games(connection, lengths, start_at=0.0) -> None:
    connection.executemany(
        "INSERT INTO games (model_id, created_at, board_size, sims, moves, winner, length, policy, evals, worker)"
        " VALUES (NULL, ?, 3, 2, '', 1, ?, x'00', 0, 'selfplay-0')",
        [(start_at + i, n) for i, n in enumerate(lengths)],
    )


def old_retain(connection, keep_positions: int, thin_every: int) -> None:
    """Retention's games as it was: the window's edge read from every game at each call."""
    row = connection.execute(
        "SELECT id FROM (SELECT id, SUM(length) OVER (ORDER BY id DESC) AS acc FROM games) WHERE acc > ? LIMIT 1",
        (keep_positions,),
    ).fetchone()
    if row is not None:
        thin = "1" if thin_every == 0 else f"id % {int(thin_every)} != 0"
        connection.execute(f"DELETE FROM games WHERE id <= ? AND {thin}", (row[0],))


async def open_writer(db) -> Writer:
    return Writer(await store.writer(db))


def with_writer(db, body):
    """Runs the coroutine function body(writer) on the daemon's writer of `db`; its result."""

    async def run():
        writer = await open_writer(db)
        try:
            return await body(writer)
        finally:
            await writer.close()

    return asyncio.run(run())


def games_file(tmp_path, lengths) -> Path:
    """A fresh state file holding games of these lengths, one a second from 0."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    db = tmp_path / "run.sqlite"
    store.prepare(db)
    with sqlite3.connect(db) as c:
        add_games(c, lengths)
    return db


async def in_transaction(writer: Writer, call):
    await writer.begin()
    try:
        result = await call()
        await writer.commit()
        return result
    except BaseException:
        await writer.rollback()
        raise


def test_incremental_retention_keeps_exactly_the_games_a_full_scan_keeps(tmp_path):
    """Games arrive in bursts between calls; the incremental window must keep, call after
    call, the very games that a full rescan (the old retain) keeps, whatever the thinning."""
    rng = random.Random(7)
    mine, theirs = tmp_path / "incremental.sqlite", tmp_path / "full.sqlite"
    for db in (mine, theirs):
        store.prepare(db)

    async def scenario():
        writer = await open_writer(mine)
        try:
            for step in range(60):
                lengths = [rng.randint(5, 40) for _ in range(rng.randint(0, 80))]
                keep, every = (3000 if step < 30 else 1800), (20 if step < 45 else 5)
                for db in (mine, theirs):
                    with sqlite3.connect(db) as c:
                        add_games(c, lengths)
                with sqlite3.connect(theirs) as c:
                    old_retain(c, keep, every)
                await in_transaction(writer, lambda k=keep, e=every: writer.retain(k, e, 10))
                with sqlite3.connect(mine) as a, sqlite3.connect(theirs) as b:
                    ids = "SELECT id FROM games ORDER BY id"
                    assert a.execute(ids).fetchall() == b.execute(ids).fetchall(), step
        finally:
            await writer.close()

    asyncio.run(scenario())


def test_retention_reads_only_the_new_games_on_each_tick(tmp_path):
    """A tick's retention costs the same with 40k games kept as with 4k: it does not read
    every kept game again (SQLite's virtual machine steps, counted)."""

    def steps_of_a_tick(games: int) -> int:
        db = games_file(tmp_path / str(games), [10] * games)

        async def body(writer):
            # thin_every 1 keeps every older game: the old retain read them all at each tick
            await in_transaction(writer, lambda: writer.retain(2000, 1, 10))  # the first: a full read
            with sqlite3.connect(db) as c:
                add_games(c, [10] * 50, start_at=games)
            counted = []
            await writer.connection.set_progress_handler(lambda: counted.append(1), 100)
            await in_transaction(writer, lambda: writer.retain(2000, 1, 10))
            await writer.connection.set_progress_handler(None, 100)
            return len(counted) * 100

        return with_writer(db, body)

    small, large = steps_of_a_tick(4000), steps_of_a_tick(40_000)
    assert large < 1.5 * small + 5000, (small, large)


def test_older_games_are_capped_and_spread_evenly(tmp_path):
    db = games_file(tmp_path, [10] * 20_000)
    with_writer(db, lambda writer: in_transaction(writer, lambda: writer.retain(1000, 1, 10, old_games=1000)))
    with sqlite3.connect(db) as c:
        old = [at for (at,) in c.execute("SELECT created_at FROM games WHERE id <= 19900 ORDER BY id")]
        window = c.execute("SELECT COUNT(*) FROM games WHERE id > 19900").fetchone()[0]
    assert window == 100  # the window is whole
    assert 400 <= len(old) <= 1000
    assert old[0] == 0 and old[-1] == 19_899  # the ends stay
    tenths = [sum(1 for at in old if k * 1990 <= at < (k + 1) * 1990) for k in range(10)]
    assert max(tenths) - min(tenths) <= max(tenths) // 4 + 2, tenths


# -- events, metrics, tuning, config history -------------------------------------------------


def fill(db, runs: list[tuple[float, float]], every: float = 1.0) -> None:
    """Each run (start, end): a start event, per second two metric series and an info event,
    a tuner decision a minute, a config version an hour, then a stop event."""
    with sqlite3.connect(db) as c:
        for start, end in runs:
            c.execute(
                "INSERT INTO events (at, level, source, message) VALUES (?, 'info', 'daemon', ?)",
                (start, "started (pid 1) on run.sqlite"),
            )
            t = start
            while t < end:
                c.executemany(
                    "INSERT INTO metrics VALUES (?, ?, ?, ?)",
                    [(t, "daemon", "games_per_s", t), (t, "trainer", "policy_loss", -t)],
                )
                c.execute(
                    "INSERT INTO events (at, level, source, message) VALUES (?, 'debug', 'selfplay-0', 'up')", (t,)
                )
                if int(t) % 60 == 0:
                    c.execute("INSERT INTO tuning VALUES (?, 'sims', 1, 2, 'faster')", (t,))
                if int(t) % 3600 == 0:
                    c.execute("INSERT INTO config_history (at, text, accepted) VALUES (?, 'x', 1)", (t,))
                t += every
            c.execute(
                "INSERT INTO events (at, level, source, message) VALUES (?, 'info', 'daemon', 'stopping: signal')",
                (end,),
            )


def thin(db, limits: dict) -> dict:
    return with_writer(db, lambda writer: in_transaction(writer, lambda: writer.thin_tables(limits)))


def test_events_metrics_tuning_and_config_versions_are_thinned_to_their_limits(tmp_path):
    db = tmp_path / "run.sqlite"
    store.prepare(db)
    runs = [(0.0, 20_000.0), (30_000.0, 30_500.0), (40_000.0, 60_000.0)]
    fill(db, runs)
    limits = {"metrics": 4000, "events": 3000, "tuning": 300, "config_history": 10}
    deleted = thin(db, limits)
    assert set(deleted) == {"metrics", "events", "tuning", "config_history"}
    with sqlite3.connect(db) as c:
        for table, most in limits.items():
            assert c.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] <= most, table
        for name in ("games_per_s", "policy_loss"):
            times = [at for (at,) in c.execute("SELECT at FROM metrics WHERE name = ? ORDER BY at", (name,))]
            for start, end in runs:  # each run's first and last sample of each series
                inside = [at for at in times if start <= at < end]
                assert inside[0] == start and inside[-1] == end - 1, (name, start)
            # an even spread: each tenth of the long first run holds about as many as another
            tenths = [sum(1 for at in times if k * 2000 <= at < (k + 1) * 2000) for k in range(10)]
            assert max(tenths) - min(tenths) <= max(tenths) // 4 + 2, (name, tenths)
        kept = {m for (m,) in c.execute("SELECT message FROM events WHERE source = 'daemon'")}
        assert kept == {"started (pid 1) on run.sqlite", "stopping: signal"}
        assert c.execute("SELECT COUNT(*) FROM events WHERE source = 'daemon'").fetchone()[0] == 2 * len(runs)
        assert c.execute("SELECT MIN(at) FROM config_history").fetchone()[0] == 0  # the run's start (run_span)


def test_thinning_reads_a_table_only_once_it_is_due(tmp_path):
    """Between thinnings the rows are counted as they are written, not read again."""
    db = tmp_path / "run.sqlite"
    store.prepare(db)
    fill(db, [(0.0, 3000.0)])

    async def body(writer):
        limits = {"metrics": 10_000, "events": 10_000, "tuning": 1000, "config_history": 100}
        await in_transaction(writer, lambda: writer.thin_tables(limits))
        counted = []
        await writer.connection.set_progress_handler(lambda: counted.append(1), 50)
        for t in range(100):  # ticks: the daemon's rows, then retention
            await in_transaction(writer, lambda t=t: writer.add_metrics(5000.0 + t, "daemon", {"a": 1, "b": 2}))
            await in_transaction(writer, lambda: writer.thin_tables(limits))
        await writer.connection.set_progress_handler(None, 50)
        return len(counted) * 50, writer.rows["metrics"]

    steps, rows = with_writer(db, body)
    assert rows == 6000 + 200
    assert steps < 20_000, steps  # a COUNT(*) of the 6k metrics alone would take more


def test_more_runs_than_the_limit_holds_still_keep_the_table_within_it(tmp_path):
    db = tmp_path / "run.sqlite"
    store.prepare(db)
    fill(db, [(k * 100.0, k * 100.0 + 50) for k in range(300)], every=5.0)  # 300 short runs
    thin(db, {"metrics": 1000, "events": 500, "tuning": 100, "config_history": 10})
    with sqlite3.connect(db) as c:
        assert c.execute("SELECT COUNT(*) FROM metrics").fetchone()[0] <= 1000
        assert c.execute("SELECT COUNT(*) FROM events").fetchone()[0] <= 500
        first, last = c.execute("SELECT MIN(at), MAX(at) FROM metrics").fetchone()
    assert (first, last) == (0.0, 29_945.0)


def test_a_rollback_makes_retention_read_the_file_again(tmp_path):
    db = games_file(tmp_path, [10] * 1000)

    async def body(writer):
        await writer.begin()
        await writer.retain(2000, 0, 10)
        await writer.rollback()  # the file kept none of it
        assert writer.window is None and writer.rows == {}
        await in_transaction(writer, lambda: writer.retain(2000, 0, 10))

    with_writer(db, body)
    with sqlite3.connect(db) as c:
        assert c.execute("SELECT COUNT(*) FROM games").fetchone()[0] == 200
