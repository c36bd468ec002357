"""Nothing silent, nothing lost: the daemon's loops are supervised, pause is state, and a
match that crashes the duel worker again and again is given up.

Real daemons, each for seconds: a failure is made real where it can be (a message that
raises, a standard output on a full disk, a snapshot whose weights do not load), and
injected where it cannot (HEXZD_TEST_FAIL_LOOPS, hexzd.daemon.supervisor.FAIL_LOOPS).
"""

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
import states
import zmq
from daemon_run import QUICK, DaemonRun

from hexzd import store
from hexzd.config import Config
from hexzd.daemon import messages as m
from hexzd.daemon.control import ask
from hexzd.daemon.core import Daemon
from hexzd.daemon.rundir import RunDir
from hexzd.daemon.scheduler import MATCH_CRASHES, Scheduler
from hexzd.daemon.supervisor import FAIL_LOOPS, LOOP_FAILURES
from hexzd.store.writes import Writer

LOOPS = ("workers", "ingest", "control", "config", "ticks", "gpu")


@pytest.fixture
def daemon(tmp_path, request):
    """daemon(**DaemonRun's keywords): a DaemonRun in tmp_path, killed after the test if it still runs."""

    def make(**kw) -> DaemonRun:
        run = DaemonRun(tmp_path, **kw)
        request.addfinalizer(run.cleanup)
        return run

    return make


