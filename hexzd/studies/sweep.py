"""`hexzd sweep`: a grid of configs, each its own run with its own state file.

A scaling study (network size x compute budget, as in Jones 2021) is many
runs that differ in a few keys. The sweep file names those keys:

    [sweep]   name, out (the runs' directory), parallel (runs at once), base (a config.toml)
    [set]     config keys every run gets:        "game.board_size" = 4
    [grid]    config keys to vary, a list each:  "model.channels" = [8, 16, 32]

and the sweep runs the cartesian product of [grid], each run a `hexzd start
--headless` process on `<out>/<run>.sqlite`, with its config written to
`<out>/<run>.toml` and its output to `<out>/<run>.log`. The whole file is
checked before anything starts, with the same validation and `file:line: key`
errors as config.toml; every run must have a budget, so that it ends by itself.

`<out>/manifest.jsonl` records the runs: a line each time a run starts or
ends, the latest line of a run its state. Running the sweep again skips the
runs that are done with the same config and restarts the others on their
state files (budgets count over all of a state file's restarts).
"""

import fcntl
import itertools
import json
import os
import re
import shlex
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import tomlkit
from pydantic import BaseModel, ConfigDict, Field, field_validator

from hexzd import config, processes, store
from hexzd.daemon.rundir import RunDir

MANIFEST = "manifest.jsonl"
BUDGETS = ("hours", "games", "positions", "pflops")  # [budget] keys: a run with none of them never ends
POLL_SECONDS = 0.2  # how often the sweep looks at its runs and at signals received
TAIL_LINES = 5  # lines of a failed run's log kept as its reason


class SweepTable(BaseModel):
    """[sweep]: how the runs are run."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, min_length=1)  # default: the sweep file's stem
    out: str | None = Field(None, min_length=1)  # the runs' directory, relative to the sweep file; default: name
    parallel: int = Field(1, ge=1)  # runs at once
    base: str | None = Field(None, min_length=1)  # a config.toml under [set] and [grid]; default: hexzd's defaults

    @field_validator("parallel")
    @classmethod
    def _within_the_cores(cls, parallel: int) -> int:
        cores = os.cpu_count() or 1
        if parallel > cores:
            raise ValueError(f"{parallel} runs at once, on {cores} cores: at most {cores}")
        return parallel


class SweepFile(BaseModel):
    """The whole sweep file; [set] and [grid] are checked key by key against Config."""

    model_config = ConfigDict(extra="forbid")

    sweep: SweepTable = SweepTable()
    set: dict = {}
    grid: dict = Field(min_length=1)


@dataclass(frozen=True)
class Run:
    """One point of the grid."""

    name: str  # from its grid values, safe as a file name
    overrides: dict  # its grid values, by dotted config key
    config_text: str  # the config.toml it runs with

    @property
    def config(self) -> str:
        return f"{self.name}.toml"

    @property
    def state_file(self) -> str:
        return f"{self.name}.sqlite"

    @property
    def log(self) -> str:
        return f"{self.name}.log"


@dataclass(frozen=True)
class Sweep:
    """A checked sweep file: its runs, and how to run them."""

    path: Path
    name: str
    out: Path
    parallel: int
    runs: list[Run]


# -- the sweep file ------------------------------------------------------------


def load(path) -> Sweep:
    """Reads and checks a sweep file and every run's config. Raises ValueError naming file, line and key."""
    path = Path(path)
    text = path.read_text()
    spec = config.validate(SweepFile, config.read_toml(text, path), path, lambda loc: config.line_of(text, loc))
    problems: list[str] = []  # every key of [set] and [grid] that is not a config key, told at once
    fixed, lines = _fixed_keys(spec.set, path, text, problems)
    axes = _axes(spec.grid, path, text, lines, fixed, problems)
    if problems:
        raise ValueError("\n".join(problems))
    name = spec.sweep.name or path.stem
    base = f"the config {spec.sweep.base}" if spec.sweep.base else "hexzd's default config"
    template = _Template(path, name, base, _base(spec.sweep, path, text), fixed, lines, _labels(axes))
    runs = [template.run(combination) for combination in itertools.product(*axes)]
    _check_unique(runs, path, text)
    out = path.parent / (spec.sweep.out or name)
    _check_sockets(out, runs, path, text)
    return Sweep(path, name, out, spec.sweep.parallel, runs)


