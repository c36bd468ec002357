"""hexzd sweep: a grid of configs, each a real `hexzd start` process on its own state file."""

import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from hexzd import config
from hexzd.studies.sweep import MANIFEST, Manifest, load, read_manifest, run_sweep

pytestmark = pytest.mark.e2e  # daemons and processes: `pytest -m e2e`

# A 3x3 board, a tiny network and no rating matches: a run of 30 games is over in seconds.
TINY = """
[set]
"game.board_size" = 3
"model.blocks" = 1
"selfplay.batch" = 8
"ratings.references" = [16]
"ratings.ladder_pairs" = 0
"ratings.share" = 0
"ratings.perfect_positions" = 0
"daemon.progress_seconds" = 0.5
"""


def bad(text: str, tmp_path: Path) -> str:
    path = tmp_path / "sweep.toml"
    path.write_text(text)
    with pytest.raises(ValueError) as refused:
        load(path)
    return str(refused.value).removeprefix(str(tmp_path) + "/")


@pytest.mark.parametrize(
    "text,error",
    [
        ("[sweep]\nparalel = 2\n", "sweep.toml:2: sweep.paralel: Extra inputs are not permitted"),
        ('[sweep]\nparallel = "two"\n', "sweep.toml:2: sweep.parallel: Input should be a valid integer"),
        ("[sweep]\nparallel = 10000\n", "sweep.toml:2: sweep.parallel: Value error, 10000 runs at once, on"),
        ("[grid]\n'model.channels' = [8]\n[sets]\n", "sweep.toml:3: sets: Extra inputs are not permitted"),
        ("[sweep]\nname = 'x'\n", "sweep.toml: grid: Field required"),
        ("[grid]\n", "sweep.toml:1: grid: Dictionary should have at least 1 item"),
        ("[grid]\n'model.channels' = 8\n", "sweep.toml:2: model.channels: a grid key takes a non-empty list"),
        ("[grid]\n\n'model.channels' = []\n", "sweep.toml:3: model.channels: a grid key takes a non-empty list"),
        ("[grid]\nchannels = [8]\n", "sweep.toml:2: channels: a config key is section.key"),
        (
            "[set]\n'model.channels' = 8\n[grid]\nmodel.channels = [8, 16]\n",
            "sweep.toml:4: model.channels: model.channels is also set by [set]",
        ),
        (
            "[set]\n'budget.games' = 9\n[grid]\n'model.chanels' = [8]\n",
            "sweep.toml:4: model.chanels: Extra inputs are not permitted (in the run chanels=8)",
        ),
        (
            "[set]\ngame.board_sise = 4\n'budget.games' = 9\n[grid]\n'model.channels' = [8]\n",
            "sweep.toml:2: game.board_sise: Extra inputs are not permitted",
        ),
        (
            "[set]\n'budget.games' = 9\n[grid.model]\nchannels = [8, 2]\n",
            "sweep.toml:4: model.channels: Value error, should be from 4 to 1024 (in the run channels=2)",
        ),
        (
            "[set]\n'budget.games' = 9\n[grid]\n'tune.sims_min' = [16, 900]\n",
            "sweep.toml:4: tune.sims_min: should be at most sims_max (800), not 900 (in the run sims_min=900)",
        ),
        ("[grid]\n'model.channels' = [8]\n", "sweep.toml: budget: the run channels=8 has no budget"),
        (
            "[grid]\n'model.channels' = [8]\n'budget.games' = [0, 30]\n",
            "sweep.toml:3: budget: the run channels=8,games=0 has no budget",
        ),
        ("[sweep]\nbase = 'nope.toml'\n[grid]\n'model.channels' = [8]\n", "sweep.toml:2: sweep.base: no file"),
        ("[grid\n", "sweep.toml: not valid TOML"),
    ],
)
def test_a_bad_sweep_file_is_refused_with_its_line_and_key(tmp_path, text, error):
    assert bad(text, tmp_path).startswith(error)


def test_every_bad_key_of_a_sweep_file_is_told_at_once_from_the_command_line(tmp_path):
    """Keys that are not config keys, and a grid key that is not a list: each on its line (the
    first used to be told alone)."""
    text = "[set]\nchannels = 8\n'budget.games' = 9\n[grid]\n'model.blocks' = 4\n'selfplay.sims' = [8]\nsims = [1]\n"
    (tmp_path / "sweep.toml").write_text(text)
    done = hexzd_sweep(tmp_path, "--dry-run", timeout=60)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr.splitlines() == [
        "Error: sweep.toml:2: channels: a config key is section.key, such as model.channels",
        "sweep.toml:5: model.blocks: a grid key takes a non-empty list of values, one per run",
        "sweep.toml:7: sims: a config key is section.key, such as model.channels",
    ]


