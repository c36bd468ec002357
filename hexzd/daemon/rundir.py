"""The run directory beside a state file: sockets, lock, logs, current config.

For a state file `run.sqlite` it is `run.sqlite.d/`:
    daemon.lock   held (flock) by the running daemon; the kernel frees it on kill -9
    results.ipc   PULL: workers push results to the daemon
    updates.ipc   PUB: the daemon publishes best model, config, pause, stop
    control.ipc   ROUTER: `hexzd status|stop|pause|resume` and the dashboard
    config.json   the config in force, which a (re)starting worker reads
    *.log         the daemon's and each worker's log
"""

import fcntl
import json
import os
from dataclasses import dataclass
from pathlib import Path

IPC_PATH_MAX = 100  # sockaddr_un holds 104-108 bytes, depending on the OS


@dataclass(frozen=True)
class RunDir:
    path: Path

    @classmethod
    def of(cls, db) -> "RunDir":
        db = Path(db).resolve()
        return cls(db.parent / f"{db.name}.d")

    def endpoint(self, name: str) -> str:
        """ipc://.../name.ipc, or a clear error when the path is too long for a socket."""
        path = self.path / f"{name}.ipc"
        if len(str(path)) > IPC_PATH_MAX:
            raise ValueError(
                f"the socket path {path} is longer than {IPC_PATH_MAX} characters; "
                f"put the state file in a shorter directory"
            )
        return f"ipc://{path}"

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

    def write_config(self, config: dict) -> None:
        """Atomically: a worker starting at any moment reads a whole file."""
        tmp = self.path / "config.json.tmp"
        tmp.write_text(json.dumps(config))
        os.replace(tmp, self.path / "config.json")

    def read_config(self) -> dict:
        return json.loads((self.path / "config.json").read_text())

    def lock(self):
        """Takes the daemon lock; returns the open file that holds it, or raises RuntimeError."""
        self.path.mkdir(parents=True, exist_ok=True)
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