def _base(table: SweepTable, path: Path, text: str) -> str:
    """The text of the config every run starts from, checked on its own (its errors name its file)."""
    if table.base is None:
        return config.default_toml()
    base = path.parent / table.base
    if not base.is_file():
        raise config.refusal(path, config.line_of(text, ("sweep", "base")), ("sweep", "base"), f"no file {base}")
    base_text = base.read_text()
    config.parse(base_text, base)
    return base_text


def _keys(table: dict, prefix: tuple = ()):
    """(dotted path, value) of each leaf: quoted `"model.channels"` and dotted `model.channels` alike."""
    for key, value in table.items():
        path = prefix + tuple(key.split("."))
        if isinstance(value, dict):
            yield from _keys(value, path)
        else:
            yield path, value


def _config_key(key: tuple, path: Path, line: int | None) -> str:
    """A [set] or [grid] key as `section.key`, the only shape config.toml has."""
    if len(key) != 2:
        raise config.refusal(path, line, key, "a config key is section.key, such as model.channels")
    return ".".join(config.RENAMED.get(key, key))  # an old name sets its new one


def _fixed_keys(table: dict, path: Path, text: str, problems: list[str]) -> tuple[dict, dict]:
    """[set]: {config key: value}, and {config key: its line in the sweep file}; the refusal
    of each key that is not a config key appended to `problems`."""
    fixed, lines = {}, {}
    for key, value in _keys(table):
        line = config.line_of(text, ("set", *key))
        try:
            name = _config_key(key, path, line)
        except ValueError as e:
            problems.append(str(e))
            continue
        fixed[name], lines[name] = value, line
    return fixed, lines


def _axes(table: dict, path: Path, text: str, lines: dict, fixed: dict, problems: list[str]) -> list[list[dict]]:
    """[grid]: per key, a list of the overrides each of its values makes; the refusal of each
    key that cannot be one appended to `problems`.

    A value that is a table sets several keys together: `model = [{blocks = 2,
    channels = 16}, {blocks = 4, channels = 32}]` grows depth and width at once.
    """
    axes = []
    for key, values in _keys(table):
        try:
            axes.append(_axis(key, values, path, config.line_of(text, ("grid", *key)), lines, fixed))
        except ValueError as e:
            problems.append(str(e))
    return axes


def _axis(key: tuple, values, path: Path, line: int | None, lines: dict, fixed: dict) -> list[dict]:
    """One [grid] key's overrides, one per value; its keys' line recorded in `lines`."""
    if not isinstance(values, list) or not values:
        message = "a grid key takes a non-empty list of values, one per run"
        raise config.refusal(path, line, key, message)
    axis = [dict(_keys(v, key)) if isinstance(v, dict) else {key: v} for v in values]
    axis = [{_config_key(k, path, line): v for k, v in overrides.items()} for overrides in axis]
    for name in {k for overrides in axis for k in overrides}:
        if name in lines:
            where = "[set]" if name in fixed else "another grid key"
            raise config.refusal(path, line, key, f"{name} is also set by {where}")
        lines[name] = line
    return axis


