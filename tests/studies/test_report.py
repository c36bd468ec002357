"""`hexzd report`: figures drawn from a real run's state file, also while its daemon writes it.

One short real run (QUICK settings, a faster tuner, fewer perfect-play
positions) serves the module: about a minute on two cores. Every figure's
plotted data is checked against the state file, queried here with plain sqlite3.
"""

import math
import shutil
import sqlite3
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from click.testing import CliRunner
from daemon_run import QUICK, DaemonRun

from hexzd import store
from hexzd.cli import main
from hexzd.studies import report

pytestmark = pytest.mark.e2e  # daemons and processes: `pytest -m e2e`

matplotlib_image = pytest.importorskip("matplotlib.image")

EDITS = {**QUICK, "[tune]": ["interval = 10.0"], "[ratings]": ["perfect_positions = 60"]}
FIGURES = [spec.name for spec in report.FIGURES]


@pytest.fixture(scope="module")
def live():
    """A daemon running on a 5x5 board, once its file has every figure's data."""
    path = Path(tempfile.mkdtemp(prefix="hz", dir="/tmp"))  # ipc socket paths are limited to ~100 characters
    # About a minute alone on two cores; the margins are for a machine busy with something else.
    run = DaemonRun(path, edits=EDITS, duration="6m").start()
    try:
        run.wait_for(lambda: _has_every_figure(run), 300, "a rated promoted snapshot, perfect play and tuning")
        yield run
    finally:
        run.cleanup()
        shutil.rmtree(path, ignore_errors=True)


def _has_every_figure(run: DaemonRun) -> bool:
    return (
        run.count("models", "rating IS NOT NULL AND promoted_at IS NOT NULL") >= 1
        and run.count("perfect_play") >= 1
        and run.count("tuning") >= 1
        and run.count("metrics", "name = 'policy_loss'") >= 1
    )


@pytest.fixture(scope="module")
def stopped(live):
    """The same run's file once its daemon has stopped, so that counts hold still."""
    assert live.stop() == 0
    return live.db


def _query(db, sql: str) -> list:
    with sqlite3.connect(Path(db).resolve().as_uri() + "?mode=ro", uri=True) as c:
        return c.execute(sql).fetchall()


def _figure(name: str, dbs):
    runs, _ = report.load_all(dbs)
    return report.draw(next(spec for spec in report.FIGURES if spec.name == name), runs)


def _assert_images(out: Path, fmt: str) -> None:
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{name}.{fmt}" for name in FIGURES)
    for path in out.iterdir():
        if fmt == "png":
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            assert matplotlib_image.imread(path).shape[0] > 100
        else:
            assert ET.parse(path).getroot().tag.endswith("svg")


