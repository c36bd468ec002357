"""The run's curves as TensorBoard event files: `hexzd report --tensorboard` and `[logging] tensorboard`.

Every test reads the event files back with TensorBoard's own reader (its
EventAccumulator) and compares every point with the state file's rows, read
here with plain sqlite3 and turned into the documented tags and steps by
`expected`, a plain-Python reading of hexzd.store.tensorboard_export's
contract. The state file is tests/data/run-2026-12-04.sqlite.gz, a real
run's, with tuner decisions and later samples added through the daemon's
own writer; the live test runs a real daemon, kills it and starts it again.
"""

import asyncio
import gzip
import shutil
import sqlite3
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from daemon_run import DaemonRun, config_text

from hexzd import store
from hexzd.cli import main
from hexzd.config import parse
from hexzd.store.tensorboard_export import Exporter
from hexzd.store.writes import Writer
from hexzd.train.tuner import Decision

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
tensor_util = pytest.importorskip("tensorboard.util.tensor_util")

DATA = Path(__file__).resolve().parent.parent / "data"


@pytest.fixture
def run_file(tmp_path) -> Path:
    """A copy of a real run's state file: 60 snapshots, 3 promotions, 4 rated, the trainer's and daemon's metrics."""
    db = tmp_path / "run.sqlite"
    with gzip.open(DATA / "run-2026-12-04.sqlite.gz") as packed, open(db, "wb") as out:
        shutil.copyfileobj(packed, out)
    return db


def add_rows(db: Path, at: float, decisions=(), metrics=None) -> None:
    """Rows added as the daemon adds them: through its writer, in one transaction."""

    async def write():
        writer = Writer(await store.writer(db))
        try:
            await writer.begin()
            await writer.add_tuning(at, list(decisions))
            for source, values in (metrics or {}).items():
                await writer.add_metrics(at, source, values)
            await writer.commit()
        finally:
            await writer.close()

    asyncio.run(write())


def expected(db: Path) -> dict[str, list[tuple]]:
    """Every point the event files should hold, by tag, as (wall time, step, value), sorted; values
    as TensorBoard's scalars hold them, float32."""
    with sqlite3.connect(db.resolve().as_uri() + "?mode=ro", uri=True) as c:
        firsts = c.execute(
            "SELECT MIN(at) FROM config_history UNION ALL SELECT MIN(created_at) FROM games"
            " UNION ALL SELECT MIN(created_at) FROM models UNION ALL SELECT MIN(at) FROM metrics"
        ).fetchall()
        start = min(t for (t,) in firsts if t is not None)
        metrics = c.execute("SELECT at, source, name, value FROM metrics").fetchall()
        tuning = c.execute("SELECT at, knob, new FROM tuning").fetchall()
        promotions = c.execute(
            "SELECT p.model_id, p.at, p.score, m.train_step FROM promotions p, models m WHERE m.id = p.model_id"
        ).fetchall()
        rated = c.execute(
            "SELECT created_at, train_step, rating, rating_lo, rating_hi FROM models"
            " WHERE promoted_at IS NOT NULL AND rating IS NOT NULL"
        ).fetchall()
    seconds = lambda at: max(0, int(at - start))  # noqa: E731
    points = defaultdict(list)
    steps = {(source, at): value for at, source, name, value in metrics if name == "train_step"}
    for at, source, name, value in metrics:
        tag = f"cpu_share/{source}" if name == "cpu_share" else f"{source}/{name}"
        points[tag].append((at, int(steps[source, at]) if (source, at) in steps else seconds(at), value))
    for at, knob, new in tuning:
        points[f"tuner/{knob}"].append((at, seconds(at), new))
    for model_id, at, score, step in promotions:
        points["promotion/model"].append((at, step, float(model_id)))
        if score is not None:
            points["promotion/score"].append((at, step, score))
    for created, step, rating, lo, hi in rated:
        points["rating/elo"].append((created, step, rating))
        points["rating/elo_lo95"].append((created, step, lo))
        points["rating/elo_hi95"].append((created, step, hi))
    return {
        tag: sorted((at, step, float(np.float32(value))) for at, step, value in found) for tag, found in points.items()
    }


def read_back(folder: Path) -> tuple[dict[str, list[tuple]], dict[str, str]]:
    """(every point in the folder's event files by tag, as `expected` gives them; each tag's description)."""
    accumulator = event_accumulator.EventAccumulator(str(folder), size_guidance={event_accumulator.TENSORS: 0})
    accumulator.Reload()
    points, descriptions = {}, {}
    for tag in accumulator.Tags()["tensors"]:
        events = accumulator.Tensors(tag)
        points[tag] = sorted((e.wall_time, e.step, float(tensor_util.make_ndarray(e.tensor_proto))) for e in events)
        descriptions[tag] = accumulator.SummaryMetadata(tag).summary_description
    return points, descriptions