@dataclass(frozen=True)
class _Template:
    """What the runs of a sweep share, and where each key the sweep sets is in its file."""

    path: Path  # the sweep file
    sweep: str  # its name
    base: str  # the base config, as the run's config names it
    base_text: str
    fixed: dict  # [set]: {config key: value}
    lines: dict  # {config key: its line in the sweep file}, from [set] and [grid]
    labels: dict  # {grid key: how a run's name calls it}

    def run(self, combination: tuple[dict, ...]) -> Run:
        """The base config with [set] and this combination of [grid] values, checked."""
        overrides = {k: v for part in combination for k, v in part.items()}
        name = _safe_name(",".join(f"{self.labels[k]}={_label(v)}" for k, v in overrides.items()))
        document = tomlkit.parse(self.base_text)
        for key, value in (self.fixed | overrides).items():
            section, item = key.split(".")
            document.setdefault(section, tomlkit.table())[item] = value
        try:
            checked = config.checked(document.unwrap(), self.path, self.line)
        except ValueError as e:
            raise ValueError(f"{e} (in the run {name})") from None
        if not any(getattr(checked.budget, b) for b in BUDGETS):
            message = (
                f"the run {name} has no budget and would never end: set budget.hours, games, positions "
                "or pflops in [set] or [grid] (or in the base config)"
            )
            raise config.refusal(self.path, self.line(("budget",)), ("budget",), message)
        header = f"# The run {name} of the sweep {self.sweep} ({self.path.name}), written by `hexzd sweep`: "
        header += f"{self.base}, with\n" + "".join(
            f"#   {k} = {json.dumps(v)}\n" for k, v in (self.fixed | overrides).items()
        )
        return Run(name, overrides, header + tomlkit.dumps(document))

    def line(self, loc: tuple) -> int | None:
        """The line of the [set] or [grid] key that a problem of a run's config at loc is about.

        The base config passed on its own, so a problem of a run's config comes
        from a key the sweep sets (or from keys together, such as tune bounds).
        """
        head = ".".join(str(p) for p in loc[:2])
        return next((line for key, line in self.lines.items() if key == head or key.startswith(head + ".")), None)


def _labels(axes: list[list[dict]]) -> dict[str, str]:
    """Each grid key's name in the runs' names: its last part (channels), or the whole
    key where two grid keys end alike (selfplay.sims, duel.sims). Short names keep
    the sockets beside the state files within their length limit."""
    keys = list(dict.fromkeys(k for axis in axes for overrides in axis for k in overrides))
    last = [k.split(".")[1] for k in keys]
    return {k: part if last.count(part) == 1 else k for k, part in zip(keys, last)}