def events(run: DaemonRun, where: str) -> list[tuple]:
    return run.query(f"SELECT level, source, message FROM events WHERE {where} ORDER BY id")


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_each_loop_that_fails_is_told_with_its_traceback_and_runs_again(daemon, tmp_path, monkeypatch):
    monkeypatch.setenv(FAIL_LOOPS, ",".join(f"{name}:1" for name in LOOPS))  # each fails once
    run = daemon(edits={**QUICK, "[daemon]": ["progress_seconds = 1.0"]}).start()
    for name in LOOPS:
        run.wait_for(lambda name=name: events(run, f"source = '{name}' AND level = 'error'"), 30, f"{name}'s event")
        ((_, _, message),) = events(run, f"source = '{name}' AND level = 'error'")
        assert message.startswith("running it again in 0.5 s\nTraceback (most recent call last):")
        assert f"RuntimeError: {name} fails on purpose" in message
    # Each runs again: results are written, the tick counts, control answers, workers run.
    games = run.count("games")
    run.wait_for(lambda: run.count("games") > games, 30, "games after the failures")
    ticks = run.count("metrics", "source = 'daemon' AND name = 'games_per_s'")
    run.wait_for(lambda: run.count("metrics", "source = 'daemon' AND name = 'games_per_s'") > ticks, 30, "a tick")
    assert run.stop() == 0


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_a_loop_that_keeps_failing_stops_the_daemon_with_the_reason(daemon, tmp_path, monkeypatch):
    monkeypatch.setenv(FAIL_LOOPS, "ticks")  # every run of the tick fails
    run = daemon(edits=QUICK, duration="10m").start()
    seen = []  # `status` while it stops
    deadline = time.monotonic() + 60
    while run.process.poll() is None and time.monotonic() < deadline:
        status = ask(run.db, "status", timeout=0.5)
        if status and status["state"] == "stopping":
            seen.append(status["stop_reason"])
        time.sleep(0.05)
    assert run.process.wait(30) == 1
    told = events(run, "source = 'ticks'")
    assert [level for level, _, _ in told] == ["error"] * LOOP_FAILURES
    assert [message.split("\n")[0] for _, _, message in told] == [
        *(f"running it again in {b:g} s" for b in (0.5, 1, 2, 4)),
        "it failed too often: stopping",
    ]
    reason = f"the ticks loop failed {LOOP_FAILURES} times within 300 s: RuntimeError('ticks fails on purpose"
    with store.read_only(run.db) as connection:
        assert store.stop_reason(connection).startswith(reason)
    assert seen and seen[-1].startswith(reason)
    assert reason in run.output.read_text()
    gone = run.hexzd("status", timeout=30)  # after it: the CLI says why it stopped
    assert gone.returncode == 1 and f"(it last stopped: {reason}" in gone.stderr


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_a_message_that_raises_is_dropped_alone_and_its_batch_is_kept(daemon, tmp_path):
    run = daemon(edits=QUICK).start()
    run.wait_for(lambda: run.count("games") > 0, 60, "self-play")
    # A game that decodes but that the state file cannot take (its evals past SQLite's
    # integers) raises OverflowError, between two events of the same batch.
    poison = m.Game(
        worker="test", model_id=None, board_size=5, sims=1, moves="a1", winner=1, length=1, policy=b"",
        evals=2**63, seconds=0.0,
    )  # fmt: skip
    frames = [m.encode(m.Event(level="info", source="test", message=f"kept {i}")) for i in (1, 2)]
    context = zmq.Context()
    push = context.socket(zmq.PUSH)
    push.connect(RunDir.of(run.db).results)
    for frame in (frames[0], m.encode(poison), frames[1]):
        push.send(frame)
    push.close(linger=2000)
    context.term()
    run.wait_for(lambda: run.count("events", "message LIKE 'dropped a game message writing it raised%'"), 30, "drop")
    dropped = events(run, "message LIKE 'dropped a game message%'")
    assert len(dropped) == 1 and "OverflowError" in dropped[0][2] and dropped[0][0] == "error"
    assert [msg for _, _, msg in events(run, "source = 'test'")] == ["kept 1", "kept 2"]
    failed = events(run, "level = 'error' AND message LIKE 'running it again in%'")
    assert len(failed) == 1 and "OverflowError" in failed[0][2]
    games = run.count("games")
    run.wait_for(lambda: run.count("games") > games, 30, "games after the poison")
    assert run.stop() == 0


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_a_standard_output_that_cannot_be_written_stops_nothing(tmp_path):
    """stdout a file on a full disk: before, the first line printed killed the loop printing it."""
    run = DaemonRun(tmp_path, edits={**QUICK, "[daemon]": ["progress_seconds = 1.0"]}, duration="8s")
    args = [sys.executable, "-m", "hexzd", "start", "--headless", "--db", str(run.db), "--config", str(run.config)]
    with open("/dev/full", "wb") as full, open(run.output, "wb") as log:
        process = subprocess.Popen([*args, "--for", "8s"], cwd=tmp_path, stdout=full, stderr=log)
    try:
        assert process.wait(60) == 0, run.output.read_text()  # --for stops it: the tick runs on
    finally:
        if process.poll() is None:
            process.kill()
    assert run.count("games") > 0 and run.count("metrics", "name = 'games_per_s'") >= 3
    told = events(run, "message LIKE 'cannot write to standard output%'")
    assert len(told) == 1 and "No space left on device" in told[0][2]


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_a_worker_restarted_while_paused_stays_paused(daemon, tmp_path):
    run = daemon(edits=QUICK).start()
    run.wait_for(lambda: run.count("games") > 0, 60, "self-play")
    assert run.hexzd("pause").returncode == 0
    time.sleep(1.0)  # games that ended before the pause come in
    old = run.worker_pids()["selfplay-0"]
    os.kill(old, signal.SIGKILL)
    run.wait_for(lambda: run.worker_pids().get("selfplay-0", old) != old, 30, "selfplay-0 restarted")
    run.wait_for(lambda: run.count("events", "source = 'selfplay-0' AND message LIKE 'up%'") == 2, 30, "its hello")
    games = run.count("games")
    time.sleep(4.0)  # a self-play worker that runs adds games within a second
    assert run.count("games") == games
    assert ask(run.db, "status")["state"] == "paused"
    assert run.hexzd("resume").returncode == 0
    run.wait_for(lambda: run.count("games") > games, 30, "games after the resume")
    assert run.stop() == 0


