"""The run directory beside a state file: sockets, lock, logs, current config.

For a state file `run.sqlite` it is `run.sqlite.d/`:
    daemon.lock   held (flock) by the running daemon; the kernel frees it on kill -9
    results.ipc   PULL: workers push results to the daemon
    updates.ipc   PUB: the daemon publishes best model, config, pause, stop
    control.ipc   ROUTER: `hexzd status|stop|pause|resume` and the dashboard
    config.json   the config in force, which a (re)starting worker reads
    *.log         the daemon's and each worker's log, *.log.1 ... the rotated ones

Only its user may write in it: it is made 0700, the sockets are 0600, and a
directory that another user owns or that group or others can write is
refused, by the daemon and by a worker reading config.json (which names the
command lines of `ratings.engines`, run by the duel worker).

Every socket has a size limit (ZMQ_MAXMSGSIZE): a larger frame drops its
sender's connection before it is read. The results' limit follows the run's
network (`message_limit`): the largest message is a snapshot, its weights and
its checkpoint with the optimizer's state.
"""

import fcntl
import json
import os
import shutil
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

from hexzd.config import Config

# The bytes of a UNIX socket's path, its NUL not counted: sockaddr_un's sun_path holds 108
# bytes on Linux, 104 on macOS and the BSDs.
IPC_PATH_MAX = 107 if sys.platform.startswith("linux") else 103
CONTROL_LIMIT = 1 << 20  # a request, or an update to the workers (a config): kilobytes at most
REPLY_LIMIT = 64 << 20  # the daemon's status, with its workers and the game in progress: kilobytes
SOCKETS = ("results", "updates", "control")  # the run directory's ipc sockets, each NAME.ipc


class UnsafeRunDir(RuntimeError):
    """A run directory (or its config.json) that someone else could write."""


class SocketPathTooLong(ValueError):
    """A socket of the run directory whose path the OS cannot bind: the state file's folder is too deep."""


def check_private(path: Path, what: str = "the run directory", info: os.stat_result | None = None) -> None:
    """Raises UnsafeRunDir unless `path` (its `info`, if given) is owned by this user and not
    writable by group or others."""
    info = info or os.stat(path)
    if info.st_uid != os.getuid():
        raise UnsafeRunDir(f"{what} {path} belongs to another user (uid {info.st_uid}); refusing to use it")
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UnsafeRunDir(
            f"{what} {path} can be written by group or others (mode {stat.S_IMODE(info.st_mode):o});"
            f" `chmod go-w {path}` if that is your doing"
        )


def message_limit(config: Config) -> int:
    """Bytes a result may have: twice the largest snapshot the run's network makes, and 16 MiB more.

    A snapshot message holds the weights and the checkpoint (the weights again,
    and AdamW's two moments: four copies), each float32; the float count is the
    network's parameters and batch-norm buffers (hexzd.nn.net.HexNet), counted
    here without torch: a 3x3 stem from 4 planes, `blocks` residual blocks of two
    3x3 convolutions, a policy head (2 channels, then n*n to n*n) and a value
    head (1 channel, then n*n to channels to 1). The margin holds pickling's
    overhead, and the small messages (a game, a match's end) fit in it alone.
    """
    n, blocks, channels = config.game.board_size, int(config.model.blocks), int(config.model.channels)
    convolutions = 9 * channels * (4 + 2 * blocks * channels)
    batch_norms = 4 * channels * (1 + 2 * blocks) + 4 * 3 + 2 * blocks + 3
    heads = 2 * channels + 2 * n**4 + n * n + channels + n * n * channels + 2 * channels + 1
    floats = convolutions + batch_norms + heads
    return 2 * 4 * 4 * floats + (16 << 20)


def limit(socket, size: int) -> None:
    """Frames over `size` bytes drop the connection that sent them (set before bind or connect)."""
    import zmq

    socket.setsockopt(zmq.MAXMSGSIZE, size)


