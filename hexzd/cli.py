"""The `hexzd` command line."""

import importlib
import json
import shlex
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from hexzd import __version__


def first_sentence(text: str | None) -> str:
    """A docstring's first sentence, whole: its first paragraph up to the first word that ends with a full stop."""
    words = []
    for word in (text or "").split("\f")[0].split("\n\n")[0].split():
        words.append(word)
        if word.endswith("."):
            break
    return " ".join(words)


class Command(click.Command):
    """A command whose line in `hexzd --help` is its docstring's whole first sentence: click's own
    cuts it at the width left beside the longest command name, with "..."."""

    def get_short_help_str(self, limit: int = 45) -> str:
        return self.short_help or first_sentence(self.help)


class Group(click.Group):
    command_class = Command


@click.group(cls=Group)
@click.version_option(__version__, prog_name="hexzd")
def main():
    """hexzd: a single-machine AlphaZero trainer for the game of Hex."""
    if sys.platform == "win32":  # fcntl, resource, process groups: ImportErrors and tracebacks further on
        raise click.ClickException(
            "hexzd runs on Linux and macOS, not on Windows itself: run it in WSL2 (docs/guides/platforms.md)"
        )


# command name: module in hexzd.benchmarks
BENCHMARKS = {
    "engine": "rules",
    "mcts": "mcts",
    "net": "net",
    "selfplay": "selfplay",
    "strength": "strength",
    "chaos": "chaos",
    "cluster": "cluster",
}


@main.command()
@click.argument("name", type=click.Choice(BENCHMARKS))
@click.option("--size", default=9, show_default=True, type=click.IntRange(2, 19), help="board side n")
@click.option("--seconds", default=3.0, show_default=True, type=click.FloatRange(min=0.1), help="time per measurement")
@click.option(
    "--minutes",
    default=5.0,
    show_default=True,
    type=click.FloatRange(min=0.1),
    help="strength: training time a seed; chaos: how long the chaos lasts",
)
@click.option("--seeds", default=1, show_default=True, type=click.IntRange(1, 100), help="strength: runs from scratch")
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    help="strength, chaos: where the runs go  [default: a temporary directory]",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False),
    help="strength: the runs' config  [default: the default config]; its board size and seed are overridden",
)
@click.option(
    "--curve",
    default=1,
    show_default=True,
    type=click.IntRange(1, 100),
    help="strength, boards above 5x5: snapshots judged, spread over the run (each match takes minutes)",
)
@click.option("--rejudge", is_flag=True, help="strength: judge the runs already in --out; train none")
@click.option(
    "--judge-sims",
    type=click.IntRange(1, 10_000_000),
    help="strength, boards above 5x5: the MCTS judge's simulations a move (more: finer, slower)  [default: 10000]",
)
@click.option(
    "--judge-games",
    type=click.Path(exists=True, dir_okay=False),
    help="strength, 6x6 and 7x7: also convert these recorded games' late positions against perfect defence",
)
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
def bench(name, size, seconds, minutes, seeds, out, config_path, curve, rejudge, judge_sims, judge_games, as_json):
    """Time hexzd against a baseline measured in the same run, or judge and stress it.

    `strength`: train from scratch and judge the result from outside (perfect play up to 5x5,
    else OpenSpiel's MCTS);
    `chaos`: kill, misconfigure, pause, starve and flood a daemon, then check that nothing was lost;
    `cluster`: self-play through Ray actors against local processes, and the daemon's ingest."""
    module = importlib.import_module(f"hexzd.benchmarks.{BENCHMARKS[name]}")
    if name == "strength":
        work = {"minutes": minutes, "seeds": seeds, "out": out, "curve": curve, "rejudge": rejudge}
        if judge_sims:
            work["judge_sims"] = judge_sims
        if judge_games:
            work["judge_games"] = judge_games
        work["echo"] = lambda line: click.echo(line, err=as_json)
        if config_path:
            work["config"] = _config_text(config_path)
    elif name == "chaos":
        work = {"minutes": minutes, "out": out, "echo": lambda line: click.echo(line, err=as_json)}
    else:
        work = {"seconds": seconds}
    try:
        result = module.run(size=size, **work)
    except ModuleNotFoundError as e:
        extra = "cluster" if (e.name or "").split(".")[0] == "ray" else "bench"
        raise click.ClickException(f"`bench {name}` needs {e.name}: pip install 'hexzd[{extra}]'") from None
    except RuntimeError as e:  # a step of `bench strength` failed: its command and stderr
        raise click.ClickException(str(e)) from None
    if as_json:
        click.echo(json.dumps(result))
    else:
        module.report(result)
    if result.get("ok") is False:  # a check of `bench chaos` failed
        raise SystemExit(1)


def _config_text(path: str) -> str:
    """A config file's text once it validates, or a usage error naming the key and line."""
    from hexzd.config import parse

    text = Path(path).read_text()
    try:
        parse(text, path)
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    return text


DB_OPTION = click.option(
    "--db", default="run.sqlite", show_default=True, type=click.Path(dir_okay=False), help="the run's state file"
)


class Refused(click.ClickException):
    """A file that a command cannot use, in one line: `hexzd: FILE: reason` (exit code 1)."""

    def show(self, file=None) -> None:
        click.echo(f"hexzd: {self.format_message()}", err=True)


@contextmanager
def _state_file(db) -> Iterator[None]:
    """In the block, a state file that cannot be used (store.StateFileError) ends the command in one line."""
    from hexzd.store import StateFileError

    try:
        yield
    except StateFileError as e:
        raise Refused(f"{db}: {e}") from None


def _check(db) -> str | None:
    """Ends the command in one line if `db` is there but is not a state file this hexzd can read;
    else why its daemon last stopped (None if it never has, or there is no file)."""
    from hexzd import store

    if not Path(db).exists():
        return None
    with _state_file(db), store.read_only(db) as connection:
        return store.stop_reason(connection)