def test_report_writes_every_row_of_a_real_run_once(run_file, tmp_path):
    add_rows(run_file, time.time(), [Decision("sims", 32, 48, "test"), Decision("batch", 32, 64, "test")])
    folder = tmp_path / "tb"
    result = CliRunner().invoke(main, ["report", "--db", str(run_file), "--tensorboard", str(folder)])
    assert result.exit_code == 0, result.output
    points, descriptions = read_back(folder)
    want = expected(run_file)
    assert points == want
    assert result.output.strip() == f"{folder}: {sum(map(len, want.values()))} points"
    assert {"trainer/policy_loss", "daemon/games_per_s", "cpu_share/selfplay-0", "tuner/sims"} <= set(points)
    assert len(points["rating/elo"]) == 3  # models 13, 42 and 58: rated and promoted
    assert "95%" in descriptions["rating/elo_lo95"] and "trainer's step" in descriptions["trainer/policy_loss"]


def test_a_second_export_replaces_the_runs_files_and_leaves_other_runs_alone(run_file, tmp_path):
    folder = tmp_path / "tb"
    other = folder / "events.out.tfevents.1.host.1.1.hexzd-another"
    folder.mkdir()
    other.write_bytes(b"")
    for _ in range(2):
        result = CliRunner().invoke(main, ["report", "--db", str(run_file), "--tensorboard", str(folder)])
        assert result.exit_code == 0, result.output
    other.unlink()
    assert read_back(folder)[0] == expected(run_file)
    assert len(list(folder.iterdir())) == 2  # the series' file and the ratings' file


def test_rows_added_later_are_appended_and_a_new_exporter_writes_the_folder_anew(run_file, tmp_path):
    """As the daemon's live export uses it: each export() appends what came since; a restart's
    new Exporter (after a crash or a stop) starts over, so no point is lost or doubled."""
    folder = tmp_path / "tb"
    exporter = Exporter(run_file, folder)
    assert exporter.export() > 0
    later = time.time()
    add_rows(run_file, later, [Decision("batch", 32, 64, "test")], {"trainer": {"train_step": 3100, "lr": 1e-3}})
    add_rows(run_file, later + 1, metrics={"daemon": {"games_per_s": 12.5}, "selfplay-0": {"cpu_share": 0.5}})
    assert exporter.export() == 5
    assert exporter.export() == 0
    exporter.close()
    assert read_back(folder)[0] == expected(run_file)
    killed = Exporter(run_file, folder)
    killed.export()  # its file left open, as a daemon killed with -9 leaves it
    restarted = Exporter(run_file, folder)
    restarted.export()
    restarted.close()
    assert read_back(folder)[0] == expected(run_file)
    killed.close()


def test_a_folder_that_cannot_be_written_is_one_line(run_file, tmp_path):
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    result = CliRunner().invoke(main, ["report", "--db", str(run_file), "--tensorboard", str(blocked / "tb")])
    assert result.exit_code == 1
    assert result.output.strip() == f"Error: cannot write {blocked / 'tb'}: Not a directory"


def test_the_key_is_refused_without_the_tensorboard_package(monkeypatch):
    text = '[logging]\ntensorboard = "tb"\n'
    assert parse(text).logging.tensorboard == "tb"
    monkeypatch.setitem(__import__("sys").modules, "tensorboard", None)  # what an uninstalled package reads as
    with pytest.raises(ValueError) as refused:
        parse(text)
    assert str(refused.value) == (
        "config.toml:2: logging.tensorboard: Value error, needs the tensorboard package, which is not installed:"
        " pip install 'hexzd[tensorboard]'"
    )


@pytest.mark.e2e
def test_the_live_export_survives_a_kill_and_a_restart_without_a_lost_or_doubled_point():
    """The key set by live edits, first to a folder that cannot be made (a warning, once, and the run
    goes on); the daemon killed with -9, then started again and stopped."""
    path = Path(tempfile.mkdtemp(prefix="hz", dir="/tmp"))  # ipc socket paths are limited to ~100 characters
    (path / "a-file").write_text("")
    edits = {"[selfplay]": ["workers = 0"], "[daemon]": ["progress_seconds = 0.5"]}
    run = DaemonRun(path, edits=edits)
    warned = "source = 'tensorboard' AND level = 'warning' AND message LIKE '%a-file/tb%Not a directory%'"
    try:
        run.start()
        run.config.write_text(config_text({**edits, "[logging]": ['tensorboard = "a-file/tb"']}))
        run.wait_for(lambda: run.count("events", warned) == 1, 30, "the warning")
        ticks = run.count("metrics", "name = 'games_per_s'")
        run.wait_for(lambda: run.count("metrics", "name = 'games_per_s'") >= ticks + 3, 30, "three more rounds")
        assert run.count("events", warned) == 1
        run.config.write_text(config_text({**edits, "[logging]": ['tensorboard = "tb"']}))
        run.wait_for(lambda: (path / "tb").is_dir() and run.count("metrics") >= 10, 60, "metric samples")
        time.sleep(1.0)  # a round or two of the export
        run.kill9()
        before, want = read_back(path / "tb")[0], expected(run.db)
        assert before["daemon/games_per_s"]  # written live, each point once, each one the state file's
        assert all(len(set(before[tag])) == len(before[tag]) and set(before[tag]) <= set(want[tag]) for tag in before)
        run.duration = "1s"  # a start writes the folder anew at once, the stop writes the last rows
        assert run.start().process.wait(timeout=60) == 0, run.output.read_text()
        assert read_back(path / "tb")[0] == expected(run.db)
    finally:
        run.cleanup()
        shutil.rmtree(path, ignore_errors=True)