def test_report_of_a_running_daemon(live):
    result = live.hexzd("report", "--out", str(live.path / "figures"), timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [str(live.path / "figures" / f"{name}.png") for name in FIGURES]
    _assert_images(live.path / "figures", "png")
    assert live.process.poll() is None  # the daemon went on writing


def test_the_rating_figures_plot_every_rated_promoted_snapshot(stopped):
    expected = _query(
        stopped,
        "SELECT (m.created_at - (SELECT MIN(at) FROM config_history)) / 60, (selfplay_flops + train_flops) / 1e15,"
        " train_step, rating, rating_lo, rating_hi FROM models m"
        " WHERE rating IS NOT NULL AND promoted_at IS NOT NULL ORDER BY id",
    )
    for name, column in (("rating_vs_time", 0), ("rating_vs_compute", 1), ("rating_vs_steps", 2)):
        (bars,) = _figure(name, [stopped]).axes[0].containers
        line, _, (errors,) = bars
        assert list(line.get_xdata()) == pytest.approx([row[column] for row in expected])
        assert list(line.get_ydata()) == pytest.approx([row[3] for row in expected])
        # each error bar spans the 95% interval
        assert [tuple(s[:, 1]) for s in errors.get_segments()] == pytest.approx([row[4:] for row in expected])
    # the rating scale's anchor, rollouts @100, is 0 Elo
    assert _query(stopped, "SELECT rating FROM ratings WHERE anchor") == [(0.0,)]


def test_the_pareto_figure_draws_the_front_over_every_rated_snapshot(stopped):
    ax = _figure("pareto", [stopped]).axes[0]
    (bars,) = ax.containers
    front = _query(stopped, "SELECT total_flops / 1e15, rating FROM pareto_front")
    assert list(zip(bars[0].get_xdata(), bars[0].get_ydata())) == pytest.approx(front)
    (every,) = ax.collections[:1]
    assert len(every.get_offsets()) == _query(stopped, "SELECT COUNT(*) FROM rating_vs_compute")[0][0]
    assert ax.get_xscale() == "log"


def test_perfect_play_losses_throughput_and_tuning_come_from_the_file(stopped):
    kept, converted = _figure("perfect_play", [stopped]).axes
    results: dict[int, list] = {}
    for sims, k, c, won in _query(
        stopped, "SELECT sims, kept, converted, won FROM perfect_play ORDER BY sims, model_id"
    ):
        results.setdefault(sims, []).append((k / won, c / won))
    assert [line.get_label() for line in kept.lines] == [f"run.sqlite @{sims} sims" for sims in results]
    assert [list(line.get_ydata()) for line in kept.lines] == [[k for k, _ in r] for r in results.values()]
    assert [list(line.get_ydata()) for line in converted.lines] == [[c for _, c in r] for r in results.values()]

    for name, metrics in (("losses", report.LOSSES), ("throughput", report.THROUGHPUT)):
        axes = _figure(name, [stopped]).axes
        for ax, metric in zip(axes, metrics):
            values = [v for (v,) in _query(stopped, f"SELECT value FROM metrics WHERE name = '{metric}' ORDER BY at")]
            assert list(ax.lines[0].get_ydata()) == pytest.approx(values)

    sims, batch = _figure("tuning", [stopped]).axes
    for ax, knob in ((sims, "sims"), (batch, "batch")):
        decisions = _query(stopped, f"SELECT old, new FROM tuning WHERE knob = '{knob}' ORDER BY at, rowid")
        if decisions:  # the first old value from the start, each new one after it, the last to the end
            expected = [decisions[0][0], *(new for _, new in decisions), decisions[-1][1]]
            assert list(ax.lines[0].get_ydata()) == expected
        else:
            assert not ax.lines and ax.texts[0].get_text() == "not moved by the tuner"


def test_write_report_in_svg(stopped, tmp_path):
    written, missing = report.write_report([stopped], tmp_path, "svg")
    assert missing == [] and written == [tmp_path / f"{name}.svg" for name in FIGURES]
    _assert_images(tmp_path, "svg")


def _copy(db, to: Path) -> Path:
    """A copy of a state file, through SQLite so that the WAL's commits come along."""
    to.parent.mkdir(parents=True, exist_ok=True)
    with store.read_only(db) as source, sqlite3.connect(to) as target:
        source.backup(target)
    target.close()
    return to


def test_several_runs_overlay_one_colour_each(stopped, tmp_path):
    a, b = _copy(stopped, tmp_path / "a.sqlite"), _copy(stopped, tmp_path / "b.sqlite")
    for name in FIGURES:
        ax = _figure(name, [a, b]).axes[0]
        labels = [text.get_text() for text in ax.get_legend().get_texts()]
        assert [label.split(" @")[0] for label in labels] == ["a.sqlite"] * (len(labels) // 2) + ["b.sqlite"] * (
            len(labels) // 2
        ), name
    (first, second) = _figure("rating_vs_time", [a, b]).axes[0].containers
    assert first[0].get_color() != second[0].get_color()
    # runs whose files share a name are told apart by their paths
    same = [_copy(stopped, tmp_path / "x" / "run.sqlite"), _copy(stopped, tmp_path / "y" / "run.sqlite")]
    legend = _figure("losses", same).axes[0].get_legend()
    assert [text.get_text() for text in legend.get_texts()] == [str(p) for p in same]


def test_a_fresh_state_file_says_what_each_figure_lacks(stopped, tmp_path, monkeypatch):
    store.prepare(tmp_path / "fresh.sqlite")
    monkeypatch.chdir(tmp_path)  # the default --out, report/, is relative
    result = CliRunner().invoke(main, ["report", "--db", "fresh.sqlite"])
    assert result.exit_code == 0, result.output
    assert "rating_vs_time.png: no rated promoted snapshots in fresh.sqlite yet" in result.output.splitlines()
    assert len(result.output.splitlines()) == len(FIGURES)
    assert not Path("report").exists()
    # beside a run that has them, the figures are drawn, and the fresh run's lacks are said
    written, missing = report.write_report([stopped, tmp_path / "fresh.sqlite"], tmp_path / "both", "png")
    assert len(written) == len(FIGURES) and len(missing) == len(FIGURES)
    assert all(line.endswith(("in fresh.sqlite yet", "boards up to 5x5)")) for line in missing)


def test_state_files_that_cannot_be_read(stopped, tmp_path):
    (tmp_path / "notes.sqlite").write_text("not a database")
    runner = CliRunner()
    result = runner.invoke(main, ["report", "--db", str(tmp_path / "none.sqlite")])
    assert result.exit_code == 1 and f"{tmp_path / 'none.sqlite'}: no such state file" in result.output
    result = runner.invoke(main, ["report", "--db", str(tmp_path / "notes.sqlite")])
    assert result.exit_code == 1 and "not a hexzd state file (file is not a database)" in result.output
    # among others, an unreadable file is named with its reason and skipped
    args = ["report", "--db", str(tmp_path / "notes.sqlite"), "--db", str(stopped), "--out", str(tmp_path / "f")]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    assert f"skipped {tmp_path / 'notes.sqlite'}: not a hexzd state file (file is not a database)" in result.output
    assert len(list((tmp_path / "f").iterdir())) == len(FIGURES)


def test_a_state_file_newer_than_this_hexzd_is_refused(tmp_path):
    db = tmp_path / "newer.sqlite"
    store.prepare(db)
    connection = sqlite3.connect(db)
    connection.execute(f"PRAGMA user_version = {store.VERSION + 1}")
    connection.close()
    newer = f"schema version {store.VERSION + 1}, newer than this hexzd's {store.VERSION}: upgrade hexzd"
    with pytest.raises(report.ReportError, match=newer):
        report.load(db)
    result = CliRunner().invoke(main, ["report", "--db", str(db), "--out", str(tmp_path / "f")])
    assert result.exit_code == 1 and f"{db}: {newer}" in result.output


def test_without_matplotlib_the_command_says_how_to_install_it(monkeypatch, tmp_path):
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)  # None in sys.modules: the import fails
    result = CliRunner().invoke(main, ["report", "--db", str(tmp_path / "run.sqlite")])
    assert result.exit_code == 1 and "pip install 'hexzd[report]'" in result.output


