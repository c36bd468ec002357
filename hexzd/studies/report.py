"""`hexzd report`: a run's figures from its state file, or several runs overlaid.

Each state file is read once, read-only, into plain data (the queries are in
hexzd.store.reads); each figure is then drawn from that data alone, one
colour per run in every figure. matplotlib is an optional extra
(`hexzd[report]`), imported only when a figure is drawn, and used without
pyplot: Figure objects on the Agg canvas, so no display is needed and no
global state changes.

`hexzd report --tensorboard DIR` writes a run's curves as TensorBoard event
files instead (`write_tensorboard`): the daemon's live export, run once.
"""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hexzd import store
from hexzd.config import Config, stored
from hexzd.evaluation import scale
from hexzd.store import reads
from hexzd.store.tensorboard_export import Exporter, ExportError, tensorboard

FORMATS = ("png", "svg")
INSTALL = "pip install 'hexzd[report]'"
LOSSES = {"policy_loss": "policy loss (cross-entropy)", "value_loss": "value loss (MSE)"}
THROUGHPUT = {"games_per_s": "games / s", "positions_per_s": "positions / s", "train_step_per_s": "train steps / s"}
KNOBS = {"sims": "simulations per move", "batch": "games per group"}
MINUTES = "minutes since the run's start"
PRECISION_STEP = 30.0  # seconds between the refits that follow each snapshot's interval
PRECISION_MINUTES = 10.0  # how long after its promotion a snapshot's interval is followed
ELO = "Elo (rollouts @100 = 0)"


class ReportError(RuntimeError):
    """A report that cannot be made: matplotlib missing, or no state file that can be read."""


class Unreadable(ReportError):
    """No state file that can be read: each named with its reason, on one line."""


@dataclass
class Run:
    """What the figures show of one state file; times are seconds since the epoch."""

    label: str  # the legend's name for the run
    start: float  # the run's first event; figures count minutes from it
    end: float
    ratings: list[dict]  # rated promoted snapshots
    compute: list[dict]  # every rated snapshot, with its compute
    pareto: list[dict]
    perfect: list[dict]
    metrics: dict[str, list[dict]]  # samples by metric name
    tuning: list[dict]
    precision: list[dict]  # `precision`'s rows
    target_elo: float  # ratings.target_elo

    def minutes(self, at: float) -> float:
        return (at - self.start) / 60


def load(path, label: str | None = None, timeout: float = 10.0) -> Run:
    """A state file's data, read while a daemon may be writing it (WAL).

    A ReportError says why the file cannot be used, without naming it."""
    path = Path(path)
    if not path.is_file():
        raise ReportError("no such state file")
    try:
        with store.consistent_read(path, timeout) as c:  # the figures agree though the daemon writes
            return _run(c, label or path.name)
    except store.StateFileError as e:
        raise ReportError(str(e)) from None


def _run(c, label: str) -> Run:
    span = reads.run_span(c)
    text = reads.config_text(c)
    config = stored(text) if text else Config()
    samples: dict[str, list[dict]] = {}
    for row in reads.metric_history(c, [*LOSSES, *THROUGHPUT]):
        samples.setdefault(row["name"], []).append(row)
    return Run(
        label=label,
        start=span["start"] or 0.0,
        end=span["end"] or 0.0,
        ratings=reads.promoted_ratings(c),
        compute=reads.rated_compute(c),
        pareto=reads.pareto(c),
        perfect=[p for p in reads.perfect_play_history(c) if p["won"] > 0],
        metrics=samples,
        tuning=reads.tuning_history(c),
        precision=precision(
            reads.timed_results(c),
            reads.promotion_times(c),
            config.ratings.references,
            scale.has_perfect(config.game.board_size, config.game.swap, config.ratings.perfect),
        ),
        target_elo=config.ratings.target_elo,
    )