def _sockets_fit(db) -> None:
    """Ends the command in one line if the run directory's sockets could not be bound: too long a path."""
    from hexzd.daemon.rundir import RunDir, SocketPathTooLong

    try:
        RunDir.of(db).check_sockets()
    except SocketPathTooLong as e:
        raise Refused(f"{db}: {e}") from None


def _duration(ctx, param, value):
    from hexzd.daemon.core import parse_duration

    try:
        return None if value is None else parse_duration(value)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


@main.command()
@click.option(
    "--config",
    "config_path",
    default="config.toml",
    show_default=True,
    type=click.Path(dir_okay=False),
    help="the run's config; created with the defaults if missing",
)
@DB_OPTION
@click.option("--headless", is_flag=True, help="no dashboard: concise progress lines, for servers and CI")
@click.option(
    "--for", "duration", callback=_duration, metavar="DURATION", help="stop after this long: 90s, 5m, 2h, 1h30m"
)
def start(config_path, db, headless, duration):
    """Start the daemon: self-play, training and duels, until stopped.

    On a terminal, without --headless, the daemon runs in the background (log in
    run.sqlite.d/daemon.log) and the dashboard in front: q leaves the daemon
    running, Ctrl-C stops it."""
    import asyncio
    import logging
    import sys

    from hexzd import store

    with _state_file(db):
        store.writable(db)  # read-only, or not a state file this hexzd can run on: said before anything starts
    _sockets_fit(db)
    if not headless:
        if sys.stdout.isatty() and sys.stdin.isatty():
            from hexzd.tui.launch import start_attached

            raise SystemExit(start_attached(config_path, db, duration))
        click.echo("no terminal: running headless", err=True)

    from hexzd.daemon.core import Daemon
    from hexzd.store import StateFileError

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    daemon = Daemon(config_path, db, headless=True, duration=duration)
    try:
        with _state_file(db):
            code = asyncio.run(daemon.run())
    except (RuntimeError, ValueError, StateFileError) as e:
        raise click.ClickException(str(e)) from None
    raise SystemExit(code)


@main.command()
@DB_OPTION
def attach(db):
    """Show the dashboard of the running daemon (q quits it; the daemon keeps running)."""
    from hexzd.tui.launch import attach as run_dashboard

    if not Path(db).exists():
        raise Refused(f"{db}: no such file: no run there to show; `hexzd start --db {db}` starts one")
    _check(db)
    _sockets_fit(db)
    run_dashboard(db)


PORT_OPTION = click.option(
    "--port",
    type=click.IntRange(1, 65_535),
    help="ask over the daemon's TCP control port ([daemon] tcp_port), with the keys of `hexzd keys`",
)


def _request(db, command: str, port: int | None = None) -> dict:
    """Sends a control request to the daemon of `db` (or on `port`); its status, or a clear error."""
    from hexzd.daemon.control import DaemonError, ask
    from hexzd.daemon.keys import KeysMissing

    if not port:
        _sockets_fit(db)
    try:
        status = ask(db, command, timeout=5.0, port=port)
    except (DaemonError, KeysMissing) as e:
        raise click.ClickException(str(e)) from None
    if status is None:
        stopped = _check(db)  # a file that no daemon could run on is named as such
        where = f"on port {port}" if port else f"for {db}"
        last = f" (it last stopped: {stopped})" if stopped and not port else ""
        raise click.ClickException(f"no hexzd daemon answers {where}{last}; start one with `hexzd start`")
    return status


def _print_status(status: dict) -> None:
    c = status["counters"]
    click.echo(f"daemon {status['pid']} {status['state']}, up {status['uptime']:.0f} s, on {status['db']}")
    click.echo(
        f"  games {c['games']:,.0f}  positions {c['positions']:,.0f}  train step {c['train_step']:,.0f}"
        f"  best {'model ' + str(status['best']) if status['best'] else 'random rollouts'}"
    )
    if status["duel"]:
        click.echo(f"  {status['duel']}")
    if status["config_error"]:
        click.echo("  config refused: " + status["config_error"].replace("\n", "\n    "))  # every problem, one a line
    if status.get("stop_reason"):
        click.echo(f"  stopping: {status['stop_reason']}")
    for name, w in status["workers"].items():
        state = f"pid {w['pid']}" if w["alive"] else "down"
        click.echo(f"  {name:<12} {state:<12} restarts {w['restarts']}")
    if status.get("cluster"):  # [cluster] address: the Ray nodes beside this machine
        click.echo(f"  Ray cluster at {status['cluster']['address']}:")
        for n in status["cluster"]["nodes"]:
            click.echo(
                f"    node {n['node'][:8]} {n['address']:<15} {n['cpus']:g} CPUs {n['gpus']:g} GPUs"
                f"  actors {n['actors']}  batch {n['batch']}  {n['games_per_s']:.1f} games/s"
                f"  {n['evals_per_s']:,.0f} evals/s  games {n['games']:,}"
            )


@main.command()
@DB_OPTION
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
@PORT_OPTION
def status(db, as_json, port):
    """Show what the running daemon is doing."""
    result = _request(db, "status", port)
    click.echo(json.dumps(result)) if as_json else _print_status(result)


def _simple(command: str, done: str, doc: str = ""):
    @DB_OPTION
    @PORT_OPTION
    def action(db, port):
        _request(db, command, port)
        click.echo(done)

    action.__doc__ = doc or f"{command.capitalize()} the running daemon."
    return main.command(command)(action)


stop = _simple("stop", "stopping: the daemon finishes in-flight work and exits")
pause = _simple("pause", "paused: workers idle until `hexzd resume`")
resume = _simple("resume", "resumed")
reload = _simple(
    "reload",
    "config.toml read: `hexzd status` says if the edit was refused",
    "Make the running daemon read config.toml now (it also looks every second).",
)