def add_model(connection, weights: bytes) -> int:
    cursor = connection.execute(
        "INSERT INTO models (created_at, train_step, positions_seen, samples_trained, params, flops_per_eval,"
        " selfplay_flops, train_flops, wall_seconds, accel_seconds, positions_generated, weights)"
        " VALUES (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, ?)",
        (weights,),
    )
    return cursor.lastrowid


@pytest.mark.e2e
@pytest.mark.timeout(180)
def test_a_match_that_crashes_the_duel_worker_is_given_up_and_the_next_is_played(daemon, tmp_path):
    db = tmp_path / "run.sqlite"
    store.prepare(db)
    with sqlite3.connect(db) as connection:  # a promoted snapshot whose weights do not load, in an open rating match
        model = add_model(connection, b"not a network")
        promotion = connection.execute(
            "INSERT INTO duels (kind, candidate_id, sims, opponent_id, opponent_sims, started_at, finished_at, result)"
            " VALUES ('promotion', ?, 64, NULL, 64, 0, 0, 'accepted')",
            (model,),
        ).lastrowid
        connection.execute("INSERT INTO promotions VALUES (?, 0, ?, 1.0)", (model, promotion))
        connection.execute("UPDATE models SET promoted_at = 0 WHERE id = ?", (model,))
        poison = connection.execute(
            "INSERT INTO duels (kind, candidate_id, sims, opponent_id, opponent_sims, pairs, started_at)"
            " VALUES ('rating', ?, 64, NULL, 100, 2, 0)",
            (model,),
        ).lastrowid
    edits = {  # no self-play: the duel worker, restarted again and again, has the machine
        **QUICK,
        "[selfplay]": ["workers = 0"],
        "[daemon]": ["restart_backoff = 0.1"],
        "[ratings]": ["perfect = false", "references = [100, 200]", "ladder_pairs = 1", "match_pairs = 2"],
    }
    run = daemon(edits=edits).start()
    run.wait_for(lambda: run.count("duels", f"id = {poison} AND result IS NOT NULL") == 1, 120, "the match given up")
    failed, crashes, result = run.query(f"SELECT failed, crashes, result FROM duels WHERE id = {poison}")[0]
    assert crashes == MATCH_CRASHES and result == "played"
    assert failed.startswith(f"the duel worker crashed in it {MATCH_CRASHES} times (the last: exit code 1, see ")
    told = [message for level, _, message in events(run, "source = 'duel' AND message LIKE '%match %'")]
    assert told[: MATCH_CRASHES - 1] == [
        f"the duel worker crashed in match {poison} (exit code 1, see {RunDir.of(db).log('duel')}): {n} of 3"
        for n in range(1, MATCH_CRASHES)
    ]
    assert f"match {poison} given up: {failed}; evaluation goes on with the next" in told
    # Its check against perfect play, which cannot load it either, is told and skipped each time.
    skipped = events(run, f"source = 'duel' AND message LIKE 'model {model} against perfect play: %; skipped'")
    assert len(skipped) == MATCH_CRASHES and skipped[0][0] == "error"
    # The next matches are played (the ladder's, then matchmaking's), none with the model given up.
    next_ones = f"kind = 'rating' AND id > {poison}"
    run.wait_for(lambda: run.count("duels", f"{next_ones} AND result IS NOT NULL") >= 2, 60, "two more matches")
    assert run.count("duels", f"{next_ones} AND (candidate_id = {model} OR opponent_id = {model})") == 0
    assert run.stop() == 0