def test_a_bad_base_config_is_refused_in_its_own_file(tmp_path):
    (tmp_path / "base.toml").write_text("[model]\nchannels = 2\n")
    error = bad("[sweep]\nbase = 'base.toml'\n[grid]\n'model.blocks' = [1]\n", tmp_path)
    assert error.startswith("base.toml:2: model.channels: Value error, should be from 4 to 1024")


def test_a_bad_sweep_file_starts_nothing(tmp_path):
    (tmp_path / "sweep.toml").write_text(TINY + "[grid]\n'model.chanels' = [8, 16]\n")
    done = hexzd_sweep(tmp_path)
    assert done.returncode == 1
    assert "Error: sweep.toml:12: model.chanels: Extra inputs are not permitted (in the run chanels=8)" in done.stderr
    assert list(tmp_path.iterdir()) == [tmp_path / "sweep.toml"]


def test_the_grid_expands_into_named_runs_with_their_configs(short_dir):
    tmp_path = short_dir
    (tmp_path / "base.toml").write_text("[budget]\ngames = 100  # the base's own comment\n")
    path = tmp_path / "scaling.toml"
    path.write_text(
        "[sweep]\nbase = 'base.toml'\nparallel = 1\n"
        + TINY.replace('"model.blocks" = 1\n', "")  # the grid sets it
        + "[grid]\nmodel = [{blocks = 1, channels = 8}, {blocks = 2, channels = 16}]\n"
        + "'budget.pflops' = [0.001, 0.003]\n"
    )
    sweep = load(path)
    assert (sweep.name, sweep.out, sweep.parallel) == ("scaling", tmp_path / "scaling", 1)
    assert [r.name for r in sweep.runs] == [
        "blocks=1,channels=8,pflops=0.001",
        "blocks=1,channels=8,pflops=0.003",
        "blocks=2,channels=16,pflops=0.001",
        "blocks=2,channels=16,pflops=0.003",
    ]
    run = sweep.runs[3]
    assert run.overrides == {"model.blocks": 2, "model.channels": 16, "budget.pflops": 0.003}
    written = config.parse(run.config_text, run.config)
    assert (written.model.blocks, written.model.channels, written.budget.pflops) == (2, 16, 0.003)
    assert (written.game.board_size, written.budget.games) == (3, 100)  # [set], and the base
    assert "games = 100  # the base's own comment" in run.config_text


def test_runs_are_named_by_the_last_part_of_each_grid_key_unless_two_share_it(short_dir):
    path = short_dir / "sweep.toml"
    path.write_text(
        "[set]\n'budget.games' = 9\n[grid]\n'selfplay.sims' = [32]\n'duel.sims' = [64]\n'model.channels' = [8]\n"
    )
    assert [r.name for r in load(path).runs] == ["selfplay.sims=32,duel.sims=64,channels=8"]


def test_a_run_whose_sockets_would_not_fit_is_refused_before_anything_starts(tmp_path):
    error = bad(f"[sweep]\nout = '{'o' * 100}'\n[set]\n'budget.games' = 9\n[grid]\n'model.channels' = [8]\n", tmp_path)
    assert error.startswith("sweep.toml:2: sweep.out: the socket path")
    assert "a shorter `out` here" in error


def test_two_sweeps_cannot_run_into_one_directory(short_dir):
    (short_dir / "sweep.toml").write_text("[set]\n'budget.games' = 9\n[grid]\n'model.channels' = [8]\n")
    sweep = load(short_dir / "sweep.toml")
    sweep.out.mkdir()
    with Manifest(sweep.out / MANIFEST), pytest.raises(ValueError, match="another hexzd sweep is running into"):
        run_sweep(sweep)