@main.command()
@click.option("--force", is_flag=True, help="make new pairs even where some exist (clients need the new ones)")
def keys(force):
    """Make the CURVE keys that [daemon] tcp_port needs: ~/.config/hexzd/keys (or $HEXZD_KEYS), 0600."""
    from hexzd.daemon.keys import KeysMissing, make

    try:
        where = make(force=force)
    except KeysMissing as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"the daemon's and the client's key pairs are in {where} (readable by you alone)")


MODEL_OPTION = click.option(
    "--model", default="best", show_default=True, help="`best` (the latest promoted model) or a model id"
)
ROLLOUTS_OPTION = click.option(
    "--random-rollouts", is_flag=True, help="plain random-rollout MCTS: no state file, no network"
)


def _engine(**options):
    from hexzd.protocols.htp import EngineError, open_engine

    try:
        with _state_file(options.get("db")):
            return open_engine(**options)
    except EngineError as e:
        raise click.ClickException(str(e)) from None


@main.command()
@DB_OPTION
@MODEL_OPTION
@click.option("--sims", type=click.IntRange(1, 1_000_000), help="simulations per genmove  [default: 800]")
@click.option("--seconds", type=click.FloatRange(min=0.01), help="search for this long per genmove instead")
@ROLLOUTS_OPTION
@click.option(
    "--resign/--no-resign",
    default=True,
    show_default=True,
    help="answer `resign` when the search finds every move lost",
)
def htp(db, model, sims, seconds, random_rollouts, resign):
    """An HTP (GTP for Hex) engine on stdin and stdout, for HexGui and matches."""
    _engine(db=db, model=model, sims=sims, seconds=seconds, random_rollouts=random_rollouts, resign=resign).serve()


@main.command()
@DB_OPTION
@MODEL_OPTION
@click.option("--sims", type=click.IntRange(1, 1_000_000), help="simulations per move  [default: 800]")
@click.option("--size", type=click.IntRange(2, 19), help="board side n  [default: the model's]")
@click.option(
    "--colour",
    "--color",
    type=click.Choice(["black", "white"]),
    default="black",
    show_default=True,
    help="your colour; Black moves first and joins top to bottom",
)
@ROLLOUTS_OPTION
def play(db, model, sims, size, colour, random_rollouts):
    """Play against the best model in the terminal: arrow keys and Enter, or type cells."""
    from hexzd.tui.play import play_game

    engine = _engine(db=db, model=model, sims=sims, random_rollouts=random_rollouts, size=size)
    play_game(engine, colour)


@main.command()
@DB_OPTION
@click.option("--json", "as_json", is_flag=True, help="print a JSON list")
def ratings(db, as_json):
    """The rating table: every rated snapshot and reference player, with compute.

    A rating whose 95% interval is wider than +-150 Elo says "too few games"
    instead of a number. `perfect`: on boards up to 5x5, the share of won
    positions where the promoted model's move keeps the win (see `hexzd perfect`)."""
    from pathlib import Path

    from hexzd import store
    from hexzd.evaluation import scale

    if not Path(db).exists():
        raise click.ClickException(f"no state file {db}")
    with _state_file(db), store.consistent_read(db) as connection:
        table = store.rating_table(connection)
    if as_json:
        click.echo(json.dumps(table))
        return
    if not table:
        click.echo("no ratings yet: they come with the first duel or rating match")
        return
    click.echo(
        f"{'player':<20} {'rating':>7} {'95% CI':>17} {'games':>6} {'promoted':>8} {'step':>7} {'PFLOP':>9}"
        f" {'perfect':>8}"
    )
    for r in table:
        rating, ci, step, flops = scale.rating_cells(r)
        promoted = "" if r["model_id"] is None else "yes" if r["promoted"] else "no"
        perfect = "" if r["perfect_move"] is None else f"{r['perfect_move']:.1%}"
        click.echo(
            f"{r['player']:<20} {rating} {ci:>17} {r['games']:6d} {promoted:>8} {step:>7} {flops:>9} {perfect:>8}"
        )


def _id_range(ctx, param, value):
    """`A..B`, `A..`, `..B` or `A` -> (first, last), last None for no end."""
    if value is None:
        return 1, None
    first, dots, last = value.partition("..")
    try:
        bounds = int(first or 1), int(last) if last else None if dots else int(first)
    except ValueError:
        raise click.BadParameter(f"'{value}' is not A..B, A.., ..B or one id") from None
    if bounds[0] < 1 or bounds[1] is not None and bounds[1] < bounds[0]:
        raise click.BadParameter(f"'{value}' holds no id: ids start at 1 and A..B needs A <= B")
    return bounds


