"""The daemon's workers: K self-play processes, a trainer and a duel worker.

Each is `python -m hexzd.daemon.workers KIND`, in a session of its own (so
that Ctrl-C reaches the daemon only, which then stops them), logging to
the run directory. A worker that exits is restarted with a doubling backoff
(from `daemon.restart_backoff` up to MAX_BACKOFF), reset once it has run
for MAX_BACKOFF seconds.
"""

import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from hexzd.config import Config
from hexzd.daemon.rundir import RunDir

MAX_BACKOFF = 60.0


@dataclass
class Worker:
    """One supervised worker process."""

    name: str
    kind: str
    seed: int
    process: asyncio.subprocess.Process | None = None
    started: float = 0.0
    restarts: int = 0
    backoff: float = 0.0
    not_before: float = 0.0  # monotonic time before which it is not restarted

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None


class Supervisor:
    """Keeps the configured workers running; `warn(message)` reports a restart."""

    def __init__(self, db, run_dir: RunDir, config: Callable[[], Config], warn: Callable[[str], Awaitable[None]]):
        self.db, self.run_dir, self.config, self.warn = db, run_dir, config, warn
        self.workers: dict[str, Worker] = {}

    def wanted(self) -> list[Worker]:
        wanted = [Worker(f"selfplay-{k}", "selfplay", k) for k in range(self.config().selfplay.workers)]
        return wanted + [Worker("trainer", "trainer", 0), Worker("duel", "duel", 0)]

    async def run(self) -> None:
        while True:
            wanted = {w.name: w for w in self.wanted()}
            for name in list(self.workers):
                if name not in wanted and self.workers[name].alive:  # fewer workers configured
                    self.workers[name].process.terminate()
                if name not in wanted and not self.workers[name].alive:
                    del self.workers[name]
            for name, fresh in wanted.items():
                await self._watch(self.workers.setdefault(name, fresh))
            await asyncio.sleep(0.5)

    async def _watch(self, worker: Worker) -> None:
        now = time.monotonic()
        if worker.process is not None and worker.process.returncode is not None:
            code = worker.process.returncode
            worker.process = None
            worker.restarts += 1
            healthy = now - worker.started > MAX_BACKOFF
            worker.backoff = (
                self.config().daemon.restart_backoff
                if healthy or not worker.backoff
                else min(MAX_BACKOFF, 2 * worker.backoff)
            )
            worker.not_before = now + worker.backoff
            await self.warn(
                f"{worker.name} exited with code {code}; "
                f"restarting in {worker.backoff:g} s (see {self.run_dir.log(worker.name)})"
            )
        if worker.process is None and now >= worker.not_before:
            await self._start(worker)

    def _environment(self, worker: Worker) -> dict:
        c = self.config()
        threads = c.device.trainer_threads if worker.kind == "trainer" else c.device.threads
        return {
            **os.environ,
            "OMP_NUM_THREADS": str(threads),
            "MKL_NUM_THREADS": str(threads),
            "NUMBA_NUM_THREADS": str(c.selfplay.numba_threads),
            "PYTHONUNBUFFERED": "1",
        }

    async def _start(self, worker: Worker) -> None:
        with open(self.run_dir.log(worker.name), "ab") as logfile:
            worker.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "hexzd.daemon.workers",
                worker.kind,
                "--db",
                str(self.db),
                "--name",
                worker.name,
                "--seed",
                str(worker.seed + 100 * worker.restarts),
                "--daemon-pid",
                str(os.getpid()),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=logfile,
                stderr=logfile,
                env=self._environment(worker),
                start_new_session=True,  # Ctrl-C reaches the daemon only; it stops the workers
            )
        worker.started = time.monotonic()

    def any_alive(self) -> bool:
        return any(w.alive for w in self.workers.values())

    def kill(self) -> None:
        """Kills every worker still alive (the second Ctrl-C, or past the stop grace)."""
        for worker in self.workers.values():
            if worker.alive:
                worker.process.kill()

    async def reap(self) -> None:
        for worker in self.workers.values():
            if worker.process is not None:
                await worker.process.wait()

    def status(self) -> dict:
        return {
            w.name: {"pid": w.process.pid if w.alive else None, "alive": w.alive, "restarts": w.restarts}
            for w in self.workers.values()
        }
