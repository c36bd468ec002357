"""The daemon end to end: real processes, real ZeroMQ sockets, a real state file.

These are the daemon's acceptance tests. They run in CI: about four minutes
in all, most of it the two-minute run on the default config.
"""

import json
import sqlite3
import time
from collections import Counter

import msgpack
import pytest
import zmq
from daemon_run import QUICK, DaemonRun, alive

from hexzd import store
from hexzd.daemon.rundir import RunDir

pytestmark = pytest.mark.e2e  # daemons and processes: `pytest -m e2e`


@pytest.fixture
def runs():
    started = []

    def make(path, **kw):
        run = DaemonRun(path, **kw)
        started.append(run)
        return run

    yield make
    for run in started:
        run.cleanup()


@pytest.mark.timeout(360)
def test_two_minutes_on_the_default_config_learns_and_promotes(runs, tmp_path):
    run = runs(tmp_path, duration="2m").start()
    assert run.process.wait(timeout=300) == 0
    games, snapshots = run.count("games"), run.count("models")
    finished = run.count("duels", "result IS NOT NULL")
    promotions = run.count("promotions")
    print(f"2 min on 5x5: {games} games, {snapshots} snapshots, {finished} duels, {promotions} promotions")
    # 2026-12-03, this 2-core VM, 3 minutes: 13,632 games, 9 snapshots, 30 duels, 3 promotions, CPU share 19.4%.
    # 2026-12-06, 2 minutes: 13,686 games, 15 snapshots, 21 duels, 4 promotions (the first at 14 s).
    assert games >= 500 and snapshots >= 3 and finished >= 1 and promotions >= 1
    assert run.query("PRAGMA integrity_check") == [("ok",)]
    # Self-play switched to the promoted network: later games name it.
    best = run.query("SELECT model_id FROM promotions ORDER BY at LIMIT 1")[0][0]
    assert run.count("games", f"model_id = {best}") > 0
    # Ratings: the 0-Elo anchor (rollouts @100) and the promoted model are rated.
    assert run.query("SELECT rating FROM ratings WHERE anchor = 1 AND player = 'rollouts @100'") == [(0.0,)]
    assert run.query(f"SELECT rating IS NOT NULL FROM models WHERE id = {best}") == [(1,)]
    table = run.hexzd("ratings").stdout
    assert "rollouts @100" in table and f"model {best} @64" in table
    # Promoted models meet perfect play (5x5 is solved): the first one at least, and it plays
    # far better than random moves, which keep the win in about 40% of these positions.
    judged = run.query("SELECT model_id, positions, won, kept, converted FROM perfect_play WHERE sims = 64")
    assert best in [row[0] for row in judged]
    assert all(p == 200 and 0 < won < p and converted <= kept <= won for _, p, won, kept, converted in judged)
    assert max(kept / won for _, _, won, kept, _ in judged) >= 0.7, judged
    # No game of a pairing replays another of its games with the same colours, in one duel or across
    # its duels (a worker that replayed a duel whose end was not yet stored once did, 1 in 461 duels).
    same_players = (
        "da.candidate_id IS db.candidate_id AND da.opponent_id IS db.opponent_id"
        " AND da.sims = db.sims AND da.opponent_sims = db.opponent_sims"
    )
    repeats = run.count(
        "duel_games a JOIN duels da ON da.id = a.duel_id JOIN duel_games b ON b.id > a.id"
        f" JOIN duels db ON db.id = b.duel_id AND {same_players}",
        "a.moves = b.moves AND a.candidate_colour = b.candidate_colour",
    )
    assert repeats == 0
    # Evaluation keeps to its share of the machine (evaluation.cpu_share, 20%); the daemon measures it.
    shares = [v for (v,) in run.query("SELECT value FROM metrics WHERE source = 'duel' AND name = 'cpu_share'")]
    print(f"evaluation's CPU share: {sum(shares) / len(shares):.1%} on average, {max(shares):.1%} at most")
    assert len(shares) >= 12 and sum(shares) / len(shares) <= 0.22
    # Each progress line tells the budget spent and left (--for 2m), and the last one the best
    # model's rating as the state file ends with it: that of its player with the most games.
    lines = [t for t in run.output.read_text().splitlines() if t.startswith(("progress ", "stopped "))]
    assert len(lines) > 10 and lines[-1].startswith("stopped ")
    assert all(" | spent " in t and " of --for | " in t for t in lines), lines[-1]
    best = run.query("SELECT model_id FROM promotions ORDER BY at DESC, model_id DESC LIMIT 1")[0][0]
    sql = "SELECT rating, half_width, status FROM rating_status WHERE model_id = ? ORDER BY games DESC LIMIT 1"
    (rating, half, status), *_ = run.query(sql, (best,)) or [(None, None, "not rated yet")]
    said = f"{rating:.0f} ±{half:.0f} (95%)" if status == "rated" else status
    assert f" best model {best}: {said} | spent " in lines[-1], lines[-1]


