"""The dashboard: its data functions, its panels, and the app driven by Textual's pilot."""

import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import types
from pathlib import Path

import pytest
import zmq
from daemon_run import QUICK, DaemonRun

from hexzd import store
from hexzd.daemon import messages as m
from hexzd.daemon.core import COUNTERS
from hexzd.daemon.rundir import RunDir
from hexzd.tui import charts, views
from hexzd.tui.app import Dashboard, Help
from hexzd.tui.data import (
    CHART_POINTS,
    CHARTED,
    READ_LIMIT,
    SERIES,
    DaemonError,
    History,
    Series,
    query_daemon,
    snapshot,
)

REFUSED = "config.toml:5: game.board_size: fixed for this run at 5; start a new state file to change it"
NOW = time.time()


@pytest.fixture
def short_dir():
    """A directory with a short path: ipc socket paths are limited to ~100 characters."""
    path = Path(tempfile.mkdtemp(prefix="hz", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


FILL = {"kind": "promotion", "opponent_sims": 64}  # columns that only some schema versions have


def insert(c, table: str, **values) -> None:
    """Inserts a row, filling the NOT NULL columns without default that the schema in force has and
    `values` lacks (the schema grows while the dashboard must keep reading it)."""
    for _, name, _, notnull, default, pk in c.execute(f"PRAGMA table_info({table})").fetchall():
        if notnull and default is None and not pk and name not in values:
            values[name] = FILL.get(name, 0)
    c.execute(
        f"INSERT INTO {table} ({', '.join(values)}) VALUES ({', '.join('?' * len(values))})", tuple(values.values())
    )


def make_state_file(path: Path, gpu: bool = False) -> Path:
    """A state file as a daemon would leave it: three snapshots, two promotions, a duel under way,
    a refused config edit as the latest, metrics and events."""
    store.prepare(path)
    c = sqlite3.connect(path, isolation_level=None)
    c.execute("BEGIN")
    for i, (step, rating, promoted) in enumerate(
        [(200, 0.0, NOW - 300), (400, 85.0, NOW - 120), (600, None, None)], start=1
    ):
        insert(
            c,
            "models",
            parent_id=i - 1 or None,
            created_at=NOW - 400 + 100 * i,
            train_step=step,
            params=1000,
            flops_per_eval=1000,
            promoted_at=promoted,
            rating=rating,
            rating_lo=None if rating is None else rating - 40,
            rating_hi=None if rating is None else rating + 40,
        )
    insert(
        c,
        "duels",
        candidate_id=1,
        opponent_id=None,
        sims=64,
        started_at=NOW - 320,
        finished_at=NOW - 300,
        wins=26,
        losses=0,
        llr=3.21,
        result="accepted",
    )
    insert(
        c,
        "duels",
        candidate_id=2,
        opponent_id=1,
        sims=64,
        started_at=NOW - 200,
        finished_at=NOW - 120,
        wins=38,
        losses=16,
        llr=3.43,
        result="accepted",
    )
    insert(c, "duels", candidate_id=3, opponent_id=2, sims=64, started_at=NOW - 60, wins=7, losses=5)
    insert(c, "promotions", model_id=1, at=NOW - 300, duel_id=1, score=1.0)
    insert(c, "promotions", model_id=2, at=NOW - 120, duel_id=2, score=0.7)
    insert(
        c,
        "perfect_play",
        model_id=2,
        sims=0,
        at=NOW - 100,
        seed=0,
        positions=200,
        won=150,
        kept=120,
        converted=110,
        value_sign=0.8,
    )
    insert(
        c,
        "perfect_play",
        model_id=2,
        sims=64,
        at=NOW - 100,
        seed=0,
        positions=200,
        won=150,
        kept=147,
        converted=145,
        value_sign=0.8,
    )
    insert(c, "config_history", at=NOW - 500, text="a", accepted=1, error=None)
    insert(c, "config_history", at=NOW - 30, text="b", accepted=0, error=REFUSED)
    for k in range(30):
        at = NOW - 300 + 10 * k
        c.executemany(
            "INSERT INTO metrics (at, source, name, value) VALUES (?, ?, ?, ?)",
            [
                (at, "daemon", "games_per_s", 100 + k),
                (at, "daemon", "positions_per_s", 1500 + 10 * k),
                (at, "daemon", "train_step_per_s", 9.5),
                (at, "trainer", "policy_loss", 3.0 - k / 20),
                (at, "trainer", "value_loss", 0.9 - k / 100),
                (at, "trainer", "lr", 0.002),
                (at, "trainer", "train_waiting", 0.25),
            ],
        )
        if gpu:
            c.executemany(
                "INSERT INTO metrics (at, source, name, value) VALUES (?, 'daemon', ?, ?)",
                [(at, "gpu_util", 50 + k), (at, "gpu_memory_gb", 3.5)],
            )
    insert(c, "tuning", at=NOW - 50, knob="sims", old=64, new=96, reason="the accelerator idles")
    insert(c, "events", at=NOW - 500, level="info", source="daemon", message="started (pid 1)")
    insert(
        c,
        "events",
        at=NOW - 30,
        level="error",
        source="config",
        message=f"edit refused, still running on the last good config: {REFUSED}",
    )
    insert(c, "meta", key="counter.games", value="1234")
    insert(c, "meta", key="counter.train_step", value="650")
    c.execute("COMMIT")
    c.close()
    return path


# A 5x5 game in progress: Black c3, White b4, Black b3; White to play, the search leaning to c2.
LIVE = {
    "worker": "selfplay-0",
    "board_size": 5,
    "moves": "c3b4b3",
    "visits": [0.0] * 7 + [0.6, 0.3] + [0.0] * 5 + [0.1] + [0.0] * 10,
    "chosen": 7,
    "model_id": 2,
    "sims": 96,
    "backend": "cpu fp32",
}
GPU = {
    "index": 0,
    "name": "NVIDIA H100",
    "util": 0.93,
    "memory_used": 5 * 2**30,
    "memory_total": 80 * 2**30,
    "watts": 412.0,
}


class FakeDaemon(threading.Thread):
    """A ROUTER on the run's control socket that answers as the daemon does, recording the commands."""

    def __init__(self, db, refuse: str | None = None, pid: int | None = None):
        super().__init__(daemon=True)
        self.db, self.refuse, self.commands, self.state = db, refuse, [], "running"
        self.pid = pid or os.getpid()
        self.context = zmq.Context()
        self.router = self.context.socket(zmq.ROUTER)
        RunDir.of(db).path.mkdir(parents=True, exist_ok=True)
        self.router.bind(RunDir.of(db).control)
        self.done = threading.Event()

    def status(self) -> dict:
        return {
            "pid": self.pid,
            "db": "run.sqlite",
            "config": "config.toml",
            "state": self.state,
            "uptime": 75.0,
            "best": 2,
            "duel": "duel 3: model 3 vs model 2",
            "config_error": REFUSED,
            "counters": dict.fromkeys(COUNTERS, 10.0),
            "workers": {
                "selfplay-0": {"pid": 11, "alive": True, "restarts": 0},
                "trainer": {"pid": None, "alive": False, "restarts": 3},
            },
            "cpu": {"cores": 2, "eval_share": 0.18, "workers": {}, "recent": {"selfplay-0": 0.48, "duel": 0.2}},
            "load": [1.5, 1.25, 1.0],
            "devices": [GPU],
            "no_devices": "",
            "tuner": {
                "enabled": True,
                "sims": 96,
                "batch": 64,
                "groups": 2,
                "sims_bounds": [16, 800],
                "batch_bounds": [8, 1024],
            },
            "live": LIVE,
        }

    def run(self) -> None:
        while not self.done.is_set():
            if not self.router.poll(20):
                continue
            identity, *rest, body = self.router.recv_multipart()
            command = m.decode(body).command
            self.commands.append(command)
            self.state = {"pause": "paused", "resume": "running", "stop": "stopping"}.get(command, self.state)
            reply = m.Reply(ok=False, error=self.refuse) if self.refuse else m.Reply(ok=True, status=self.status())
            self.router.send_multipart([identity, *rest, m.encode(reply)])

    def close(self) -> None:
        self.done.set()
        self.join()
        self.router.close()
        self.context.term()


@pytest.fixture
def fake_daemon(short_dir):
    daemon = FakeDaemon(make_state_file(short_dir / "run.sqlite"))
    daemon.start()
    yield daemon
    daemon.close()


def text_of(app, name: str) -> str:
    return str(app.query_one(f"#{name}").content)


# -- the data functions ----------------------------------------------------------------


def test_snapshot_reads_every_table(tmp_path):
    snap = snapshot(make_state_file(tmp_path / "run.sqlite"))
    assert snap["error"] is None and snap["best"] == 2
    assert [r["id"] for r in snap["models"]] == [3, 2, 1] and snap["model_count"] == 3
    assert snap["models"][1]["rating"] == 85.0 and snap["models"][1]["score"] == 0.7
    assert [p["model_id"] for p in snap["promotions"]] == [2, 1] and snap["promotions"][0]["replaced"] == 1
    assert snap["duels"][0]["finished_at"] is None and snap["duels"][0]["wins"] == 7
    assert not snap["config"][0]["accepted"] and snap["config"][0]["error"] == REFUSED
    assert snap["tuning"][0]["knob"] == "sims" and snap["gpu"] == []
    assert snap["counters"] == {"games": 1234.0, "train_step": 650.0}
    games = snap["series"]["games_per_s"]
    assert len(games) == 30 and games[-1][1] == 129 and games[0][0] < games[-1][0]  # oldest first
    assert snap["events"][0]["level"] == "error"


def test_snapshot_finds_gpu_metrics(tmp_path):
    snap = snapshot(make_state_file(tmp_path / "run.sqlite", gpu=True))
    assert snap["gpu"] == ["gpu_memory_gb", "gpu_util"]
    text = views.throughput_panel(snap).plain
    assert "util" in text and "memory_gb" in text and "no GPU" not in text
    assert re.search(r"trainer waits\s+25%", text)


def test_snapshot_of_a_missing_or_foreign_file(tmp_path):
    assert "no state file" in snapshot(tmp_path / "absent.sqlite")["error"]
    (tmp_path / "junk.sqlite").write_bytes(b"not a database at all" * 100)
    assert "cannot" in snapshot(tmp_path / "junk.sqlite")["error"]
    sqlite3.connect(tmp_path / "empty.sqlite").close()
    assert "not a hexzd state file" in snapshot(tmp_path / "empty.sqlite")["error"]
    assert views.models_panel(snapshot(tmp_path / "absent.sqlite")).plain.startswith("no state file")


def test_snapshot_never_writes(tmp_path):
    path = make_state_file(tmp_path / "run.sqlite")
    before = path.read_bytes()
    snapshot(path)
    assert path.read_bytes() == before


def test_query_daemon_without_a_daemon(short_dir):
    db = short_dir / "run.sqlite"
    started = time.monotonic()
    assert query_daemon(db, "status") is None  # no socket file: at once
    assert time.monotonic() - started < 0.5
    RunDir.of(db).path.mkdir()
    Path(RunDir.of(db).control.removeprefix("ipc://")).touch()  # stale, as after kill -9
    assert query_daemon(db, "status", timeout=0.2) is None


def test_query_daemon_speaks_the_control_protocol(fake_daemon):
    assert query_daemon(fake_daemon.db, "status")["state"] == "running"
    assert query_daemon(fake_daemon.db, "pause")["state"] == "paused"
    assert fake_daemon.commands == ["status", "pause"]


def test_query_daemon_raises_a_refusal(short_dir):
    daemon = FakeDaemon(short_dir / "run.sqlite", refuse="expected a request")
    daemon.start()
    try:
        with pytest.raises(DaemonError, match="expected a request"):
            query_daemon(daemon.db, "status")
    finally:
        daemon.close()


# -- the panels --------------------------------------------------------------------------


def test_sparkline_and_numbers():
    assert views.sparkline([]) == ""
    assert views.sparkline([1, 1, 1]) == "▁▁▁"
    assert views.sparkline([0, 1, 2, 3, 4, 5, 6, 7]) == "▁▂▃▄▅▆▇█"
    assert len(views.sparkline(range(100), width=10)) == 10
    assert views.number(1234567) == "1.23M" and views.number(0.753) == "0.753" and views.number(None) == "-"
    assert views.ago(100, 100 + 3700) == "1h01m ago"


def test_panels_from_a_snapshot(tmp_path):
    snap = snapshot(make_state_file(tmp_path / "run.sqlite"))
    models = views.models_panel(snap).plain
    assert "3 models, 2 promotions, best model 2" in models
    assert "85 ±40" in models and "model 2 over model 1: 38-16" in models
    assert "model 1 over random rollouts: 26-0" in models
    assert re.search(r"model 2 over model 1: 38-16 .* perfect-move 80% raw, 98% @64", models)
    assert "REFUSED: " + REFUSED in views.config_panel(snap).plain
    assert REFUSED in views.config_banner(None, snap).plain
    assert "no GPU" in views.throughput_panel(snap).plain
    assert "sims 64 -> 96" in views.training_panel(snap).plain
    duels = views.duels_panel(None, snap).plain
    assert "unfinished: " in duels and " 3: model 3" in duels and "vs model 2" in duels and "7-5" in duels
    assert "accepted" in duels and "llr +3.43" in duels
    assert "daemon not running" in views.daemon_line(None, snap).plain


def test_no_banner_once_an_edit_is_accepted(tmp_path):
    snap = snapshot(make_state_file(tmp_path / "run.sqlite"))
    snap["config"][0]["accepted"] = 1
    assert views.config_banner(None, snap) is None
    assert views.config_banner({"config_error": "bad"}, snap).plain.startswith("CONFIG EDIT REFUSED")


def test_tuner_idle_without_rows(tmp_path):
    snap = snapshot(make_state_file(tmp_path / "run.sqlite"))
    snap["tuning"] = []
    assert "tuner idle" in views.training_panel(snap).plain


# -- the app -------------------------------------------------------------------------------


@pytest.mark.e2e
@pytest.mark.asyncio
async def test_dashboard_without_a_daemon_shows_the_state_file(short_dir):
    app = Dashboard(make_state_file(short_dir / "run.sqlite"), interval=0.2)
    async with app.run_test(size=(150, 50)) as pilot:
        await pilot.pause(0.3)
        assert "daemon not running" in text_of(app, "daemon")
        assert "3 models, 2 promotions" in text_of(app, "models")
        assert "model 2 over model 1" in text_of(app, "models")
        assert REFUSED in text_of(app, "banner") and app.query_one("#banner").display
        assert "no daemon" in text_of(app, "workers")
        await pilot.press("4")
        await pilot.pause(0.1)
        assert REFUSED in text_of(app, "config")
        await pilot.press("p")  # nothing to pause: a notice, no crash
        await pilot.press("S")
        await pilot.pause(0.1)
        assert "no daemon is running" in [n.message for n in app._notifications][-1]
        await pilot.press("q")
    assert app.return_value == "quit"


@pytest.mark.e2e
@pytest.mark.asyncio
async def test_dashboard_without_a_state_file(short_dir):
    app = Dashboard(short_dir / "nothing.sqlite", interval=0.2)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause(0.2)
        assert "daemon not running" in text_of(app, "daemon")
        assert "no state file" in text_of(app, "models")
        assert not app.query_one("#banner").display


@pytest.mark.e2e
@pytest.mark.asyncio
async def test_dashboard_keys_talk_to_the_daemon(fake_daemon):
    app = Dashboard(fake_daemon.db, interval=0.2)
    async with app.run_test(size=(150, 50)) as pilot:
        await pilot.pause(0.3)
        assert "RUNNING" in text_of(app, "daemon")
        assert "DOWN" in text_of(app, "workers") and "restarts 3" in text_of(app, "workers")
        assert REFUSED in text_of(app, "banner")
        await pilot.press("p")
        await pilot.pause(0.2)
        assert "pause" in fake_daemon.commands and "PAUSED" in text_of(app, "daemon")
        await pilot.press("p")
        await pilot.pause(0.2)
        assert fake_daemon.commands[-1] in ("resume", "status") and "resume" in fake_daemon.commands
        await pilot.press("S", "n")  # asked, and declined
        await pilot.pause(0.2)
        assert "stop" not in fake_daemon.commands
        await pilot.press("S", "y")
        await pilot.pause(0.3)
        assert "stop" in fake_daemon.commands and "STOPPING" in text_of(app, "daemon")
        await pilot.press("ctrl+c")
    assert app.return_value == "interrupt"


# -- the board, the machine, the tuner, the history ---------------------------------------


def _stones_drawn(text: str, n: int) -> dict[tuple[int, int], str]:
    """(row, column) -> glyph of every stone in a rendered board (rows offset one column each)."""
    lines = text.splitlines()[2 : 2 + n]
    return {
        (r, c): line[r + 4 + 2 * c] for r, line in enumerate(lines) for c in range(n) if line[r + 4 + 2 * c] in "●◉"
    }


def test_the_board_draws_each_stone_where_the_moves_put_it():
    text = views.board_text(LIVE).plain
    # c3 b4 b3, read by hand: column letter, row number (a1 top left)
    assert _stones_drawn(text, 5) == {(2, 2): "●", (3, 1): "●", (2, 1): "◉"}
    assert text.splitlines()[2 + 1][1 + 4 + 2 * 2] == "◇"  # the search's next move, c2
    assert "White to play" in views.game_caption(LIVE, {}).plain and "c2 60%" in views.game_caption(LIVE, {}).plain


def test_a_big_board_fits_its_panel_or_says_how_to_enlarge_it():
    live = LIVE | {"board_size": 19, "visits": []}
    assert len(views.board_text(live, 80, 30).plain.splitlines()[-2]) <= 80
    compact = views.board_text(live, 50, 22).plain
    assert max(map(len, compact.splitlines())) <= 50 and "●" in compact
    assert "needs 61 x 22" in views.board_text(live, 80, 19).plain and "enlarge" in views.board_text(live, 80, 19).plain


def test_device_and_tuner_panels():
    status = FakeDaemon.status(types.SimpleNamespace(pid=1, db="x", state="running"))
    device = views.device_panel(status).plain
    assert "GPU 0 NVIDIA H100" in device and "util  93%" in device and "5.0/80.0 GB" in device and "412 W" in device
    assert "selfplay-0" in device and "48.0%" in device and "load 1.50" in device and "cpu fp32" in device
    bare = views.device_panel(status | {"devices": [], "no_devices": "no GPU meter: no GPU is visible"}).plain
    assert "no GPU is visible" in bare
    snap = {
        "now": NOW,
        "error": None,
        "tuning": [{"at": NOW - 5, "knob": "batch", "old": 32, "new": 64, "reason": "r"}],
    }
    tuner = views.tuner_panel(status, snap).plain
    assert (
        "sims      96  in [16, 800]" in tuner and "batch     64  in [8, 1024]" in tuner and "batch 32 -> 64: r" in tuner
    )


def test_a_series_spans_the_whole_run_in_bounded_points():
    series = Series(points=64)
    samples = [(float(t), float(t % 7)) for t in range(10_000)]
    for at, value in samples:
        series.add(at, value)
    xs, ys = series.xy()
    assert 32 <= len(xs) <= 65 and xs == sorted(xs)
    assert xs[0] < 200 and xs[-1] > 9_800
    assert sum(ys) / len(ys) == pytest.approx(sum(v for _, v in samples) / len(samples), abs=0.1)


def test_the_history_reads_on_from_where_it_stopped(tmp_path):
    db = make_state_file(tmp_path / "run.sqlite")
    history = History()
    snapshot(db, history)
    assert len(history.series["policy_loss"].xy()[0]) == 30
    c = sqlite3.connect(db)
    c.execute("INSERT INTO metrics VALUES (?, 'trainer', 'policy_loss', 1.0)", (NOW + 1,))
    c.commit()
    c.close()
    snapshot(db, history)
    xs, ys = history.series["policy_loss"].xy()
    assert len(xs) == 31 and ys[-1] == 1.0 and xs[-1] == NOW + 1


@pytest.mark.e2e
@pytest.mark.asyncio
async def test_dashboard_tabs_help_reload_and_a_restarted_daemon(fake_daemon):
    app = Dashboard(fake_daemon.db, interval=0.2)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause(0.3)
        await pilot.press("2")
        await pilot.pause(0.3)
        board = app.query_one("#board")
        assert _stones_drawn(board.render().plain, 5) == {(2, 2): "●", (3, 1): "●", (2, 1): "◉"}
        assert "model 2 @96 sims" in text_of(app, "caption")
        await pilot.press("4")
        await pilot.pause(0.3)
        assert "NVIDIA H100" in text_of(app, "device") and "in [16, 800]" in text_of(app, "tuner")
        await pilot.press("3")
        await pilot.pause(0.3)
        plot = app.query_one("#chart-rating-minutes")
        assert charts.rating_chart(plot.plt, app.snap["ratings"], app.snap["started"], "minutes") == 2
        await pilot.press("r")
        await pilot.pause(0.3)
        assert "reload" in fake_daemon.commands
        assert "refused" in [n.message for n in app._notifications][-1]  # the fake daemon has a refused edit
        await pilot.press("question_mark")
        await pilot.pause(0.1)
        assert isinstance(app.screen, Help) and "stop the daemon" in str(app.screen.query_one("#help").content)
        await pilot.press("escape")
        await pilot.pause(0.1)
        assert not isinstance(app.screen, Help)
        fake_daemon.pid += 1  # as if restarted
        await pilot.pause(0.4)
        assert any("restarted" in n.message for n in app._notifications)


# -- snapshots of the screens, on fixed data -------------------------------------------------


@pytest.mark.e2e
@pytest.mark.parametrize("size, tab", [((80, 24), "1"), ((160, 48), "1"), ((80, 24), "2"), ((160, 48), "3")])
def test_screens_match_their_snapshots(snap_compare, short_dir, size, tab):
    """The overview at 80x24 and 160x48, the game at 80x24, the charts at 160x48: `--snapshot-update` renews them."""
    daemon = FakeDaemon(make_state_file(short_dir / "run.sqlite"), pid=4242)
    daemon.start()
    try:
        app = Dashboard(daemon.db, interval=0.2, clock=lambda: NOW)

        async def show(pilot):  # a few frames: a frame draws at most one chart
            await pilot.press(tab)
            await pilot.pause(1.2)

        assert snap_compare(app, terminal_size=size, run_before=show)
    finally:
        daemon.close()


# -- the cost of a frame over a run of days ----------------------------------------------------

DAYS = 3


def make_long_run(path: Path) -> Path:
    """A state file as three days of a run leave it: a sample of every series every 10 s, 300 promoted
    and rated snapshots, 100,000 events."""
    make_state_file(path)
    c = sqlite3.connect(path, isolation_level=None)
    c.execute("BEGIN")
    start = NOW - DAYS * 86400
    ticks = range(0, DAYS * 86400, 10)
    for name in (*SERIES, *CHARTED):
        c.executemany(
            "INSERT INTO metrics (at, source, name, value) VALUES (?, 'daemon', ?, ?)",
            ((start + t, name, 1.0 + (t % 3600) / 3600) for t in ticks),
        )
    for i in range(300):
        insert(
            c,
            "models",
            created_at=start + 800 * i,
            train_step=1000 * i,
            params=1,
            flops_per_eval=1,
            promoted_at=start + 800 * i + 60,
            rating=5.0 * i,
            rating_lo=5.0 * i - 30,
            rating_hi=5.0 * i + 30,
        )
    c.executemany(
        "INSERT INTO events (at, level, source, message) VALUES (?, 'info', 'daemon', ?)",
        ((start + 2.5 * k, f"event {k}") for k in range(100_000)),
    )
    c.execute("COMMIT")
    c.close()
    return path


@pytest.mark.slow
@pytest.mark.asyncio
async def test_no_frame_takes_over_100_ms_after_days_of_history(short_dir):
    daemon = FakeDaemon(make_long_run(short_dir / "run.sqlite"))
    daemon.start()
    try:
        app = Dashboard(daemon.db, interval=3600, clock=lambda: NOW)  # the test makes every frame itself
        async with app.run_test(size=(160, 48)) as pilot:
            for _ in range(DAYS * 86400 // 10 // READ_LIMIT + 1):  # the history catches up
                await app.refresh_data()
            series = app.history.series["policy_loss"]
            assert series.xy()[0][0] < NOW - (DAYS - 0.1) * 86400 and len(series.xy()[0]) <= CHART_POINTS + 1
            frames, reads = [], []
            for tab in "1234" * 3:
                await pilot.press(tab)
                await pilot.pause()
                started = time.perf_counter()
                await app.refresh_data()
                reads.append(time.perf_counter() - started)
                started = time.perf_counter()
                app.show()
                app.screen.refresh()
                await pilot.pause()
                frames.append(time.perf_counter() - started)
        print(
            f"frames: median {sorted(frames)[len(frames) // 2] * 1000:.1f} ms, max {max(frames) * 1000:.1f} ms;"
            f" reads: max {max(reads) * 1000:.1f} ms"
        )
        assert max(frames) < 0.1
    finally:
        daemon.close()


# -- a real daemon ---------------------------------------------------------------------------


def _tell(app, text: str) -> bool:
    return any(text in str(n.message) for n in app._notifications)


async def _until(pilot, condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        await pilot.pause(0.25)
    raise AssertionError(f"waited {seconds} s for {what}")


@pytest.mark.e2e
@pytest.mark.asyncio
async def test_dashboard_on_a_real_daemon(short_dir):
    """Numbers, the board against the game's moves, p, r with a refused edit, ? and a daemon that goes away."""
    run = DaemonRun(short_dir, {"[game]": ["board_size = 4"], **QUICK}).start()
    try:
        app = Dashboard(run.db, interval=0.5)
        async with app.run_test(size=(120, 40)) as pilot:
            await _until(pilot, lambda: re.search(r"games/s +[0-9]", text_of(app, "throughput")), 60, "games/s")
            assert "selfplay-0   alive" in text_of(app, "workers")
            await pilot.press("2")
            await _until(pilot, lambda: app.query_one("#board").live is not None, 30, "a game on the board")
            board = app.query_one("#board")
            live, drawn = board.live, _stones_drawn(board.render().plain, 4)
            cells = re.findall(r"([a-d])([1-4])", live["moves"])  # trmph, read without hexzd's parser
            assert {(int(row) - 1, ord(col) - 97) for col, row in cells} == set(drawn)
            if cells:
                col, row = cells[-1]
                assert drawn[(int(row) - 1, ord(col) - 97)] == "◉"
            await pilot.press("p")
            await pilot.pause(0.3)
            assert query_daemon(run.db, "status")["state"] == "paused"
            await pilot.press("p")
            await pilot.pause(0.3)
            assert query_daemon(run.db, "status")["state"] == "running"
            run.config.write_text(run.config.read_text().replace("board_size = 4", "board_size = 6"))
            await pilot.press("r")
            await _until(pilot, lambda: _tell(app, "config.toml refused: "), 10, "the refusal")
            await pilot.press("1")
            await _until(pilot, lambda: "edit refused" in text_of(app, "events"), 10, "the refusal among events")
            assert "game.board_size" in text_of(app, "banner")
            await pilot.press("question_mark")
            await pilot.pause(0.1)
            assert isinstance(app.screen, Help)
            await pilot.press("escape")
            run.stop()
            await _until(pilot, lambda: _tell(app, "lost the daemon"), 10, "the notice of a lost daemon")
            assert "daemon not running" in text_of(app, "daemon")
    finally:
        run.cleanup()


CONFIG = """
[selfplay]
sims = 8
batch = 8
[train]
min_positions = 200
snapshot_every = 20
[daemon]
progress_seconds = 1.0
"""


@pytest.mark.e2e
def test_start_without_a_terminal_runs_headless(short_dir):
    (short_dir / "config.toml").write_text("[game]\nboard_size = 99\n")
    run = subprocess.run(
        [sys.executable, "-m", "hexzd", "start"], cwd=short_dir, capture_output=True, text=True, timeout=120
    )
    assert "no terminal: running headless" in run.stderr
    assert run.returncode == 1 and "board_size" in run.stderr  # the daemon's own error, in the foreground


def _read_until(fd, marker: bytes, seconds: float) -> bytes:
    import re
    import select

    seen, deadline = b"", time.monotonic() + seconds
    while time.monotonic() < deadline:
        if select.select([fd], [], [], 0.1)[0]:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # the child has exited and closed the terminal
                break
            if not chunk:
                break
            seen += chunk
            if marker in re.sub(rb"\x1b[^a-zA-Z]*[a-zA-Z]", b"", seen):
                break
    return re.sub(rb"\x1b[^a-zA-Z]*[a-zA-Z]", b"", seen)


def _in_a_terminal(args, cwd):
    """`hexzd ARGS` on a pseudo-terminal, as a user runs it; (pid, fd)."""
    import fcntl
    import pty
    import struct
    import termios

    pid, fd = pty.fork()
    if pid == 0:  # the child: never back into pytest
        try:
            os.chdir(cwd)
            os.environ["TERM"] = "xterm-256color"
            os.execv(sys.executable, [sys.executable, "-m", "hexzd", *args])
        finally:
            os._exit(127)
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 150, 0, 0))
    return pid, fd


class Terminal:
    """`hexzd ARGS` on a pseudo-terminal; `attach` swaps in another command's terminal."""

    def __init__(self, args, cwd):
        self.cwd = cwd
        self.pid, self.fd = _in_a_terminal(args, cwd)

    def attach(self, args) -> None:
        os.close(self.fd)
        self.pid, self.fd = _in_a_terminal(args, self.cwd)

    def exit_code(self) -> int:
        return os.waitstatus_to_exitcode(os.waitpid(self.pid, 0)[1])


@pytest.fixture
def started(short_dir):
    """`hexzd start --for 40s` in a terminal, its dashboard up; afterwards no daemon is left running."""
    (short_dir / "config.toml").write_text(CONFIG)
    db = short_dir / "run.sqlite"
    terminal = Terminal(["start", "--for", "40s"], short_dir)
    terminal.db = db
    try:
        assert b"RUNNING" in _read_until(terminal.fd, b"RUNNING", 30)
        yield terminal
    finally:
        os.close(terminal.fd)
        for _ in range(100):
            if query_daemon(db, "status", timeout=0.2) is None:
                break
            query_daemon(db, "stop", timeout=0.2)
            time.sleep(0.2)


@pytest.mark.e2e
def test_start_runs_the_dashboard_p_pauses_and_q_leaves_the_daemon_running(started):
    db = started.db
    status = query_daemon(db, "status")
    assert status["state"] == "running" and status["pid"] != started.pid  # a background process
    os.write(started.fd, b"p")
    assert b"PAUSED" in _read_until(started.fd, b"PAUSED", 10)
    assert query_daemon(db, "status")["state"] == "paused"
    os.write(started.fd, b"q")
    assert b"the daemon keeps running" in _read_until(started.fd, b"attach --db", 10)
    assert started.exit_code() == 0
    assert query_daemon(db, "status")["state"] == "paused"
    assert (RunDir.of(db).path / "daemon.log").exists()
    started.attach(["attach"])  # and Ctrl-C there: the daemon still runs
    assert b"PAUSED" in _read_until(started.fd, b"PAUSED", 20)
    os.write(started.fd, b"\x03")
    assert b"the daemon keeps running" in _read_until(started.fd, b"hexzd stop", 10)
    assert started.exit_code() == 0
    assert query_daemon(db, "status")["pid"] == status["pid"]


@pytest.mark.e2e
def test_ctrl_c_in_the_dashboard_of_start_stops_the_daemon(started):
    os.write(started.fd, b"\x03")
    assert b"the daemon has stopped (exit code 0)" in _read_until(started.fd, b"(exit code", 30)
    assert started.exit_code() == 0
    assert query_daemon(started.db, "status") is None
