"""A real `hexzd start --headless` process in a temporary directory, for the daemon tests."""

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from hexzd.config import default_toml

# Small settings so that the first snapshot, duel and promotion come within seconds.
QUICK = {
    "[train]": ["min_positions = 300", "snapshot_every = 40", "batch_size = 64"],
    "[duel]": ["max_pairs = 24"],
}


def config_text(edits: dict[str, list[str]] | None = None) -> str:
    """default_toml() with `key = value` lines replaced within their sections."""
    lines = default_toml().splitlines()
    section = None
    for i, line in enumerate(lines):
        if line.startswith("["):
            section = line.split("]")[0] + "]"
        for edit in (edits or {}).get(section, []):
            key = edit.split("=")[0].strip()
            if line.split("=")[0].strip() == key:
                lines[i] = f"{edit:<28} # edited by the test"
    return "\n".join(lines) + "\n"


class DaemonRun:
    def __init__(self, path: Path, edits=None, duration: str | None = None):
        self.path = Path(path)
        self.db = self.path / "run.sqlite"
        self.config = self.path / "config.toml"
        if not self.config.exists():
            self.config.write_text(config_text(edits))
        self.duration = duration
        self.process = None
        self.output = self.path / "daemon.out"

    def start(self) -> "DaemonRun":
        args = [
            sys.executable,
            "-m",
            "hexzd",
            "start",
            "--headless",
            "--db",
            str(self.db),
            "--config",
            str(self.config),
        ] + (["--for", self.duration] if self.duration else [])
        with open(self.output, "ab") as out:  # the child keeps its own copy of the descriptor
            self.process = subprocess.Popen(args, cwd=self.path, stdout=out, stderr=subprocess.STDOUT)
        self.wait_for(lambda: self.control_answers(), 60, "the daemon's control socket")
        return self

    def hexzd(self, *args, timeout=30) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "hexzd", *args, "--db", str(self.db)],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.path,
        )

    def control_answers(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"the daemon exited: {self.output.read_text()}")
        return self.hexzd("status", "--json", timeout=30).returncode == 0

    def query(self, sql: str, params=()) -> list:
        uri = self.db.resolve().as_uri() + "?mode=ro"
        with sqlite3.connect(uri, uri=True, timeout=30) as connection:
            return connection.execute(sql, params).fetchall()

    def count(self, table: str, where: str = "1") -> int:
        return self.query(f"SELECT COUNT(*) FROM {table} WHERE {where}")[0][0]

    def wait_for(self, condition, seconds: float, what: str) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if condition():
                return
            time.sleep(0.5)
        raise AssertionError(f"waited {seconds} s for {what}; daemon output:\n{self.output.read_text()[-3000:]}")

    def worker_pids(self) -> dict[str, int]:
        import json

        status = json.loads(self.hexzd("status", "--json").stdout)
        return {name: w["pid"] for name, w in status["workers"].items() if w["alive"]}

    def kill9(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self, timeout: float = 60) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def cleanup(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purpose
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return True


def ray_loaded(pid: int) -> bool:
    """Whether process `pid` has imported Ray: its core library (_raylet) is mapped into it."""
    return "_raylet" in Path(f"/proc/{pid}/maps").read_text()