@pytest.mark.slow  # a 100-second run: the default suite keeps CI within its 20 minutes
@pytest.mark.timeout(300)
def test_a_promotion_duel_runs_inside_a_long_rating_match_which_still_ends_whole(runs, tmp_path):
    # Long rating matches, and candidates arriving while they run. No perfect play: its
    # checks and games are slow enough to leave little time for either within the test.
    ratings = ["match_pairs = 64", "share = 0.5", "references = [50, 100]", "perfect = false", "perfect_positions = 0"]
    edits = {**QUICK, "[ratings]": ratings}
    run = runs(tmp_path, edits=edits, duration="100s").start()
    assert run.process.wait(timeout=240) == 0
    first_game = "(SELECT MIN(created_at) FROM duel_games WHERE duel_id = p.id)"
    inside = run.query(
        "SELECT p.id, r.id FROM duels p JOIN duels r ON p.kind = 'promotion' AND r.kind = 'rating'"
        f" WHERE r.pairs = 64 AND r.started_at < {first_game} AND {first_game} < r.finished_at"
    )
    assert inside, run.query("SELECT id, kind, started_at, finished_at FROM duels")
    # Each rating match that ran promotions inside it still ends with all its pairs, every game
    # once. (A game that repeats one of the pairing's earlier games is dropped, and its pair
    # never counts: another pair is played.)
    for duel_id, pairs in run.query("SELECT id, pairs FROM duels WHERE kind = 'rating' AND result = 'played'"):
        games = run.query("SELECT pair, candidate_colour FROM duel_games WHERE duel_id = ?", (duel_id,))
        assert len(games) == len(set(games)), duel_id
        whole = Counter(pair for pair, _ in games)
        assert sum(n == 2 for n in whole.values()) == pairs, (duel_id, len(games), pairs)
    assert run.count("duels", "kind = 'promotion' AND result IS NOT NULL") >= 2


def snapshot_rows(run: DaemonRun) -> dict:
    """Every committed row that a restart must keep, by table."""
    return {
        "games": run.query("SELECT id, moves, winner, policy FROM games"),
        "models": run.query("SELECT id, train_step, params FROM models"),
        "duels": run.query("SELECT id, candidate_id, opponent_id FROM duels"),
        "duel_games": run.query("SELECT id, duel_id, moves FROM duel_games"),
        "events": run.query("SELECT id, message FROM events"),
        "config_history": run.query("SELECT id, text FROM config_history"),
    }