def precision(
    timed, promotions, references, perfect=False, step=PRECISION_STEP, horizon=PRECISION_MINUTES
) -> list[dict]:
    """How each promoted snapshot's 95% interval narrowed: every `step` seconds from its
    promotion until `horizon` minutes later (or the last game), the ratings refitted from
    the games up to then (hexzd.evaluation.scale.rate, as the daemon fits them).

    timed: reads.timed_results; promotions: (model_id, at). Rows {model_id, minutes
    (since its promotion), half (Elo), games}, with the snapshot's player of most games."""
    if not timed or not promotions:
        return []
    end = min(timed[-1][0], promotions[-1][1] + 60 * horizon)
    totals: dict[tuple, list[int]] = {}  # pairing -> [wins, games, pairs with 0, 1, 2 wins]
    first: dict[tuple, int] = {}  # (duel, pair) -> the candidate's result in the pair's first game
    rows, k = [], 0
    t = promotions[0][1]
    while True:
        while k < len(timed) and timed[k][0] <= t:
            _, *pairing, won, engine, duel_id, pair = timed[k]
            total = totals.setdefault((*pairing, engine), [0, 0, 0, 0, 0])
            total[0], total[1], k = total[0] + won, total[1] + 1, k + 1
            if (duel_id, pair) in first:
                total[2 + first.pop((duel_id, pair)) + won] += 1
            else:
                first[duel_id, pair] = won
        results = [(*key[:4], won, games, key[4], *pairs) for key, (won, games, *pairs) in totals.items()]
        best: dict[int, tuple] = {}
        for _, model_id, _, _, lo, hi, games, _ in scale.rate(results, references, perfect) if results else ():
            if model_id is not None and games > best.get(model_id, (0,))[0]:
                best[model_id] = (games, (hi - lo) / 2)
        for model_id, at in promotions:
            if at <= t <= at + 60 * horizon and model_id in best:
                games, half = best[model_id]
                rows.append({"model_id": model_id, "minutes": (t - at) / 60, "half": half, "games": games})
        if t >= end:
            return rows
        t = min(t + step, end)


def load_all(dbs) -> tuple[list[Run], list[str]]:
    """(the runs that could be read, a line for each that could not).

    Legends name a run by its file name, or by the path given where two runs
    share a name. One unreadable file among others is skipped; alone, or when
    all are, it is an error."""
    runs, unread = [], []
    for db, label in labelled(dbs):
        try:
            runs.append(load(db, label))
        except ReportError as e:
            unread.append(f"{db}: {e}")
    if not runs:
        raise Unreadable("; ".join(unread))
    return runs, [f"skipped {line}" for line in unread]


def labelled(dbs) -> list[tuple[str, str]]:
    """(state file, its run's name): the file's name, or the path given where two share a name."""
    dbs = [str(db) for db in dbs]
    names = [Path(db).name for db in dbs]
    return [(db, name if names.count(name) == 1 else db) for db, name in zip(dbs, names)]


# -- what each figure draws of one run -------------------------------------------------


def _errorbars(ax, xs, points, colour, label, **style) -> None:
    """Ratings at xs with their 95% intervals."""
    ys = [p["rating"] for p in points]
    below = [p["rating"] - p["rating_lo"] for p in points]
    above = [p["rating_hi"] - p["rating"] for p in points]
    ax.errorbar(xs, ys, yerr=[below, above], fmt="o-", ms=4, capsize=3, color=colour, label=label, **style)


def _ratings_against(x: Callable[[Run, dict], float]):
    def draw(axes, run: Run, colour: str) -> None:
        _errorbars(axes[0], [x(run, p) for p in run.ratings], run.ratings, colour, run.label)

    return draw


def _pareto(axes, run: Run, colour: str) -> None:
    # every rated snapshot faintly; the front (rated above every cheaper one) as a staircase
    flops = [p["total_flops"] / 1e15 for p in run.compute]
    axes[0].scatter(flops, [p["rating"] for p in run.compute], s=10, alpha=0.3, color=colour)
    front = run.pareto
    _errorbars(axes[0], [p["total_flops"] / 1e15 for p in front], front, colour, run.label, drawstyle="steps-post")


def _perfect(axes, run: Run, colour: str) -> None:
    """Per simulation count, the shares of won positions kept (a move that keeps the
    win) and converted (won out against perfect defence)."""
    markers = "os^Dv<>"
    for i, sims in enumerate(sorted({p["sims"] for p in run.perfect})):
        points = [p for p in run.perfect if p["sims"] == sims]
        xs = [run.minutes(p["created_at"]) for p in points]
        style = {"color": colour, "marker": markers[i % len(markers)], "ms": 4, "label": f"{run.label} @{sims} sims"}
        axes[0].plot(xs, [p["kept"] / p["won"] for p in points], **style)
        axes[1].plot(xs, [p["converted"] / p["won"] for p in points], **style)


