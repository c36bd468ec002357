"""`hexzd bench chaos`: a daemon on a small board, and what users and machines do to it.

For `minutes`, at random moments, the run's daemon is treated as a long run
on a rented machine is: its workers and the daemon itself are killed with
SIGKILL (the daemon is started again), config.toml gets good edits and bad
ones (every bad edit of issue 35: non-UTF-8 bytes, a repeated reference,
elo0 >= elo1, bounds far out, a busy progress loop, bad TOML, unknown keys,
a fixed key changed, an empty file), it is paused and resumed, config.toml is
deleted and put back, the disk fills and frees (the run lives on a small
tmpfs when this process may mount one, as root), and every socket gets
malformed and oversized frames. A prober asks for `status` every second the
whole time.

At the end: the counters equal the rows (`counter.games` is the games table's
last id: every committed game counted once, none twice), `integrity_check` is
ok, no process of the run is left, `status` always answered within 2 s while
the daemon was up, and paused time produced no games. Every figure is in the
result; `ok` says whether all the checks held.
"""

import contextlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import zmq

from hexzd import processes
from hexzd.config import default_toml
from hexzd.daemon.control import DaemonError, ask
from hexzd.daemon.rundir import RunDir

STATUS_WITHIN = 2.0  # seconds `status` must answer in
PAUSE_GRACE = 2.0  # seconds after a pause for the games already sent to land
EDITS = {
    "[game]": ["board_size = {size}"],
    "[model]": ["blocks = 1", "channels = 8"],
    "[train]": ["min_positions = 200", "snapshot_every = 40", "batch_size = 32"],
    "[duel]": ["max_pairs = 16"],
    "[ratings]": ['ladder_file = ""'],
}
GOOD_SIMS = (16, 24, 32, 48)


def _bad_edits(size: int) -> dict:
    """Each bad edit a user can make, as text -> bytes."""
    other = 3 if size != 3 else 4

    def line(key: str, value: str):
        return lambda t: _set(t, key, value).encode()

    return {
        "non-UTF-8 byte": lambda t: (t + "# caf\xe9\n").encode("latin-1"),
        "repeated reference": line("references", "[100, 100, 800]"),
        "elo0 >= elo1": line("elo0", "10.0"),
        "tune.sims_min far out": line("sims_min", "200000"),
        "tune.batch_max far out": line("batch_max", "1000000"),
        "busy progress loop": line("progress_seconds", "1e-9"),
        "bad TOML": lambda t: t.replace("[selfplay]", "[selfplay", 1).encode(),
        "unknown key": lambda t: t.replace("[game]", "[game]\nboard_sise = 3", 1).encode(),
        "fixed key changed": line("board_size", str(other)),
        "empty file": lambda t: b"",
    }


def _set(text: str, key: str, value: str) -> str:
    """text with the first line that sets `key` set to `value` instead."""
    lines = text.split("\n")
    for i, raw in enumerate(lines):
        if raw.split("=", 1)[0].strip() == key:
            lines[i] = f"{key} = {value}"
            break
    return "\n".join(lines)


def config_text(size: int) -> str:
    text = default_toml()
    for edits in EDITS.values():
        for edit in edits:
            key, value = (part.strip() for part in edit.format(size=size).split("=", 1))
            text = _set(text, key, value)
    return text


@dataclass
class Tally:
    """What the chaos did, and what the daemon answered."""

    kills_worker: int = 0
    kills_daemon: int = 0
    edits_good: int = 0
    edits_bad: dict = field(default_factory=dict)  # kind -> times made
    config_deleted: int = 0
    pauses: int = 0
    games_while_paused: int = 0
    disk_full: int = 0
    disk: str = ""  # where the run lives, or why the disk was never filled
    frames_malformed: int = 0
    frames_oversized: int = 0
    status_answers: int = 0
    status_missed: int = 0
    status_slowest: float = 0.0
    loop_stall_worst: float = 0.0  # the daemon's own worst event-loop stall it reported (hexzd.daemon.stalls)
    loop_stall_in: str = ""  # and where its loop was
    restarts_waited: list = field(default_factory=list)  # seconds a restarted daemon took to answer