def rotate(path: Path, max_bytes: int, keep: int, follows: bool = False) -> bool:
    """Rotates a log over `max_bytes`: path.1 .. path.<keep> hold the older ones; True if it did.

    follows: its writer follows the name (the daemon and its workers, with
    Follow), so the file is renamed to path.1 and a new one started: a line
    written before the writer reopens lands in path.1, none is lost or cut.
    Other writers (an outside engine's stderr) keep the file open in append
    mode and cannot be told, so it is copied to path.1 and truncated in place
    (logrotate's copytruncate): each writer's next line lands at the new end,
    and a line written during the copy can be lost; none is cut in two.
    """
    try:
        if path.stat().st_size <= max_bytes:
            return False
    except FileNotFoundError:
        return False
    for k in range(keep, 0, -1):
        older = path.with_name(f"{path.name}.{k}")
        if k == keep:
            older.unlink(missing_ok=True)
        elif older.exists():
            os.replace(older, path.with_name(f"{path.name}.{k + 1}"))
    if keep > 0 and follows:
        os.replace(path, path.with_name(f"{path.name}.1"))
        path.touch()
        return True
    if keep > 0:
        with open(path, "rb") as source, open(path.with_name(f"{path.name}.1"), "wb") as copy:
            shutil.copyfileobj(source, copy)
    os.truncate(path, 0)
    return True


class Follow:
    """A process whose stdout and stderr are its log: called now and then, it reopens them
    on the log's name once rotate(follows=True) renamed the file under them. A process
    whose stdout is something else (a terminal, a pipe) is left alone."""

    def __init__(self, log: Path):
        self.log = log
        self.file = _identity(log) if _identity(log) == _identity(1) else None

    def __call__(self) -> None:
        if self.file is None or _identity(self.log) == self.file:
            return
        sys.stdout.flush()
        sys.stderr.flush()
        fd = os.open(self.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        self.file = _identity(1)


def _identity(file) -> tuple[int, int] | None:
    """(device, inode) of a path or a file descriptor; None for a path that is not there."""
    try:
        s = os.fstat(file) if isinstance(file, int) else os.stat(file)
    except FileNotFoundError:
        return None
    return s.st_dev, s.st_ino


@dataclass(frozen=True)
class RunDir:
    path: Path

    @classmethod
    def of(cls, db) -> "RunDir":
        db = Path(db).resolve()
        return cls(db.parent / f"{db.name}.d")

    def endpoint(self, name: str) -> str:
        """ipc://.../name.ipc; SocketPathTooLong when the OS could not bind it.

        The limit is in bytes (a path's UTF-8 bytes, as the kernel takes it), and
        the path is the resolved one: a symbolic link to a short folder does not
        shorten it (RunDir.of resolves the state file's path)."""
        path = self.path / f"{name}.ipc"
        size = len(os.fsencode(path))
        if size > IPC_PATH_MAX:
            raise SocketPathTooLong(
                f"the socket path {path} is {size} bytes, over the {IPC_PATH_MAX} a UNIX socket's path may have: "
                "put the state file in a folder with a shorter path"
            )
        return f"ipc://{path}"

    def check_sockets(self) -> None:
        """Raises SocketPathTooLong unless every socket of the run could be bound: said before anything starts."""
        for name in SOCKETS:
            self.endpoint(name)

    @property
    def results(self) -> str:
        return self.endpoint("results")

    @property
    def updates(self) -> str:
        return self.endpoint("updates")

    @property
    def control(self) -> str:
        return self.endpoint("control")

    def log(self, name: str) -> Path:
        return self.path / f"{name}.log"

    def logs(self) -> list[Path]:
        """The logs being written: the daemon's, each worker's, each outside engine's."""
        return sorted(self.path.glob("*.log"))

    def make(self) -> "RunDir":
        """Creates the directory 0700, or checks the one there: UnsafeRunDir if another user
        owns it or group or others can write it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.path.mkdir(mode=0o700)
        except FileExistsError:
            pass
        check_private(self.path)
        return self

    def private(self, endpoint: str) -> None:
        """Makes a bound ipc socket's file 0600 (the directory, 0700, already keeps others out)."""
        os.chmod(endpoint.removeprefix("ipc://"), 0o600)

    def write_config(self, config: dict) -> None:
        """Atomically: a worker starting at any moment reads a whole file."""
        tmp = self.path / "config.json.tmp"
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(json.dumps(config))
        os.replace(tmp, self.path / "config.json")

    def read_config(self) -> dict:
        """The config in force; UnsafeRunDir where someone else could have written it: it names
        the outside engines' command lines, which the duel worker runs."""
        check_private(self.path)
        path = self.path / "config.json"
        with open(path) as file:
            check_private(path, "the config file", os.fstat(file.fileno()))
            return json.loads(file.read())

    def lock(self):
        """Takes the daemon lock; returns the open file that holds it, or raises RuntimeError."""
        self.make()
        handle = open(self.path / "daemon.lock", "a+")  # noqa: SIM115 (held open: it is the lock)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            pid = handle.read().strip() or "?"
            handle.close()
            raise RuntimeError(
                f"another hexzd daemon (pid {pid}) is running on this state file; use `hexzd status` or `hexzd stop`"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        return handle