def _metrics(names):
    def draw(axes, run: Run, colour: str) -> None:
        for ax, name in zip(axes, names):
            samples = run.metrics.get(name)
            if samples:
                xs = [run.minutes(s["at"]) for s in samples]
                ax.plot(xs, [s["value"] for s in samples], color=colour, lw=1, label=run.label)

    return draw


def _precision(axes, run: Run, colour: str) -> None:
    """A line per promoted snapshot: its 95% half-width against minutes since its promotion;
    the target (ratings.target_elo) dashed."""
    for model_id in sorted({p["model_id"] for p in run.precision}):
        points = [p for p in run.precision if p["model_id"] == model_id]
        label = run.label if model_id == run.precision[0]["model_id"] else None
        axes[0].plot([p["minutes"] for p in points], [p["half"] for p in points], color=colour, lw=1, label=label)
    axes[0].axhline(run.target_elo, color=colour, ls="--", lw=1)
    axes[0].set_yscale("log")


def _tuning(axes, run: Run, colour: str) -> None:
    """Each knob as a staircase: the first decision's old value from the start, each new
    value from its decision on, the last one to the run's end."""
    for ax, knob in zip(axes, KNOBS):
        rows = [t for t in run.tuning if t["knob"] == knob]
        if rows:
            xs = [0.0, *(run.minutes(t["at"]) for t in rows), run.minutes(max(run.end, rows[-1]["at"]))]
            ys = [rows[0]["old"], *(t["new"] for t in rows), rows[-1]["new"]]
            ax.step(xs, ys, where="post", color=colour, label=run.label)


# -- the figures ------------------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    name: str  # the file's name, without the format
    title: str
    missing: str  # what a run without the figure's data lacks: "no ... in {run} yet"
    has: Callable[[Run], bool]
    draw: Callable  # (axes, run, colour): draws one run
    xlabel: str
    ylabels: tuple[str, ...]  # one panel each
    log_x: bool = False  # compute spans orders of magnitude (Jones 2021 plots it so)
    empty: str = "no data"  # said in a panel no run has data for


COMPUTE = "self-play + training compute (PFLOP)"


def _rating_spec(name: str, against: str, x: Callable[[Run, dict], float], xlabel: str, log_x=False) -> Spec:
    return Spec(
        name,
        f"Rating of promoted snapshots against {against}",
        "no rated promoted snapshots in {run} yet",
        lambda r: bool(r.ratings),
        _ratings_against(x),
        xlabel,
        (ELO,),
        log_x,
    )


def _metrics_spec(name: str, title: str, what: str, metrics: dict[str, str]) -> Spec:
    """A panel per metric: its samples against time."""
    return Spec(
        name,
        title,
        f"no {what} in {{run}} yet",
        lambda r: any(r.metrics.get(metric) for metric in metrics),
        _metrics(metrics),
        MINUTES,
        tuple(metrics.values()),
    )


FIGURES = (
    _rating_spec("rating_vs_time", "wall time", lambda run, p: run.minutes(p["created_at"]), MINUTES),
    _rating_spec("rating_vs_compute", "compute", lambda run, p: p["total_flops"] / 1e15, COMPUTE, log_x=True),
    _rating_spec("rating_vs_steps", "training steps", lambda run, p: p["train_step"], "training steps"),
    Spec(
        "pareto",
        "Pareto front of rating against compute (dots: every rated snapshot)",
        "no rated snapshots in {run} yet",
        lambda r: bool(r.compute),
        _pareto,
        COMPUTE,
        (ELO,),
        log_x=True,
    ),
    Spec(
        "perfect_play",
        "Promoted models against perfect play, in won positions",
        "no perfect-play results in {run} yet (promoted models meet perfect play on boards up to 5x5)",
        lambda r: bool(r.perfect),
        _perfect,
        "snapshot made, " + MINUTES,
        ("move keeps the win (share)", "converted (share)"),
    ),
    Spec(
        "precision",
        "Promoted snapshots' rating intervals (dashed: ratings.target_elo)",
        "no rated promoted snapshots in {run} yet",
        lambda r: bool(r.precision),
        _precision,
        "minutes since the snapshot's promotion",
        ("95% half-width (Elo)",),
    ),
    _metrics_spec("losses", "Training losses", "training losses", LOSSES),
    _metrics_spec("throughput", "Throughput", "throughput samples", THROUGHPUT),
    Spec(
        "tuning",
        "The tuner's settings",
        "no tuner decisions in {run} yet",
        lambda r: bool(r.tuning),
        _tuning,
        MINUTES,
        tuple(KNOBS.values()),
        empty="not moved by the tuner",
    ),
)