class Chaos:
    def __init__(self, where: Path, size: int, seed: int, echo):
        self.where, self.size, self.echo = where, size, echo
        self.rng = random.Random(seed)
        self.db, self.config = where / "run.sqlite", where / "config.toml"
        self.good = config_text(size)
        self.config.write_text(self.good)
        self.bad = _bad_edits(size)
        self.tally = Tally()
        self.daemon: subprocess.Popen | None = None
        self.up = threading.Event()  # the daemon should answer now
        self.done = threading.Event()

    # -- the daemon ------------------------------------------------------------------------

    def start(self) -> None:
        started = time.monotonic()
        with open(self.where / "daemon.out", "ab") as out:
            command = [sys.executable, "-m", "hexzd", "start", "--headless"]
            command += ["--db", str(self.db), "--config", str(self.config)]
            self.daemon = processes.start(command, stdout=out, stderr=subprocess.STDOUT, cwd=self.where)
        while _status(self.db, 2.0) is None:
            if self.daemon.poll() is not None:
                raise RuntimeError(f"the daemon exited with {self.daemon.returncode}: see {self.where / 'daemon.out'}")
            time.sleep(0.2)
        self.tally.restarts_waited.append(round(time.monotonic() - started, 2))
        self.up.set()

    def probe(self) -> None:
        """`status` every second while the daemon should be up: answered, and how fast."""
        while not self.done.wait(1.0):
            if not self.up.is_set():
                continue
            asked = time.monotonic()
            status = _status(self.db, STATUS_WITHIN)
            answered = status is not None
            if not self.up.is_set():
                continue  # killed while we asked: not the daemon's fault
            took = time.monotonic() - asked
            stalls = (status or {}).get("stalls") or {}
            if stalls.get("worst_seconds", 0.0) > self.tally.loop_stall_worst:
                self.tally.loop_stall_worst, self.tally.loop_stall_in = stalls["worst_seconds"], stalls["worst_in"]
            if answered and took <= STATUS_WITHIN:
                self.tally.status_answers += 1
                self.tally.status_slowest = max(self.tally.status_slowest, round(took, 3))
            else:
                self.tally.status_missed += 1
                self.echo(f"  status missed ({took:.1f} s)")

    # -- what happens to it ------------------------------------------------------------------

    def kill_worker(self) -> None:
        status = _status(self.db, STATUS_WITHIN) or {}
        pids = [w["pid"] for w in status.get("workers", {}).values() if w.get("pid")]
        if pids:
            _kill(self.rng.choice(pids))
            self.tally.kills_worker += 1

    def kill_daemon(self) -> None:
        self.up.clear()
        _kill(self.daemon.pid)
        self.daemon.wait()
        self.tally.kills_daemon += 1
        time.sleep(self.rng.uniform(0.5, 3.0))
        self.start()

    def edit_good(self) -> None:
        self.good = _set(self.good, "sims", str(self.rng.choice(GOOD_SIMS)))  # the first sims: [selfplay]'s
        self.config.write_text(self.good)
        self.tally.edits_good += 1
        time.sleep(2.0)

    def edit_bad(self, kind: str | None = None) -> None:
        kind = kind or self.rng.choice(sorted(self.bad))
        self.config.write_bytes(self.bad[kind](self.good))
        self.tally.edits_bad[kind] = self.tally.edits_bad.get(kind, 0) + 1
        time.sleep(self.rng.uniform(2.0, 4.0))
        self.config.write_text(self.good)
        time.sleep(1.5)

    def delete_config(self) -> None:
        self.config.unlink()
        self.tally.config_deleted += 1
        time.sleep(self.rng.uniform(1.0, 4.0))
        self.config.write_text(self.good)
        time.sleep(1.5)

    def pause(self) -> None:
        if not _ask(self.db, "pause"):
            return
        self.tally.pauses += 1
        time.sleep(PAUSE_GRACE)
        landed = _last_game(self.db)  # games sent before the pause, stored since
        time.sleep(self.rng.uniform(3.0, 6.0))
        self.tally.games_while_paused += _last_game(self.db) - landed
        _ask(self.db, "resume")

    def fill_disk(self) -> None:
        if not self.tally.disk.startswith("tmpfs"):
            return
        self.echo(f"  on the disk before filling it: {_largest(self.where)}")
        filler = self.where / "filler"
        try:
            with open(filler, "wb") as f:
                while True:
                    f.write(b"\0" * (1 << 20))
                    f.flush()
        except OSError:
            pass  # full (even before the filler's first byte: the listing above says by what)
        self.tally.disk_full += 1
        time.sleep(self.rng.uniform(4.0, 8.0))
        filler.unlink()
        time.sleep(2.0)

    def send_frames(self) -> None:
        run = RunDir.of(self.db)
        context = zmq.Context()
        try:
            for kind, endpoint in ((zmq.PUSH, run.results), (zmq.DEALER, run.control)):
                socket = context.socket(kind)
                socket.setsockopt(zmq.LINGER, 500)
                socket.setsockopt(zmq.SNDTIMEO, 1000)
                socket.connect(endpoint)
                for frame in (b"\xc1garbage", json.dumps({"v": 99}).encode(), b""):
                    _send(socket, frame)
                    self.tally.frames_malformed += 1
                _send(socket, b"x" * (65 << 20))  # above every socket's size limit
                self.tally.frames_oversized += 1
                socket.close()
        finally:
            context.term()

    def actions(self) -> list:
        kills = [self.kill_worker, self.kill_daemon]
        return kills + [self.edit_good, self.edit_bad, self.pause, self.delete_config, self.fill_disk, self.send_frames]

    def step(self) -> None:
        """One of the above, chosen at random (the kills and edits most often)."""
        weights = {self.kill_worker: 3, self.edit_good: 2, self.edit_bad: 4}
        actions = [a for a in self.actions() for _ in range(weights.get(a, 1))]
        self._do(self.rng.choice(actions))

    def each_once(self) -> None:
        """Every action once, and every bad edit: a short, complete pass (the e2e test's)."""
        for action in self.actions():
            self._do(action)
        for kind in sorted(self.bad):
            self._do(lambda kind=kind: self.edit_bad(kind), f"edit_bad ({kind})")

    def _do(self, action, name: str = "") -> None:
        self.echo(f"{time.strftime('%H:%M:%S')} {name or action.__name__}")
        action()

    # -- the end -----------------------------------------------------------------------------

    def stop(self) -> dict:
        """Stops the daemon as a user does; the final checks."""
        self.done.set()
        self.config.write_text(self.good)
        time.sleep(3.0)  # the watcher looks every second
        stopped = _ask(self.db, "stop")
        code = self.daemon.wait(120) if stopped else None
        time.sleep(2.0)  # the workers see the stop and leave
        left = _processes_of(self.db)
        for pid in left:
            _kill(pid)
        with sqlite3.connect(self.db) as connection:
            counted = connection.execute("SELECT value FROM meta WHERE key = 'counter.games'").fetchone()
            last = connection.execute("SELECT seq FROM sqlite_sequence WHERE name = 'games'").fetchone()
            integrity = connection.execute("PRAGMA integrity_check").fetchone()[0]
            last_config = connection.execute("SELECT text, accepted FROM config_history ORDER BY id DESC").fetchone()
        return {
            "daemon_exit": code,
            "counted_games": int(float(counted[0])) if counted else 0,
            "last_game_id": last[0] if last else 0,
            "integrity": integrity,
            "processes_left": len(left),
            "good_config_in_force": last_config == (self.good, 1),
        }