@pytest.mark.e2e
@pytest.mark.timeout(240)
def test_a_check_against_perfect_play_that_kills_the_duel_worker_is_given_up(daemon, tmp_path):
    """A hard crash inside the check (kill -9 here; a segfault or the OOM killer in life)
    would repeat on every restart: the third gives the check up, and matches go on."""
    db = tmp_path / "run.sqlite"
    store.prepare(db)
    model = states.add_model(db, 5)  # a real network, promoted, with weights that load
    edits = {  # a long check (thousands of positions), no self-play
        **QUICK,
        "[game]": ["board_size = 5"],
        "[selfplay]": ["workers = 0"],
        "[daemon]": ["restart_backoff = 0.1"],
        "[ratings]": ["perfect_positions = 5000", "references = [100, 200]", "ladder_pairs = 1", "match_pairs = 2"],
    }
    run = daemon(edits=edits).start()
    checking = f"model {model} against perfect play"
    told = f"source = 'duel' AND message LIKE '%model {model}''s check against perfect play%'"
    for crash in range(1, MATCH_CRASHES + 1):
        run.wait_for(lambda: checking in json.loads(run.hexzd("status", "--json").stdout)["duel"], 60, "the check")
        os.kill(run.worker_pids()["duel"], signal.SIGKILL)
        run.wait_for(lambda n=crash: len(events(run, told)) == n, 60, f"crash {crash} told")
    (*warnings, (level, _, message)) = events(run, told)
    assert [w[2].split(" (exit code -9, see ")[1].split(": ")[-1] for w in warnings] == ["1 of 3", "2 of 3"]
    assert all(w[0] == "warning" and w[2].startswith("the duel worker crashed in model") for w in warnings)
    assert level == "error"
    assert message.startswith(f"model {model}'s check against perfect play given up: the duel worker crashed in it 3")
    assert run.query(f"SELECT crashes FROM perfect_play_crashes WHERE model_id = {model}") == [(MATCH_CRASHES,)]
    # The worker goes on to the rating matches, and never checks the model again.
    run.wait_for(lambda: run.count("duels", "kind = 'rating' AND result IS NOT NULL") >= 1, 60, "a rating match")
    assert checking not in json.loads(run.hexzd("status", "--json").stdout)["duel"]
    assert run.count("perfect_play", f"model_id = {model}") == 0
    assert run.stop() == 0


def test_a_reference_given_twice_counts_once(tmp_path):
    """[ratings] references = [100, 100, 200]: once a ladder match of rollouts @100 against
    themselves, whose games broke the ratings fit (and, unsupervised, the tick loop)."""
    db = tmp_path / "run.sqlite"
    config = Config()
    ratings = config.ratings.model_copy(update={"references": [100, 100, 200], "perfect": False})
    config = config.model_copy(update={"ratings": ratings})  # past validation, which refuses it now

    async def scenario():
        writer = Writer(await store.writer(db))
        try:
            scheduler = Scheduler(writer, lambda: config, lambda: 0.0)
            await writer.begin()
            await scheduler.schedule(None)
            await writer.commit()
            return scheduler
        finally:
            await writer.close()

    scheduler = asyncio.run(scenario())
    with store.read_only(db) as connection:
        opened = connection.execute("SELECT kind, candidate_id, sims, opponent_id, opponent_sims FROM duels").fetchall()
    assert opened == [("rating", None, 200, None, 100)]
    assert scheduler.references() == [100, 200]


def test_a_damaged_state_file_stops_the_daemon_rather_than_being_retried_for_ever(tmp_path, monkeypatch):
    lines = []

    async def scenario() -> Daemon:
        daemon = Daemon(tmp_path / "config.toml", tmp_path / "run.sqlite", out=lines.append)
        await daemon.open()
        daemon.stopping = asyncio.Event()
        try:

            async def damaged(*args):
                raise sqlite3.DatabaseError("database disk image is malformed")

            monkeypatch.setattr(daemon.store, "add_event", damaged)
            await daemon._event("info", "test", "a row")
            return daemon
        finally:
            await daemon.store.close()

    daemon = asyncio.run(scenario())
    assert daemon.stopping.is_set() and daemon.exit_code == 1
    assert daemon.stop_reason == "the state file is damaged: database disk image is malformed"
    assert [e.message for e in daemon.pending.messages] == ["a row"]  # held, not dropped
    assert lines[0].endswith("is damaged: database disk image is malformed; stopping")