def _label(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "-".join(_label(v) for v in value)
    return str(value)


def _safe_name(text: str) -> str:
    """A run's name as a file name: letters, digits and . , = + - only."""
    return re.sub(r"[^\w.,=+-]", "-", text)


def _check_unique(runs: list[Run], path: Path, text: str) -> None:
    names = [r.name for r in runs]
    for name in names:
        if names.count(name) > 1:
            message = f"two runs would share the name {name}: make the grid's values differ in letters or digits"
            raise config.refusal(path, config.line_of(text, ("grid",)), ("grid",), message)


def _check_sockets(out: Path, runs: list[Run], path: Path, text: str) -> None:
    """A daemon refuses a state file whose sockets' paths are too long for the OS: refuse it here, first."""
    for run in runs:
        try:
            RunDir.of(out / run.state_file).endpoint("control")
        except ValueError as e:
            message = f"{e}: a shorter `out` here, or shorter grid values (the runs' names)"
            raise config.refusal(path, config.line_of(text, ("sweep", "out")), ("sweep", "out"), message) from None


# -- the manifest --------------------------------------------------------------


class Manifest:
    """<out>/manifest.jsonl: a line each time a run starts or ends; a run's latest line is its state.

    Append-only, so the history of a run's attempts stays. The sweep holds
    it open under an exclusive lock, so that two sweeps cannot run into one
    directory at once.
    """

    def __init__(self, path: Path):
        self.file = open(path, "a+", encoding="utf-8")  # noqa: SIM115 (held for the sweep's life)
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.file.close()
            raise ValueError(f"another hexzd sweep is running into {path.parent}") from None
        self.latest = read_manifest(path)
        if self.file.tell() and not Path(path).read_text().endswith("\n"):
            self.file.write("\n")  # a line cut short by a crash must not swallow the next one

    def write(self, record: dict) -> None:
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        self.latest[record["run"]] = record

    def __enter__(self) -> "Manifest":
        return self

    def __exit__(self, *exc) -> None:
        self.file.close()


def read_manifest(path: Path) -> dict[str, dict]:
    """The latest record of each run in a manifest (none if there is no manifest yet)."""
    latest = {}
    if Path(path).exists():
        for line in Path(path).read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a crash
            latest[record["run"]] = record
    return latest


# -- running -------------------------------------------------------------------


@dataclass
class Child:
    """A run's `hexzd start` process."""

    run: Run
    process: subprocess.Popen
    record: dict
    signalled: list[str] = field(default_factory=list)  # the signals the sweep passed on to it


def run_sweep(sweep: Sweep, echo=print) -> dict[str, dict | None]:
    """Runs every run not done yet, `parallel` at once; the latest record of each run (None: never started).

    A run done before runs again when its config changed since (the sweep
    file's [set] or base); a raised budget then continues it on its state file.

    SIGINT or SIGTERM (Ctrl-C) is passed on to the running runs, which stop
    gracefully and are recorded as interrupted; no further run starts. A
    second one is passed on too: the runs stop at once.
    """
    sweep.out.mkdir(parents=True, exist_ok=True)
    with Manifest(sweep.out / MANIFEST) as manifest:
        todo = []
        for run in sweep.runs:
            if not done(manifest.latest.get(run.name)):
                todo.append(run)
            elif not _same_config(sweep.out / run.config, run):
                echo(f"{run.name}: done before, with another config: starting it again")  # a raised budget, say
                todo.append(run)
            else:
                echo(f"{run.name}: done before, skipped")
        _run_all(sweep, todo, manifest, echo)
        return {run.name: manifest.latest.get(run.name) for run in sweep.runs}


def _same_config(written: Path, run: Run) -> bool:
    """Whether the config a run last ran with (the file the sweep wrote for it) is its config now."""
    return written.exists() and written.read_text() == run.config_text


def _run_all(sweep: Sweep, todo: list[Run], manifest: Manifest, echo) -> None:
    running: list[Child] = []
    received: list[int] = []  # the handler only notes a signal; the loop passes it on
    passed_on = 0
    try:
        with processes.on_stop_signals(lambda sig, frame: received.append(sig)):
            while running or (todo and not received):
                while todo and not received and len(running) < sweep.parallel:
                    running.append(_start(sweep, todo.pop(0), manifest, echo))
                for sig in received[passed_on:]:
                    _pass_on(sig, running, passed_on == 0, len(todo), echo)
                    passed_on += 1
                time.sleep(POLL_SECONDS)
                for child in [c for c in running if c.process.poll() is not None]:
                    running.remove(child)
                    _finish(sweep, child, manifest, echo)
    finally:
        for child in running:  # only after an error of the sweep itself: no run is left behind
            processes.kill(child.process)


def _pass_on(sig: int, running: list[Child], first: bool, waiting: int, echo) -> None:
    name = signal.Signals(sig).name
    if first:
        echo(
            f"{name}: stopping the {len(running)} running run(s) gracefully (again to stop them at once); "
            f"{waiting} not started"
        )
    else:
        echo(f"{name}: stopping the runs now")
    for child in running:
        child.process.send_signal(sig)
        child.signalled.append(name)


def _now() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


def _start(sweep: Sweep, run: Run, manifest: Manifest, echo) -> Child:
    """Starts a run on its state file (a new one, or the one it left), with its config written out."""
    (sweep.out / run.config).write_text(run.config_text)
    command = [sys.executable, "-m", "hexzd", "start", "--headless", "--config", run.config, "--db", run.state_file]
    with open(sweep.out / run.log, "a") as log:  # the child keeps its own copy of the descriptor
        log.write(f"--- hexzd sweep {sweep.name}: {shlex.join(command[1:])} at {_now()}\n")
        log.flush()
        # Its own session: a Ctrl-C in the terminal reaches the sweep alone,
        # which passes it on once, so a run does not take it for the second
        # Ctrl-C that stops at once.
        process = processes.start(
            command, cwd=sweep.out, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
        )
    record = {
        "run": run.name,
        "status": "running",
        "overrides": run.overrides,
        "config": run.config,
        "state_file": run.state_file,
        "log": run.log,
        "pid": process.pid,
        "started": _now(),
        "ended": None,
        "exit_code": None,
        "reason": None,
    }
    manifest.write(record)
    echo(f"{run.name}: started (pid {process.pid}, log {_shown(sweep.out / run.log)})")
    return Child(run, process, record)


def _finish(sweep: Sweep, child: Child, manifest: Manifest, echo) -> None:
    code = child.process.returncode
    status, reason = _outcome(sweep.out, child, code)
    manifest.write(child.record | {"status": status, "ended": _now(), "exit_code": code, "reason": reason})
    echo(f"{child.run.name}: {status} (exit {code}): {_last_line(reason)}")


def _outcome(out: Path, child: Child, code: int) -> tuple[str, str]:
    """(status, reason) of a run that exited.

    Done only when the daemon says a budget stopped it: a run stopped any
    other way (`hexzd stop`, a signal) has more to do, and the next sweep
    restarts it.
    """
    stopped = _read(out / child.run.state_file, store.stop_reason, None)
    if code == 0 and stopped and stopped.startswith("budget."):
        return "done", stopped
    if child.signalled:
        return "interrupted", f"stopped by {child.signalled[0]} from the sweep"
    if code == 0:
        return "interrupted", f"stopped before its budget was spent: {stopped or 'no reason recorded'}"
    return "failed", _tail(out / child.run.log)


def _read(db: Path, query, default):
    """query(connection) on a run's state file, or default when it has none or one that cannot be read."""
    try:
        with store.read_only(db) as connection:
            return query(connection)
    except (sqlite3.Error, store.StateFileError):
        return default


def _last_line(text: str | None) -> str:
    return text.splitlines()[-1] if text else ""


def _tail(log: Path) -> str:
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return "\n".join(lines[-TAIL_LINES:])


# -- the summary ---------------------------------------------------------------


def summary(sweep: Sweep, records: dict[str, dict | None]) -> str:
    """A table of the runs, and the command that rates the finished ones together."""
    width = max(len(name) for name in records)
    lines = [f"{'run':<{width}} {'status':<11} {'games':>8} {'PFLOP':>10}  reason"]
    for name, record in records.items():
        status = record["status"] if record else "not started"
        counters = _read(sweep.out / f"{name}.sqlite", store.counters, {})
        games = f"{counters['games']:,.0f}" if "games" in counters else ""
        flops = counters.get("selfplay_flops", 0) + counters.get("train_flops", 0)
        pflops = f"{flops / 1e15:.3g}" if counters else ""
        reason = _last_line((record or {}).get("reason"))
        lines.append(f"{name:<{width}} {status:<11} {games:>8} {pflops:>10}  {reason}")
    finished = [name for name, r in records.items() if done(r)]
    lines.append(f"{len(finished)} of {len(records)} runs done; the manifest is {_shown(sweep.out / MANIFEST)}")
    if finished:
        files = " ".join(shlex.quote(_shown(sweep.out / f"{name}.sqlite")) for name in finished)
        league = shlex.quote(_shown(sweep.out / "league.sqlite"))
        lines.append(f"rate them together: hexzd league {files} --db {league}")
    return "\n".join(lines)


def done(record: dict | None) -> bool:
    return record is not None and record["status"] == "done"


def all_done(records: dict[str, dict | None]) -> bool:
    return all(done(r) for r in records.values())


def _shown(path: Path) -> str:
    """A path as the user would type it from here."""
    return os.path.relpath(path)