def run(size: int = 3, minutes: float = 5.0, out=None, echo=print, seed: int = 0, **_) -> dict:
    """A daemon under `minutes` of chaos (0: every action once); the tally and the final checks."""
    where = Path(out) if out else Path(tempfile.mkdtemp(prefix="hexzd-chaos-"))
    where.mkdir(parents=True, exist_ok=True)
    disk = _mount_tmpfs(where / "disk")
    chaos = Chaos(where / "disk" if disk.startswith("tmpfs") else where, size, seed, echo)
    chaos.tally.disk = disk
    echo(f"hexzd bench chaos: {size}x{size} for {minutes:g} minutes in {chaos.where} ({disk})")
    prober = threading.Thread(target=chaos.probe, daemon=True)
    try:
        chaos.start()
        prober.start()
        deadline = time.monotonic() + 60 * minutes
        if not minutes:
            chaos.each_once()
        while time.monotonic() < deadline:
            time.sleep(chaos.rng.uniform(1.0, 4.0))
            chaos.step()
    finally:
        final = chaos.stop() if chaos.daemon else None
        if prober.is_alive():
            prober.join()
        if disk.startswith("tmpfs"):
            subprocess.run(["umount", "-l", str(where / "disk")], check=False)
    if final is None:
        raise RuntimeError(f"the daemon never started: see {chaos.where / 'daemon.out'}")
    checks = {
        "counters equal rows": final["counted_games"] == final["last_game_id"],
        "integrity_check ok": final["integrity"] == "ok",
        "no process left": final["processes_left"] == 0,
        "status within 2 s": chaos.tally.status_missed == 0,
        "no games while paused": chaos.tally.games_while_paused == 0,
        "stopped cleanly": final["daemon_exit"] == 0,
        "the last good edit in force": final["good_config_in_force"],
    }
    return {
        "size": size,
        "minutes": minutes,
        **asdict(chaos.tally),
        "final": final,
        "checks": checks,
        "ok": all(checks.values()),
        "where": str(chaos.where),
    }