@main.command()
@DB_OPTION
@click.option(
    "--kind",
    type=click.Choice(["selfplay", "duel", "rating", "all"]),
    default="selfplay",
    show_default=True,
    help="self-play games, promotion duels' games, rating matches' games, or all of them",
)
@click.option("--model", type=click.IntRange(1), help="only the games model N played: its self-play, its matches")
@click.option(
    "--ids",
    callback=_id_range,
    help="ids A..B, A.., ..B or one id: self-play games (`games.id`) and match games (`duel_games.id`) "
    "are numbered apart, so not with --kind all",
)
@click.option("--last", "newest", type=click.IntRange(1), help="only the newest N games of the selection")
@click.option(
    "--format", "fmt", type=click.Choice(["sgf", "trmph"]), default="sgf", show_default=True, help="SGF or trmph"
)
@click.option(
    "--out",
    type=click.Path(),
    help="a file for all the games, or a folder (one there, or a name ending in /) for a file a game"
    "  [default: stdout]",
)
def games(db, kind, model, ids, newest, fmt, out):
    """Game records as SGF for HexGui (one game tree a game) or trmph.com lines (one a game).

    SGF names the players as `hexzd ratings` does, with the result (`B+R`/`W+R`:
    the loser resigned), the date and the event; moves, the swap (`swap-pieces`)
    and cells as HexGui writes them. HexGui opens the first game of a file: write
    a folder to open each."""
    from hexzd.protocols import game_records

    if ids != (1, None) and kind == "all":
        raise click.UsageError("--ids needs one --kind: self-play games and match games are numbered apart")
    if not Path(db).exists():
        raise click.ClickException(f"no state file {db}")
    selection = game_records.Selection(kind, model, *ids, newest)
    try:
        with _state_file(db):
            records = game_records.read_records(db, selection)
        if not records:
            click.echo("no games match the selection", err=True)
        if out is None:
            click.echo("".join(game_records.texts(records, fmt)), nl=False)
            return
        folder = Path(out).is_dir() or out.endswith(("/", "\\"))
        game_records.write(records, fmt, Path(out), folder)
    except (ValueError, OSError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"{len(records)} games written to {out}{' (a file each)' if folder else ''}", err=True)


@main.command()
@click.option(
    "--db",
    "dbs",
    multiple=True,
    default=["run.sqlite"],
    show_default=True,
    type=click.Path(dir_okay=False),
    help="a run's state file; give several to overlay their runs",
)
@click.option("--out", default="report", show_default=True, type=click.Path(file_okay=False), help="where to write")
@click.option("--format", "fmt", default="png", show_default=True, type=click.Choice(["png", "svg"]))
@click.option(
    "--tensorboard",
    "board",
    type=click.Path(file_okay=False),
    help="write the run's curves as TensorBoard event files into this folder, instead of figures",
)
def report(dbs, out, fmt, board):
    """Figures of a run for a paper: rating against time, compute and steps, the
    Pareto front, perfect play, losses, throughput and the tuner's settings.

    Reads the state files read-only, also while their daemons run. With several
    --db, each figure overlays the runs, one colour each, named by file.
    --tensorboard DIR writes the curves as TensorBoard event files into DIR
    instead (a folder per run with several --db), for `tensorboard --logdir DIR`."""
    from hexzd.studies.report import ReportError, Unreadable, write_report, write_tensorboard

    try:
        written, missing = write_tensorboard(dbs, board) if board else write_report(dbs, out, fmt)
    except Unreadable as e:  # each file named with its reason
        raise Refused(str(e)) from None
    except ReportError as e:
        raise click.ClickException(str(e)) from None
    for line in missing:
        click.echo(line)
    for path in written:
        click.echo(path)


@main.command()
@click.argument("sweep_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--dry-run", is_flag=True, help="check the file and list its runs; start nothing")
def sweep(sweep_file, dry_run):
    """Run a grid of configs, each as its own run with its own state file.

    The file's [grid] keys take lists; each combination is a `hexzd start
    --headless` run on <out>/<run>.sqlite, `parallel` at once. A run that fails
    is recorded in <out>/manifest.jsonl and the sweep goes on. Run it again to
    resume: runs done with the same config are skipped, the others restart on
    their state files. Ctrl-C stops the running runs gracefully; a second
    Ctrl-C stops them at once."""
    from hexzd.studies.sweep import all_done, load, run_sweep, summary

    try:
        plan = load(sweep_file)
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    if dry_run:
        click.echo(f"sweep {plan.name}: {len(plan.runs)} runs into {plan.out}, {plan.parallel} at once")
        for run in plan.runs:
            click.echo(f"  {run.name}")
        return
    try:
        records = run_sweep(plan, click.echo)
    except ValueError as e:  # another sweep holds the directory
        raise click.ClickException(str(e)) from None
    click.echo(summary(plan, records))
    raise SystemExit(0 if all_done(records) else 1)