def hexzd_sweep(where: Path, *args, timeout=240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hexzd", "sweep", "sweep.toml", *args],
        cwd=where,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def games(db: Path) -> int:
    with sqlite3.connect(db.resolve().as_uri() + "?mode=ro", uri=True) as connection:
        return connection.execute("SELECT COUNT(*) FROM games").fetchone()[0]


def starts(db: Path) -> int:
    with sqlite3.connect(db.resolve().as_uri() + "?mode=ro", uri=True) as connection:
        return connection.execute("SELECT COUNT(*) FROM events WHERE message LIKE 'started (pid%'").fetchone()[0]


@pytest.fixture
def short_dir():
    """A directory with a short path: ipc socket paths beside the state files are limited to ~100 characters.

    Whatever a failed test leaves running there is stopped: each run's process group.
    """
    path = Path(tempfile.mkdtemp(prefix="hz", dir="/tmp"))
    yield path
    for manifest in path.glob(f"*/{MANIFEST}"):
        for record in [r for r in read_manifest(manifest).values() if r["status"] == "running"]:
            try:
                os.killpg(record["pid"], signal.SIGKILL)
            except ProcessLookupError:
                pass
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.timeout(240)
def test_a_failed_run_is_recorded_the_sweep_goes_on_and_a_rerun_resumes(short_dir):
    sweep_file = short_dir / "sweep.toml"
    sweep_file.write_text(
        "[sweep]\nout = 'runs'\n" + TINY + "'budget.games' = 30\n[grid]\n'model.channels' = [8, 12]\n"
    )
    runs = short_dir / "runs"
    runs.mkdir()
    (runs / "channels=8.sqlite").write_text("not a state file")  # the first run fails at its start
    done = hexzd_sweep(short_dir)
    assert done.returncode == 1, done.stdout + done.stderr
    latest = read_manifest(runs / MANIFEST)
    failed, finished = latest["channels=8"], latest["channels=12"]
    assert (failed["status"], failed["exit_code"]) == ("failed", 1)
    assert "file is not a database" in failed["reason"]
    assert (finished["status"], finished["exit_code"], finished["reason"]) == ("done", 0, "budget.games is spent")
    assert finished["overrides"] == {"model.channels": 12}
    assert config.load(runs / "channels=12.toml").model.channels == 12
    assert games(runs / "channels=12.sqlite") >= 30
    assert re.search(r"channels=12 +done +\d", done.stdout)
    assert "hexzd league runs/channels=12.sqlite --db runs/league.sqlite" in done.stdout

    # Again: the done run is skipped; the failed one is tried again (and fails again).
    played = games(runs / "channels=12.sqlite")
    again = hexzd_sweep(short_dir)
    assert again.returncode == 1
    assert "channels=12: done before, skipped" in again.stdout
    history = [json.loads(line) for line in (runs / MANIFEST).read_text().splitlines()]
    assert [r["status"] for r in history if r["run"] == "channels=12"] == ["running", "done"]
    assert [r["status"] for r in history if r["run"] == "channels=8"] == ["running", "failed"] * 2
    assert games(runs / "channels=12.sqlite") == played

    # A raised budget continues the done run on its state file.
    sweep_file.write_text(sweep_file.read_text().replace("'budget.games' = 30", f"'budget.games' = {played + 30}"))
    more = hexzd_sweep(short_dir)
    assert "channels=12: done before, with another config: starting it again" in more.stdout
    assert read_manifest(runs / MANIFEST)["channels=12"]["status"] == "done"
    assert games(runs / "channels=12.sqlite") >= played + 30 and starts(runs / "channels=12.sqlite") == 2


@pytest.mark.timeout(240)
def test_ctrl_c_stops_the_running_runs_and_the_next_sweep_restarts_them(short_dir):
    tmp_path = short_dir
    sweep_file = tmp_path / "sweep.toml"
    sweep_file.write_text("[sweep]\nparallel = 2\n" + TINY + "'budget.hours' = 1\n[grid]\n'model.channels' = [8, 12]\n")
    runs = tmp_path / "sweep"
    process = subprocess.Popen(
        [sys.executable, "-m", "hexzd", "sweep", "sweep.toml"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    logs = [runs / "channels=8.log", runs / "channels=12.log"]
    deadline = time.monotonic() + 120
    while not all(log.exists() and "daemon: started" in log.read_text() for log in logs):  # both at once
        assert process.poll() is None and time.monotonic() < deadline, process.stdout.read()
        time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    try:
        output = process.communicate(timeout=90)[0]
    finally:
        process.kill()
    assert process.returncode == 1, output
    assert "SIGINT: stopping the 2 running run(s) gracefully" in output
    latest = read_manifest(runs / MANIFEST)
    assert [r["status"] for r in latest.values()] == ["interrupted", "interrupted"]
    for record in latest.values():  # each daemon stopped gracefully, and its workers with it
        assert record["exit_code"] == 0 and record["reason"] == "stopped by SIGINT from the sweep"
        with pytest.raises(ProcessLookupError):
            os.killpg(record["pid"], 0)

    # A budget the runs reach soon (a live key: the state files take it); they restart where they stopped.
    sweep_file.write_text(sweep_file.read_text().replace("'budget.hours' = 1", "'budget.games' = 30"))
    done = hexzd_sweep(tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    latest = read_manifest(runs / MANIFEST)
    assert [r["status"] for r in latest.values()] == ["done", "done"]
    for record in latest.values():
        db = runs / record["state_file"]
        assert starts(db) == 2 and games(db) >= 30
