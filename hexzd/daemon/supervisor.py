"""The daemon's workers: K self-play processes per GPU, a trainer and a duel worker.

With GPUs (`device.gpus`, default all that CUDA would see), each GPU gets
`selfplay.workers` self-play processes, each seeing that GPU alone
(CUDA_VISIBLE_DEVICES) and feeding it through its own inference service.
The trainer takes the first GPU and the duel worker the last: the trainer's
steps are small next to self-play's inference, and a GPU of its own would
sit idle most of the time. Without a GPU, `selfplay.workers` processes share
the CPU.

Each is `python -m hexzd.daemon.workers KIND`, in a session of its own (so
that Ctrl-C reaches the daemon only, which then stops them), logging to
the run directory (rotated past `[retention] log_mb`). A worker that exits
is restarted with a doubling backoff (from `daemon.restart_backoff` up to
MAX_BACKOFF), reset once it has run for MAX_BACKOFF seconds.
"""

import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from hexzd.config import Config
from hexzd.daemon.rundir import RunDir, rotate

MAX_BACKOFF = 60.0


def visible_gpus() -> list[str]:
    """The CUDA devices this process may use, as CUDA_VISIBLE_DEVICES entries; [] without NVIDIA GPUs.

    Counted through NVML (no torch in the daemon); without NVML, CUDA_VISIBLE_DEVICES
    alone says, and unset it means none.
    """
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [item.strip() for item in env.split(",") if item.strip() and item.strip() != "-1"]
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            return [str(i) for i in range(pynvml.nvmlDeviceGetCount())]
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # no pynvml, no driver: no GPU to spread over
        return []


def chosen_gpus(setting) -> list[str]:
    """`device.gpus` ("all" or indices into the visible GPUs) as CUDA_VISIBLE_DEVICES entries."""
    visible = visible_gpus()
    if setting == "all":
        return visible
    missing = [i for i in setting if i >= len(visible)]
    if missing:
        raise ValueError(f"device.gpus names GPU {missing[0]}, but {len(visible)} are visible")
    return [visible[i] for i in setting]


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
    gpu: str | None = None  # the CUDA device it sees alone (CUDA_VISIBLE_DEVICES); None: what the daemon sees

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None


class Supervisor:
    """Keeps the configured workers running; `warn(message)` reports a restart."""

    def __init__(self, db, run_dir: RunDir, config: Callable[[], Config], warn: Callable[[str], Awaitable[None]]):
        self.db, self.run_dir, self.config, self.warn = db, run_dir, config, warn
        self.workers: dict[str, Worker] = {}
        self.gpus: list[str] = []  # device.gpus, a fixed setting, as the daemon resolved it at start

    def wanted(self) -> list[Worker]:
        c, gpus = self.config(), self.gpus
        per = [(k, gpu) for gpu in gpus or [None] for k in range(c.selfplay.workers)]
        wanted = [Worker(f"selfplay-{i}", "selfplay", i, gpu=gpu) for i, (_, gpu) in enumerate(per)]
        first, last = (gpus[0], gpus[-1]) if gpus else (None, None)
        return wanted + [Worker("trainer", "trainer", 0, gpu=first), Worker("duel", "duel", 0, gpu=last)]

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
            "NUMBA_NUM_THREADS": "1",  # the kernels run serial; self-play threads run them side by side
            "PYTHONUNBUFFERED": "1",
        } | ({"CUDA_VISIBLE_DEVICES": worker.gpu} if worker.gpu is not None else {})

    async def _start(self, worker: Worker) -> None:
        keep = self.config().retention  # past its size, the log is rotated (each tick too: hexzd.daemon.ticks)
        rotate(self.run_dir.log(worker.name), int(keep.log_mb * 1e6), keep.log_files)
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