@pytest.mark.timeout(300)
def test_kill_9_of_a_worker_and_of_the_daemon_loses_nothing(runs, tmp_path):
    run = runs(tmp_path, edits=QUICK).start()
    run.wait_for(lambda: run.count("models") >= 1 and run.count("games") >= 200, 120, "a snapshot")
    pids = run.worker_pids()
    # A worker killed with -9 is restarted, and the event says so.
    import os
    import signal

    os.kill(pids["selfplay-0"], signal.SIGKILL)
    run.wait_for(
        lambda: run.count("events", "message LIKE 'selfplay-0 exited with code -9%'") == 1, 30, "the restart event"
    )
    run.wait_for(
        lambda: run.worker_pids().get("selfplay-0", pids["selfplay-0"]) != pids["selfplay-0"], 30, "a new selfplay-0"
    )
    pids = run.worker_pids()
    before = snapshot_rows(run)
    run.kill9()
    # The workers notice their daemon is gone and exit: no orphans.
    deadline = time.monotonic() + 30
    while any(alive(p) for p in pids.values()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(alive(p) for p in pids.values())
    assert run.query("PRAGMA integrity_check") == [("ok",)]

    run.start()  # the same state file, the same config
    games_then = max(r[0] for r in before["games"])
    models_then = max(r[0] for r in before["models"])
    run.wait_for(lambda: run.count("games", f"id > {games_then}") >= 50, 120, "new games")
    run.wait_for(lambda: run.count("models", f"id > {models_then}") >= 1, 120, "a new snapshot")
    assert run.hexzd("stop").returncode == 0
    assert run.process.wait(60) == 0
    after = snapshot_rows(run)
    for table, rows in before.items():
        kept = set(after[table])
        assert all(row in kept for row in rows), f"{table} lost rows"
    # Ids go on from where they were: nothing reused, nothing skipped back.
    new_games = [r[0] for r in after["games"] if r not in set(before["games"])]
    assert min(new_games) > games_then
    # The trainer resumed from its checkpoint rather than starting over.
    resumed = run.query("SELECT message FROM events WHERE message LIKE 'trainer resumed from model%'")
    assert resumed
    first_new = run.query("SELECT MIN(train_step) FROM models WHERE id > ?", (models_then,))[0][0]
    assert first_new > max(r[1] for r in before["models"])
    # The run's CPU time goes on from where it was saved, and grows with every snapshot.
    cpu = [c for (c,) in run.query("SELECT cpu_seconds FROM models ORDER BY id")]
    assert cpu[0] > 0 and all(b >= a for a, b in zip(cpu, cpu[1:]))
    assert run.query("PRAGMA integrity_check") == [("ok",)]


BAD_EDITS = [
    # (how the file is broken, what the refusal must name)
    (lambda t: t.replace("sims = 32", "sims = [32", 1), "not valid TOML"),
    (lambda t: t.replace("[selfplay]", "[selfplay]\nsimz = 3", 1), "selfplay.simz"),
    (lambda t: t.replace("c_puct = 1.5", 'c_puct = "high"', 1), "config.toml:10: selfplay.c_puct"),
    (lambda t: t.replace("sims = 32", "sims = -5", 1), "config.toml:9: selfplay.sims"),
    (lambda t: t.replace("board_size = 5", "board_size = 7", 1), "config.toml:5: game.board_size: fixed"),
]


@pytest.mark.timeout(300)
def test_bad_config_edits_are_refused_one_by_one_and_a_good_one_applies(runs, tmp_path):
    run = runs(tmp_path, edits=QUICK).start()
    good = run.config.read_text()
    run.wait_for(lambda: run.count("games") > 0, 60, "self-play")
    for number, (breaking, named) in enumerate(BAD_EDITS, start=1):
        games = run.count("games")
        run.config.write_text(breaking(good))
        run.wait_for(
            lambda number=number: run.count("config_history", "accepted = 0") == number,
            15,
            f"the refusal of bad edit {number}",
        )
        error = run.query("SELECT error FROM config_history ORDER BY id DESC LIMIT 1")[0][0]
        assert named in error
        run.wait_for(lambda games=games: run.count("games") > games, 30, "self-play to go on")
        assert run.process.poll() is None
    status = run.hexzd("status")
    assert "config refused" in status.stdout and "game.board_size" in status.stdout
    # A good edit applies; one that uses a key's old name (selfplay.games) reads it, with a notice.
    run.config.write_text(good.replace("sims = 32", "sims = 24", 1).replace("batch = 32", "games = 32", 1))
    run.wait_for(lambda: run.count("games", "sims = 24") > 0, 60, "games with the new sims")
    assert run.query("SELECT accepted FROM config_history ORDER BY id DESC LIMIT 1") == [(1,)]
    renamed = "message LIKE '%: selfplay.games is now selfplay.batch;%' AND level = 'warning'"
    run.wait_for(lambda: run.count("events", renamed) == 1, 15, "the notice of the old key name")

    # A second daemon on the same file refuses, clearly.
    second = run.hexzd("start", "--headless", "--config", str(run.config))
    assert second.returncode == 1 and "another hexzd daemon" in second.stderr

    # A malformed message is logged and dropped; the daemon goes on.
    context = zmq.Context()
    push = context.socket(zmq.PUSH)
    push.connect(RunDir.of(run.db).results)
    for frame in (
        b"\xc1garbage",
        msgpack.packb({"v": 99, "kind": "game"}),
        msgpack.packb({"v": 1, "kind": "game", "winner": 3}),
    ):
        push.send(frame)
    push.close(linger=2000)
    context.term()
    run.wait_for(
        lambda: run.count("events", "message LIKE 'dropped a malformed message%'") == 3,
        15,
        "the malformed messages to be reported",
    )
    games = run.count("games")
    run.wait_for(lambda: run.count("games") > games, 30, "self-play after the bad messages")

    # A locked state file: results are held, nothing crashes, and writing resumes by itself.
    locker = sqlite3.connect(run.db, timeout=5, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    time.sleep(14)  # longer than the daemon's 10 s busy timeout
    assert run.process.poll() is None and "cannot write" in run.output.read_text()
    locker.execute("ROLLBACK")
    locker.close()
    run.wait_for(lambda: run.count("events", "message LIKE '%writable again%'") == 1, 40, "writing to resume")
    games = run.count("games")
    run.wait_for(lambda: run.count("games") > games, 30, "games after the lock")
    assert all(w["restarts"] == 0 for w in json.loads(run.hexzd("status", "--json").stdout)["workers"].values())
    assert run.stop() == 0
    assert "stopped" in run.output.read_text()


def test_a_state_file_newer_than_the_code_is_refused(runs, tmp_path):
    db = tmp_path / "run.sqlite"
    store.prepare(db)
    with sqlite3.connect(db) as connection:
        connection.execute(f"PRAGMA user_version = {store.VERSION + 1}")
    run = runs(tmp_path)
    result = run.hexzd("start", "--headless", "--config", str(run.config))
    assert result.returncode == 1
    assert f"schema version {store.VERSION + 1}, newer than this hexzd's {store.VERSION}" in result.stderr


def test_migrations_build_the_documented_schema_and_keep_rows(tmp_path):
    db = tmp_path / "run.sqlite"
    assert store.prepare(db) == 0
    with sqlite3.connect(db) as connection:
        connection.execute("INSERT INTO events (at, level, source, message) VALUES (1, 'info', 't', 'kept')")
    assert store.prepare(db) == store.VERSION  # a second open migrates nothing
    with sqlite3.connect(db) as connection:
        assert connection.execute("SELECT message FROM events").fetchall() == [("kept",)]
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        tables = {r[0] for r in connection.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view')")}
    assert {
        "models",
        "games",
        "duels",
        "duel_games",
        "promotions",
        "metrics",
        "tuning",
        "config_history",
        "events",
        "throughput_hourly",
        "promotion_history",
        "rating_vs_compute",
        "perfect_play",
    } <= tables


def test_a_schema_1_file_migrates_to_the_current_schema_keeping_its_rows(tmp_path):
    db = tmp_path / "run.sqlite"
    with sqlite3.connect(db) as connection:
        connection.executescript(f"BEGIN; {store.MIGRATIONS[0]}; PRAGMA user_version = 1; COMMIT;")
        connection.execute("INSERT INTO events (at, level, source, message) VALUES (1, 'info', 't', 'kept')")
    assert store.prepare(db) == 1
    with sqlite3.connect(db) as connection:
        assert connection.execute("PRAGMA user_version").fetchone() == (store.VERSION,)
        assert connection.execute("SELECT message FROM events").fetchall() == [("kept",)]
        assert connection.execute("SELECT COUNT(*) FROM perfect_play").fetchone() == (0,)


def test_control_commands_without_a_daemon_say_so(tmp_path):
    run = DaemonRun(tmp_path)
    result = run.hexzd("status", timeout=30)
    assert result.returncode == 1 and "no hexzd daemon answers" in result.stderr


@pytest.mark.timeout(240)
def test_retention_thins_old_games_and_prunes_snapshot_weights(runs, tmp_path):
    edits = {
        "[train]": ["min_positions = 100", "snapshot_every = 20", "batch_size = 64", "window = 300"],
        "[retention]": ["window_multiple = 1.0", "thin_keep = 0.5", "snapshot_every = 3"],
        "[daemon]": ["progress_seconds = 2.0"],
    }
    run = runs(tmp_path, edits=edits).start()
    run.wait_for(lambda: run.count("models") >= 8 and run.count("games") >= 300, 120, "8 snapshots")
    time.sleep(5)  # two more ticks: retention runs on each
    assert run.stop() == 0
    ids = [r[0] for r in run.query("SELECT id FROM games ORDER BY id")]
    newest = run.query("SELECT id, length FROM games ORDER BY id DESC")
    kept_whole, positions = set(), 0
    for game_id, length in newest:  # the newest window of positions is whole...
        positions += length
        kept_whole.add(game_id)
        if positions > 300:
            break
    older = [i for i in ids if i < min(kept_whole)]
    # ...older games are thinned to every 2nd (the last tick's newest games may not be yet).
    assert older and all(i % 2 == 0 for i in older[: len(older) // 2])
    assert len(ids) < max(ids)
    models = run.query("SELECT id, promoted_at IS NOT NULL, weights IS NOT NULL FROM models ORDER BY id")
    assert [m[0] for m in models] == list(range(1, len(models) + 1))  # rows are never deleted
    pruned = [i for i, promoted, has in models if not has]
    assert pruned and all(i % 3 != 0 for i in pruned)
    assert all(has for i, promoted, has in models if promoted or i == len(models))
    assert run.query("PRAGMA integrity_check") == [("ok",)]