def matplotlib_figure():
    """matplotlib's Figure class on the Agg canvas, or a ReportError saying how to install it."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ReportError(f"hexzd report draws with matplotlib, which is not installed: {INSTALL}") from None
    return Figure, FigureCanvasAgg


def draw(spec: Spec, runs: list[Run]):
    """The figure of `spec` for the runs that have its data, or None when none has.

    A run's colour is its place among all the runs, so that it keeps it in every figure."""
    if not any(spec.has(run) for run in runs):
        return None
    figure_class, canvas = matplotlib_figure()
    fig = figure_class(figsize=(7, 1.2 + 2.6 * len(spec.ylabels)), layout="constrained")
    canvas(fig)
    axes = fig.subplots(len(spec.ylabels), 1, sharex=True, squeeze=False)[:, 0]
    for i, run in enumerate(runs):
        if spec.has(run):
            spec.draw(axes, run, f"C{i % 10}")
    for ax, ylabel in zip(axes, spec.ylabels):
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if not ax.has_data():
            ax.text(0.5, 0.5, spec.empty, transform=ax.transAxes, ha="center", va="center", color="grey")
    if spec.log_x and axes[0].dataLim.x0 > 0:
        axes[0].set_xscale("log")
    axes[-1].set_xlabel(spec.xlabel)
    _legend(axes)
    fig.suptitle(spec.title)
    return fig


def _legend(axes) -> None:
    """One legend on the top panel for the labels of all panels (a run may lack the top one's data)."""
    labelled = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            labelled.setdefault(label, handle)
    axes[0].legend(list(labelled.values()), list(labelled.keys()), fontsize="small")


def write_report(dbs, out, fmt: str = "png") -> tuple[list[Path], list[str]]:
    """Writes every figure some run has the data for into `out`.

    Returns (the files written, a line for each figure a run lacks the data of
    and for each state file skipped)."""
    if fmt not in FORMATS:
        raise ReportError(f"no format {fmt}: one of {', '.join(FORMATS)}")
    matplotlib_figure()  # before any work: without matplotlib nothing can be drawn
    runs, missing = load_all(dbs)
    out = Path(out)
    written = []
    for spec in FIGURES:
        name = f"{spec.name}.{fmt}"
        missing += [f"{name}: {spec.missing.format(run=run.label)}" for run in runs if not spec.has(run)]
        fig = draw(spec, runs)
        if fig is not None:
            out.mkdir(parents=True, exist_ok=True)  # not before: a run with nothing to show leaves no folder
            fig.savefig(out / name, format=fmt, dpi=150)
            written.append(out / name)
    return written, missing


# -- TensorBoard event files ---------------------------------------------------------------


def write_tensorboard(dbs, folder) -> tuple[list[str], list[str]]:
    """Writes each run's curves as TensorBoard event files (hexzd.store.tensorboard_export, one
    export of the whole file): into `folder` for one state file, into a folder of its own under
    `folder` for each of several, named as the figures' legends name the runs.

    Returns (a line per run written: its folder and points, a line for each state file skipped).
    Raises Unreadable when no state file can be read, ReportError without the tensorboard package."""
    try:
        tensorboard()  # before any work: without tensorboard nothing can be written
    except ExportError as e:
        raise ReportError(str(e)) from None
    runs = labelled(dbs)
    written, unread = [], []
    for db, label in runs:
        where = Path(folder) if len(runs) == 1 else Path(folder) / _within(label)
        try:
            written.append(f"{where}: {_export(db, where)} points")
        except store.StateFileError as e:
            unread.append(f"{db}: {e}")
    if not written:
        raise Unreadable("; ".join(unread))
    return written, [f"skipped {line}" for line in unread]


def _within(label: str) -> Path:
    """A run's label as a folder under the export's: a path given loses its root and any `..`."""
    path = Path(label)
    return Path(*(part for part in path.parts if part not in (path.anchor, "..", ".")))


def _export(db, folder: Path) -> int:
    """One state file's curves, all of them, into `folder`: the points written. Raises
    StateFileError for a state file that cannot be read, ReportError for a folder that cannot be written."""
    if not Path(db).is_file():
        raise store.StateFileError("no such state file")
    exporter = Exporter(db, folder)
    try:
        return exporter.export()
    except OSError as e:
        raise ReportError(f"cannot write {folder}: {e.strerror or e}") from None
    finally:
        exporter.close()