def test_precision_follows_each_snapshots_interval_after_its_promotion():
    """One snapshot, promoted at t = 1000, plays even against the anchor (rollouts @100)
    one game a second. Its half-width at the end is the closed form of a one-parameter
    logistic fit, 1.96 * (400 / ln 10) / sqrt(n / 4), within 3% (the prior adds 2 games)."""
    from hexzd.studies.report import precision

    # Each game a pair of its own, never completed: independent trials at the model's variance.
    timed = [(1000.0 + i, 1, 64, None, 100, i % 2, None, 1, i) for i in range(1, 241)]
    rows = precision(timed, [(1, 1000.0)], [100], step=30.0, horizon=10.0)
    assert [r["minutes"] for r in rows] == [k / 2 for k in range(1, 9)]  # none before the first game
    assert [r["games"] for r in rows] == [30 * k for k in range(1, 9)]
    halves = [r["half"] for r in rows]
    assert halves == sorted(halves, reverse=True)
    expected = 1.96 * (400 / math.log(10)) / math.sqrt(240 / 4)
    assert halves[-1] == pytest.approx(expected, rel=0.03)
    # The same games as 120 pairs that all split 1-1: pairs are the trials, and theirs never
    # varied, so the interval is far narrower (hexzd.evaluation.ratings, "Intervals").
    paired = [(*game[:-1], (game[0] - 1001) // 2) for game in timed]
    assert precision(paired, [(1, 1000.0)], [100], step=30.0, horizon=10.0)[-1]["half"] < expected / 3