@main.command()
@click.argument("runs", nargs=-1, type=click.Path(dir_okay=False))
@click.option(
    "--db",
    default="league.sqlite",
    show_default=True,
    type=click.Path(dir_okay=False),
    help="the league file: created if missing, resumed if not",
)
@click.option("--sims", type=click.IntRange(1, 100_000), help="simulations per move of every snapshot  [default: 64]")
@click.option(
    "--pairs", "match_pairs", type=click.IntRange(1, 1024), help="pairs of games a match, played at once  [default: 4]"
)
@click.option("--games", type=click.IntRange(1), help="stop after this many more games")
@click.option("--minutes", type=click.FloatRange(min=0, min_open=True), help="stop after this long")
@click.option(
    "--target",
    "target_elo",
    type=click.FloatRange(min=0, min_open=True),
    help="stop once every 95% interval is within +-this Elo  [default: 50]",
)
@click.option(
    "--cpu-share",
    type=click.FloatRange(0, 1, min_open=True),
    help="most of the machine's cores the league may use, as evaluation.cpu_share  [default: 1]",
)
@click.option("--size", type=click.IntRange(2, 19), help="board side n  [default: the first usable run's]")
@click.option(
    "--ladder",
    "ladder_file",
    type=click.Path(dir_okay=False),
    help='the kept ladder shared with the runs ("": none)  [default: [ratings] ladder_file\'s]',
)
@click.option("--json", "as_json", is_flag=True, help="print one JSON object: the runs and the ratings")
def league(runs, db, as_json, **options):
    """Rate the promoted snapshots of several runs' state files on one Elo scale.

    Every snapshot meets the same reference players and the same matchmaking
    as in a run, and snapshots of other runs. The league file keeps every game:
    run it again, with or without RUNS, to go on and to add the snapshots
    promoted since. The reference games are shared with the runs' kept ladder
    (--ladder). A state file that cannot be used is named with the reason
    and skipped. Ctrl-C stops cleanly (a second at once); the state files are
    only read, so their daemons may run."""
    from hexzd.store import StateFileError
    from hexzd.studies.league import LeagueError, Settings, run_league, table

    settings = Settings(**{key: value for key, value in options.items() if value is not None})
    try:
        with _state_file(db):  # the league file: the runs' state files that cannot be used are skipped
            summary = run_league(db, runs, settings, lambda line: click.echo(line, err=as_json))
    except (LeagueError, StateFileError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(json.dumps(summary) if as_json else table(summary))


MATCH_SIZE = 9  # the board of a match whose engines do not say theirs


def _match_size(size: int | None, any_size: bool, commands: dict[str, str]) -> int:
    """--size, or the board of the engines that are `hexzd htp` on a state file; a one-line
    refusal of a size their networks were not trained on (`hexzd htp` plays rollouts there)."""
    boards = {k: b for k, command in commands.items() if (b := _engine_board(k, command)) is not None}
    if size is None:
        if len(set(boards.values())) > 1:
            told = " and ".join(f"{k} {b}x{b}" for k, b in boards.items())
            raise click.ClickException(f"the engines' networks play {told}: give --size, with --any-size")
        return next(iter(boards.values()), MATCH_SIZE)
    for k, board in boards.items():
        if board != size and not any_size:
            raise click.ClickException(
                f"engine {k}'s network was trained on {board}x{board}, not {size}x{size}, where `hexzd htp` "
                f"plays random-rollout MCTS: --size {board}, or --any-size to play {size}x{size} anyway"
            )
    return size


def _engine_board(name: str, command: str) -> int | None:
    """The board of an engine command that runs `hexzd htp` on a state file: its run's board
    size, read read-only; None for any other engine, --random-rollouts, or a run with no config."""
    from hexzd import store
    from hexzd.config import stored

    try:
        words = shlex.split(command)
    except ValueError:  # the referee says why it cannot start it
        return None
    at = next((i for i, w in enumerate(words) if w == "htp" and _runs_hexzd(words[:i])), None)
    if at is None:
        return None
    try:
        options = htp.make_context("htp", words[at + 1 :]).params
    except (click.ClickException, click.exceptions.Exit):  # the engine will say what is wrong
        return None
    if options["random_rollouts"]:
        return None
    if not Path(options["db"]).is_file():
        raise Refused(f"{options['db']}: no such file (the state file of engine {name})")
    with _state_file(options["db"]), store.consistent_read(options["db"]) as connection:
        text = store.config_text(connection)
    return stored(text).game.board_size if text else None


def _runs_hexzd(words: list[str]) -> bool:
    """Whether a command line's words run hexzd: `hexzd`, a path to it, or `python -m hexzd`."""
    return bool(words) and (Path(words[-1]).name == "hexzd" or words[-2:] == ["-m", "hexzd"])


@main.command()
@click.argument("engine_a")
@click.argument("engine_b")
@click.option(
    "--size",
    type=click.IntRange(2, 19),
    help=f"board side n  [default: the state file's board of an engine `hexzd htp --db FILE`, else {MATCH_SIZE}]",
)
@click.option(
    "--any-size",
    is_flag=True,
    help="play --size though a `hexzd htp` engine's network was trained on another board (it plays rollouts there)",
)
@click.option(
    "--games",
    default=20,
    show_default=True,
    type=click.IntRange(1, 100_000),
    help="games to play, rounded up to whole pairs (each opening with both colours)",
)
@click.option(
    "--plies",
    "--opening-plies",
    default=1,
    show_default=True,
    type=click.IntRange(0, 361),
    help="shortest opening before the engines take over: 1 = every first move once, then two stones...; 0 = none",
)
@click.option("--seed", default=0, show_default=True, type=int, help="the openings' order")
@click.option(
    "--timeout",
    default=60.0,
    show_default=True,
    type=click.FloatRange(min=0.1),
    help="seconds an engine may take for one answer; slower loses the game",
)
@click.option("--record", type=click.Path(dir_okay=False), help="append each game to this file (JSON lines)")
@click.option(
    "--log-dir",
    default=".",
    show_default=True,
    type=click.Path(file_okay=False),
    help="where the engines' stderr goes (engine-A.log, engine-B.log)",
)
@click.option("--json", "as_json", is_flag=True, help="print one JSON object at the end")
def match(engine_a, engine_b, size, any_size, games, plies, seed, timeout, record, log_dir, as_json):
    """Referee a match between two HTP engine command lines.

    hexzd match "hexzd htp --db run.sqlite --sims 800" "mohex --use-logfile=false"

    The referee keeps its own board: an illegal move, a resignation, an error,
    a timeout or a crash loses the game. Prints the engines' names, each game,
    A's score, and A's wins and losses with each colour."""
    from pathlib import Path

    from hexzd.protocols.referee import referee_match, summary, write_record

    size = _match_size(size, any_size, {"A": engine_a, "B": engine_b})
    Path(log_dir).mkdir(parents=True, exist_ok=True)
    names: dict[str, str] = {}

    def on_start(answers):
        names.update(answers)
        if not as_json:
            for k, command in (("A", engine_a), ("B", engine_b)):
                click.echo(f"{k} {names[k] or '(no name)'}  [{command}]")

    def on_game(r):
        if record:
            write_record(Path(record), r)
        if not as_json:
            click.echo(
                f"game {r.game + 1:>4}  A {'black' if r.black == 'A' else 'white'}  "
                f"{r.winner} wins ({r.reason})  {r.moves}"
            )

    try:
        results = referee_match(engine_a, engine_b, size, games, plies, seed, timeout, Path(log_dir), on_game, on_start)
    except OSError as e:  # an engine command that cannot start at all
        raise click.ClickException(f"cannot start an engine: {e}") from None
    s = summary(results)
    if as_json:
        click.echo(json.dumps({"a": engine_a, "b": engine_b, "size": size, "names": names, **s}))
    else:
        _match_summary(s, log_dir)


def _match_summary(s: dict, log_dir) -> None:
    def elo(x, score):
        return ("+inf" if score >= 1 else "-inf") if x is None else f"{x:+.0f}"

    def record(colour):
        wins, losses = s[f"a_wins_as_{colour}"], s[f"a_losses_as_{colour}"]
        return f"A as {colour.capitalize()}: {wins} win{'s' * (wins != 1)}, {losses} loss{'es' * (losses != 1)}"

    click.echo(
        f"A scored {s['a_wins']}-{s['b_wins']} ({s['score']:.1%}, 95% CI [{s['score_lo']:.1%}, "
        f"{s['score_hi']:.1%}]); Elo A - B {elo(s['elo'], s['score'])} [{elo(s['elo_lo'], s['score_lo'])}, "
        f"{elo(s['elo_hi'], s['score_hi'])}]"
    )
    click.echo(f"{record('black')}; {record('white')}")
    if any(s["resigned"].values()):
        click.echo(f"resigned: A {s['resigned']['A']}, B {s['resigned']['B']}")
    if any(s["forfeits"].values()):
        click.echo(
            f"games lost other than on the board: A {s['forfeits']['A']}, B {s['forfeits']['B']} "
            f"(see the reasons above and {log_dir}/engine-*.log)"
        )


def _sims_list(ctx, param, values):
    """--sims 0,64,800 or --sims 0 --sims 64: simulation counts, 0 for no search."""
    try:
        sims = [int(s) for value in values for s in value.split(",") if s.strip()]
    except ValueError:
        raise click.BadParameter(f"'{' '.join(values)}' is not a list of simulation counts") from None
    if any(s < 0 for s in sims):
        raise click.BadParameter("simulation counts are 0 (no search) or more")
    return sims or None


@main.command()
@DB_OPTION
@MODEL_OPTION
@click.option(
    "--sims",
    multiple=True,
    callback=_sims_list,
    metavar="S[,S...]",
    help="simulations per move, one agent each; 0: the raw policy (random moves with "
    "--random-rollouts)  [default: 0,64,800]",
)
@click.option(
    "--positions",
    default=100,
    show_default=True,
    type=click.IntRange(1, 100_000),
    help="test positions: the empty board and random openings (above 5x5: late ones only)",
)
@click.option("--seed", default=0, show_default=True, type=int, help="seed of the positions and agents")
@click.option(
    "--size",
    type=click.IntRange(2, 19),
    help="board side n, at most 7 (5 with --openings)  [default: the model's; 5 with --random-rollouts]",
)
@ROLLOUTS_OPTION
@click.option(
    "--openings",
    "every_opening",
    is_flag=True,
    help="instead: every first move, its winning side played by the agent against perfect defence",
)
@click.option(
    "--from-games",
    type=click.Path(exists=True, dir_okay=False),
    help="instead: the position after --ply plies of each game in this record file (`hexzd match --record`)",
)
@click.option(
    "--ply",
    type=click.IntRange(0),
    help="with --from-games: plies into each game  [default: n*n - 29 above 5x5, so 20 on 7x7; else n*n // 2]",
)
@click.option(
    "--solved",
    type=click.Path(dir_okay=False),
    help="a file of proved positions: read first if it exists, every answer merged into it at the end; "
    "judges of the same positions that share one search each position once",
)
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
def perfect(db, model, sims, positions, seed, size, random_rollouts, every_opening, from_games, ply, solved, as_json):
    """Strength against perfect play: solved positions of boards up to 7x7.

    In won positions: how often the agent's move keeps the win, and how often
    it converts the win against perfect defence; for the network, how often
    its value's sign is right. Above 5x5 the positions are late ones, with few
    enough empty cells for the solver to prove them in seconds. With --openings (up
    to 5x5): of the n*n first moves, how many the agent converts from the side
    that wins, and its first losing move in each it does not. With --from-games:
    positions from real play, harder than random ones; where the player to move
    loses, the perfect player moves first, so the agent plays the winning side."""
    from hexzd.evaluation import perfect as pf

    evaluate, config, label = None, None, "random-rollout MCTS"
    if not random_rollouts:
        network, config, label = _network_of(db, model)
        evaluate = network.evaluate
        if size not in (None, network.board_size):
            raise click.ClickException(
                f"model {network.model_id} plays {network.board_size}x{network.board_size}, not {size}x{size}"
            )
        size = network.board_size
    try:
        size = pf.check_size(size or pf.MAX_SIZE, late=not every_opening)
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    if every_opening and from_games:
        raise click.UsageError("--openings and --from-games choose the positions each: give one")
    if ply is not None and not from_games:
        raise click.UsageError("--ply goes with --from-games")
    games = _recorded_positions(from_games, size, ply) if from_games else None
    solver = _solver(size, solved)
    if not as_json:
        click.echo(f"{label}, {size}x{size}, seed {seed}" + (f", {from_games} after {games[1]} plies" if games else ""))
    on_agent = None if as_json else lambda r: click.echo(f"measured {r.name}", err=True)
    selfplay, sims = config.selfplay if config else None, sims or pf.DEFAULT_SIMS
    if every_opening:
        results = pf.openings(size, evaluate, sims, seed, selfplay, solver, on_agent)
        as_dict = {"board_size": size, "seed": seed, "agents": [r.as_dict() for r in results]}
        out = json.dumps(as_dict) if as_json else _openings_table(size, results)
    else:
        report = pf.measure(size, evaluate, sims, positions, seed, selfplay, solver, on_agent, from_games=games)
        out = json.dumps(report.as_dict()) if as_json else _perfect_table(report)
    click.echo(out)
    try:
        if solved:
            solver.save_answers(solved)
    except OSError as e:  # the measurement stands; only the next judge's head start is lost
        click.echo(f"warning: the proved positions were not saved to {solved}: {e}", err=True)


def _solver(size: int, solved: str | None):
    """A Solver for size x size boards, with the answers kept in the file `solved` if there is one."""
    from hexzd.evaluation import perfect as pf

    solver = pf.Solver(size)
    try:
        if solved:
            solver.load_answers(solved)
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    return solver


def _recorded_positions(path: str, n: int, ply: int | None) -> tuple[list[list[int]], int]:
    """(each game's actions, the ply) from a `hexzd match --record` file, or a clear error."""
    from hexzd.evaluation import perfect as pf
    from hexzd.game.notation import parse_trmph

    if ply is None:
        ply = n * n - pf.GAMES_EMPTY if n > pf.MAX_SIZE else n * n // 2
    if n > pf.MAX_SIZE and ply < pf.first_ply(n):
        raise click.UsageError(f"--ply {ply}: on {n}x{n} the solver needs at least {pf.first_ply(n)} plies played")
    lines = []
    with open(path) as f:
        for number, text in enumerate(f, 1):
            try:
                lines.append(parse_trmph(json.loads(text)["moves"], n))
            except (ValueError, KeyError, TypeError) as e:
                raise click.ClickException(f"{path}, line {number}: not a {n}x{n} game record ({e})") from None
    if not any(len(line) > ply for line in lines):
        raise click.ClickException(f"{path}: no game lasted beyond {ply} plies")
    return lines, ply


def _network_of(db, model):
    """(Network, Config, a label) of a state file's model, or a clear error."""
    from hexzd.protocols.htp import EngineError, load_network

    try:
        with _state_file(db):
            network, config, swap, note = load_network(db, model)
    except EngineError as e:
        raise click.ClickException(str(e)) from None
    if network is None:
        raise click.ClickException(f"{note}: give --random-rollouts for plain MCTS")
    label = f"model {network.model_id} ({network.blocks}x{network.channels} network)"
    return network, config, label + (", trained with swap, measured without" if swap else "")


@main.command()
@DB_OPTION
@MODEL_OPTION
@click.option(
    "--out",
    default=".",
    show_default=True,
    type=click.Path(),
    help="a directory, or a file name ending .onnx or .pt2 (both files take its stem)",
)
def export(db, model, out):
    """Write a model's network as ONNX and as a torch.export program (.pt2).

    Both take float32 planes [B, 4, n, n] and give policy logits [B, n*n] and
    values [B]; each file's metadata says what the planes and outputs mean
    (docs/guides/export.md). The files are checked against the network before
    the command ends."""
    from hexzd.nn import export as ex

    missing = ex.missing_packages()
    if missing:
        raise click.ClickException(f"hexzd export needs {', '.join(missing)}: pip install 'hexzd[export]'")
    snapshot, model_id, swap = _snapshot_of(db, model)
    spec = snapshot.spec
    onnx_path, pt2_path = ex.paths(out, spec.board_size, model_id)
    try:
        done = ex.write(snapshot, ex.metadata(snapshot, model_id, swap), onnx_path, pt2_path)
    except RuntimeError as e:
        raise click.ClickException(str(e)) from None
    for path in (done.onnx, done.pt2):
        click.echo(f"{path}  {path.stat().st_size:,} bytes")
    click.echo(
        f"model {model_id}: {spec.board_size}x{spec.board_size}, {spec.blocks}x{spec.channels} network;"
        f" both files give its outputs within {done.max_difference:.1g}"
    )


def _snapshot_of(db, model):
    """(Snapshot, model id, whether the run has the swap rule) of a state file's model, or a one-line error."""
    import sqlite3

    from hexzd import store
    from hexzd.nn.loader import find, snapshot

    if not Path(db).is_file():
        raise click.ClickException(f"no state file {db}: give --db FILE")
    try:
        with _state_file(db):
            model_id, config = find(db, model)
            if model_id is None:
                raise click.ClickException(f"no model of {db} is promoted yet: give --model ID")
            try:
                return snapshot(db, model_id), model_id, bool(config and config.game.swap)
            except sqlite3.Error as e:  # a page of the weights that cannot be read
                raise store.refusal(e) from None
    except (KeyError, ValueError) as e:  # a bad --model, a missing or pruned model, an unknown snapshot format
        raise click.ClickException(e.args[0]) from None


def _openings_table(n: int, results) -> str:
    lines = [
        f"the {n * n} first moves, each played out by the agent from the side that wins it,"
        " against perfect defence (95% intervals):",
        f"{'agent':<14} {'converted':>22} {'as Black':>10} {'as White':>10} {'agent s':>8}",
    ]
    for r in results:
        black, white = r.rate("black"), r.rate("white")
        lines.append(
            f"{r.name:<14} {f'{r.rate().hits}/{r.rate().total} {r.rate()}':>22}"
            f" {f'{black.hits}/{black.total}':>10} {f'{white.hits}/{white.total}':>10} {r.seconds:8.1f}"
        )
    for r in results:
        for g in r.games:
            if not g.converted:
                lines.append(f"{r.name} lost as {g.colour.capitalize()} after {g.opening}: played {g.slip} ({g.moves})")
    return "\n".join(lines)


def _perfect_table(report) -> str:
    lines = [
        f"{report.positions} positions ({report.first_ply} plies or more): {report.won} won and {report.lost} "
        "lost for the player to move "
        f"(solver {report.solver_seconds:.1f} s, {report.solver_nodes:,} nodes)"
    ]
    if report.replied:
        lines.append(f"(the perfect player moved first in {report.replied} that the player to move had lost)")
    if report.value_sign:
        lines.append(f"raw network's value sign right in {report.value_sign} of them")
    lines += [
        "",
        f"in the {report.won} won positions (95% intervals):",
        f"{'agent':<14} {'perfect-move rate':>20} {'conversion':>20} {'agent s':>8}",
    ]
    for a in report.agents:
        lines.append(f"{a.name:<14} {str(a.perfect_moves):>20} {str(a.conversion):>20} {a.seconds:8.1f}")
    return "\n".join(lines)


def _budgets(ctx, param, values):
    """--budget STEP=SECONDS, repeatable: a step's time budget (tests)."""
    from hexzd.benchmarks.doctor import STEPS

    budgets = {}
    for value in values:
        step, _, seconds = value.partition("=")
        try:
            budgets[step] = float(seconds)
        except ValueError:
            raise click.BadParameter(f"'{value}' is not STEP=SECONDS") from None
        if step not in STEPS[1:] or budgets[step] <= 0:
            raise click.BadParameter(f"'{value}': a step of {', '.join(STEPS[1:])} and seconds above 0")
    return budgets


def _steps(ctx, param, values):
    from hexzd.benchmarks.doctor import STEPS

    steps = {s.strip() for value in values for s in value.split(",") if s.strip()}
    steps = {t for s in steps for t in (("bench-net", "bench-selfplay") if s == "bench" else (s,))}
    if unknown := steps - set(STEPS):
        raise click.BadParameter(f"no step {', '.join(sorted(unknown))}; the steps are {', '.join(STEPS)}, bench")
    return steps


@main.command()
@click.option("--gpu", is_flag=True, help="verify a GPU: fail at once without CUDA, and if self-play runs elsewhere")
@click.option(
    "--minutes", default=3.0, show_default=True, type=click.FloatRange(min=0.1), help="length of the daemon run"
)
@click.option("--size", type=click.IntRange(2, 19), help="board side n  [default: 9; --suggest: the default config's]")
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    help="where the steps' output and the run go  [default: a temporary directory]",
)
@click.option("--json", "as_json", is_flag=True, help="print the summary as one JSON object")
@click.option(
    "--suggest",
    is_flag=False,
    flag_value="config.toml",
    type=click.Path(dir_okay=False),
    metavar="[PATH]",
    help="instead of the checks: measure for a few seconds and write a config fitted to this machine"
    " [default PATH: config.toml]",
)
@click.option("--force", is_flag=True, help="--suggest: overwrite PATH")
@click.option(
    "--hours",
    type=click.FloatRange(min=0, min_open=True),
    help="--suggest: the run's budget.hours; the network is sized to the compute of those hours",
)
@click.option(
    "--for-gpu",
    "profile",
    metavar="NAME",
    help="--suggest: what it would write on that GPU's machine, measuring nothing (h100: one H100, 16 cores)",
)
@click.option("--seconds", default=2.0, hidden=True, type=click.FloatRange(min=0.1), help="--suggest: per measurement")
@click.option("--skip", multiple=True, callback=_steps, hidden=True, help="steps to leave out: tests,bench,daemon...")
@click.option("--budget", multiple=True, callback=_budgets, hidden=True, help="STEP=SECONDS: a step's time budget")
@click.option("--selfplay-bench", default="selfplay", hidden=True, help="the benchmark the bench-selfplay step runs")
def doctor(gpu, minutes, size, out, as_json, skip, budget, selfplay_bench, suggest, force, hours, profile, seconds):
    """Check this machine in one go (about 8 minutes with the defaults): the environment,
    the GPU tests, `bench net` and `bench selfplay` on every backend, and a short daemon
    run with GPU telemetry and the tuner; then one summary. Exits 1 if any step failed.

    With --suggest: write a config.toml fitted to this machine instead (workers, threads,
    groups and batch from its cores, GPUs and a few seconds of measurement; with --hours,
    the network too), each changed key under a comment that says why."""
    if suggest is None:
        for name, value in (("--force", force), ("--hours", hours), ("--for-gpu", profile)):
            if value:
                raise click.UsageError(f"{name} goes with --suggest")
    else:
        return _suggest(Path(suggest), size, hours, profile, force, gpu, seconds)
    from hexzd.benchmarks import doctor as dr

    try:
        summary = dr.run(
            size=size or 9,
            minutes=minutes,
            out=out,
            gpu=gpu,
            skip=skip,
            budgets=budget,
            selfplay_bench=selfplay_bench,
            echo=lambda line: click.echo(line, err=True),
        )
    except dr.NoGpu as e:
        raise click.ClickException(str(e)) from None
    click.echo(json.dumps(summary) if as_json else dr.text(summary))
    if not summary["ok"]:
        raise SystemExit(1)


def _suggest(path: Path, size, hours, profile, force, gpu, seconds) -> None:
    """`hexzd doctor --suggest`: writes the fitted config; each change and why, on stderr."""
    from hexzd.benchmarks import suggest

    if gpu:
        raise click.UsageError("--gpu checks a GPU; with --suggest, --for-gpu NAME writes for one")
    if profile is not None and profile not in suggest.PROFILES:
        known = ", ".join(suggest.PROFILES)
        raise click.BadParameter(f"no profile {profile!r}; known: {known}", param_hint="--for-gpu")
    echo = lambda line: click.echo(line, err=True)  # noqa: E731
    try:
        fitted = suggest.run(path, size, hours, profile, force, seconds, echo)
    except (FileExistsError, ValueError) as e:
        raise Refused(str(e)) from None
    for e in fitted.edits:
        echo(f"  {e.section}.{e.key} = {e.value}: {e.why}")
    click.echo(f"wrote {path}: {len(fitted.edits)} key(s) fitted to {fitted.machine.source}, the rest the defaults")