def report(result: dict) -> None:
    t = result
    print(f"chaos {t['size']}x{t['size']}, {t['minutes']:g} minutes ({t['disk']}), in {t['where']}")
    print(
        f"  kills: {t['kills_worker']} workers, {t['kills_daemon']} daemons (restarts answered in "
        f"{max(t['restarts_waited'], default=0):.1f} s at most)"
    )
    print(
        f"  edits: {t['edits_good']} good, {sum(t['edits_bad'].values())} bad {t['edits_bad']}; "
        f"config.toml deleted {t['config_deleted']} times"
    )
    print(f"  pauses: {t['pauses']} ({t['games_while_paused']} games while paused); disk full: {t['disk_full']}")
    print(f"  frames: {t['frames_malformed']} malformed, {t['frames_oversized']} oversized")
    print(f"  status: {t['status_answers']} answered, {t['status_missed']} missed, slowest {t['status_slowest']:.3f} s")
    stall = f"{t['loop_stall_worst']:.2f} s, in {t['loop_stall_in']}" if t["loop_stall_worst"] else "none"
    print(f"  the daemon's worst loop stall: {stall}")
    print(f"  final: {t['final']}")
    for check, held in t["checks"].items():
        print(f"  {'ok  ' if held else 'FAIL'} {check}")


def _status(db: Path, timeout: float) -> dict | None:
    try:
        return ask(db, "status", timeout=timeout)
    except (DaemonError, zmq.ZMQError, OSError):
        return None


def _ask(db: Path, command: str) -> bool:
    try:
        return ask(db, command, timeout=STATUS_WITHIN) is not None
    except (DaemonError, zmq.ZMQError, OSError):
        return False


def _send(socket, frame: bytes) -> None:
    try:
        socket.send(frame)
    except zmq.ZMQError:
        pass  # the daemon is restarting, or dropped us for the size: both are fine


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _last_game(db: Path) -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as connection:
        row = connection.execute("SELECT MAX(id) FROM games").fetchone()
    return row[0] or 0


def _processes_of(db: Path) -> list[int]:
    """The pids of processes whose command line names the run's state file."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                command = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if str(db).encode() in command:
                found.append(int(entry.name))
    return found


def _largest(where: Path, count: int = 4) -> str:
    """The biggest files under `where`, for the log: what fills the run's disk."""
    files = []
    for path in where.rglob("*"):
        with contextlib.suppress(OSError):  # gone while we looked: the daemon's own churn
            if path.is_file():
                files.append((path.stat().st_size, path))
    total = sum(size for size, _ in files)
    top = ", ".join(f"{p.relative_to(where)} {size / 2**20:.1f} MB" for size, p in sorted(files, reverse=True)[:count])
    return f"{total / 2**20:.1f} MB in {len(files)} files ({top})"


def _mount_tmpfs(where: Path, megabytes: int = 256) -> str:
    """Mounts a small tmpfs for the run, so that its disk can be filled; or says why not."""
    where.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return "no disk-full episodes: mounting a tmpfs needs root"
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={megabytes}m,mode=0700", "tmpfs", str(where)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        return f"no disk-full episodes: cannot mount a tmpfs ({done.stderr.strip()})"
    return f"tmpfs of {megabytes} MB"
