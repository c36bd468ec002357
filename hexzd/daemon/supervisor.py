"""The daemon's workers: K self-play processes per GPU, a trainer, a duel worker, and with
`[cluster] address` the cluster worker (hexzd.daemon.cluster), which alone imports Ray.

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
MAX_BACKOFF), reset once it has run for MAX_BACKOFF seconds. A worker
started while the daemon is paused starts paused (`--paused`).

The daemon's own long-running tasks (this supervisor's loop, ingest,
control, the config watch, the tick, the GPU meter) are supervised the same
way, by Loops: a loop that raises is told as an error event with its
traceback, and run again after a doubling backoff (LOOP_BACKOFF up to
MAX_LOOP_BACKOFF); LOOP_FAILURES failures of one loop within LOOP_WINDOW
seconds stop the daemon, with a non-zero exit code and the reason. A daemon
whose loop died cannot look alive while doing nothing.
"""

import asyncio
import contextlib
import os
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from hexzd.config import Config
from hexzd.daemon.rundir import RunDir, rotate

MAX_BACKOFF = 60.0
LOOP_BACKOFF = 0.5  # seconds before a failed daemon loop runs again; doubles up to MAX_LOOP_BACKOFF
MAX_LOOP_BACKOFF = 30.0  # ...and resets once the loop has run this long
LOOP_FAILURES = 5  # this many failures of one loop within LOOP_WINDOW seconds stop the daemon
LOOP_WINDOW = 300.0
# Tests only: loops that fail on purpose, "ticks" (every run) or "ticks:1" (the first run), comma-separated.
FAIL_LOOPS = "HEXZD_TEST_FAIL_LOOPS"


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
    """Keeps the configured workers running; `warn(message)` reports a restart.

    paused(): whether a worker starts paused; exited(worker, code): told of each exit before
    the restart; each_round(): awaited every round of the loop (twice a second)."""

    def __init__(
        self,
        db,
        run_dir: RunDir,
        config: Callable[[], Config],
        warn: Callable[[str], Awaitable[None]],
        paused: Callable[[], bool] = lambda: False,
        exited: Callable[[Worker, int], Awaitable[None]] | None = None,
        each_round: Callable[[], Awaitable[None]] | None = None,
    ):
        self.db, self.run_dir, self.config, self.warn = db, run_dir, config, warn
        self.paused, self.exited, self.each_round = paused, exited, each_round
        self.workers: dict[str, Worker] = {}
        self.gpus: list[str] = []  # device.gpus, a fixed setting, as the daemon resolved it at start

    def wanted(self) -> list[Worker]:
        c, gpus = self.config(), self.gpus
        per = [(k, gpu) for gpu in gpus or [None] for k in range(c.selfplay.workers)]
        wanted = [Worker(f"selfplay-{i}", "selfplay", i, gpu=gpu) for i, (_, gpu) in enumerate(per)]
        first, last = (gpus[0], gpus[-1]) if gpus else (None, None)
        wanted += [Worker("trainer", "trainer", 0, gpu=first), Worker("duel", "duel", 0, gpu=last)]
        if c.cluster.address:  # the Ray driver (hexzd.daemon.cluster); no GPU of this machine's
            wanted.append(Worker("cluster", "cluster", 0, gpu=""))
        return wanted

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
            if self.each_round is not None:
                await self.each_round()
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
            if self.exited is not None:
                await self.exited(worker, code)
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
                *(["--paused"] if self.paused() else []),
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


class Loops:
    """The daemon's long-running tasks, each supervised as a worker is (see the module's doc).

    report(name, error, backoff) tells of a failure: backoff the seconds before the loop runs
    again, None when it is not run again; give_up(reason) stops the daemon."""

    def __init__(
        self,
        report: Callable[[str, BaseException, float | None], Awaitable[None]],
        give_up: Callable[[str], None],
    ):
        self.report, self.give_up = report, give_up
        self.tasks: dict[str, asyncio.Task] = {}
        self.failing = failing_on_purpose(os.environ.get(FAIL_LOOPS, ""))

    def start(self, name: str, loop: Callable[[], Awaitable[None]]) -> None:
        """Runs loop() as the task `name` until it returns (it has nothing more to do), run
        again after each failure."""
        self.tasks[name] = asyncio.create_task(self._supervise(name, loop), name=name)

    def cancel(self, name: str) -> None:
        self.tasks[name].cancel()

    async def _supervise(self, name: str, loop: Callable[[], Awaitable[None]]) -> None:
        failures: list[float] = []
        backoff = 0.0
        while True:
            started = time.monotonic()
            try:
                await self._injected(name)
                await loop()
                return
            except Exception as e:  # a CancelledError (the daemon stops) goes through
                now = time.monotonic()
                failures = [t for t in failures if now - t < LOOP_WINDOW] + [now]
                healthy = now - started > MAX_LOOP_BACKOFF
                backoff = LOOP_BACKOFF if healthy or not backoff else min(MAX_LOOP_BACKOFF, 2 * backoff)
                if len(failures) >= LOOP_FAILURES:
                    await self._report(name, e, None)
                    self.give_up(f"the {name} loop failed {len(failures)} times within {LOOP_WINDOW:g} s: {e!r}")
                    return
                await self._report(name, e, backoff)
                await asyncio.sleep(backoff)

    async def _report(self, name: str, error: BaseException, backoff: float | None) -> None:
        """The report, which must not fail in turn: if it does, both go to the log (stderr)."""
        try:
            await self.report(name, error, backoff)
        except Exception as e:
            with contextlib.suppress(OSError, ValueError):
                print(f"error: {name}: {describe(error)}\n(reporting it failed: {e!r})", file=sys.stderr, flush=True)

    async def _injected(self, name: str) -> None:
        """Raises here, in tests that ask for it (FAIL_LOOPS), before the loop runs."""
        runs = self.failing.get(name)
        if runs is None or runs == 0:
            return
        self.failing[name] = runs - 1
        await asyncio.sleep(0.1)
        raise RuntimeError(f"{name} fails on purpose ({FAIL_LOOPS})")


def failing_on_purpose(setting: str) -> dict[str, int]:
    """FAIL_LOOPS read: loop name -> runs that fail (-1: every one)."""
    failing = {}
    for item in filter(None, (part.strip() for part in setting.split(","))):
        name, _, runs = item.partition(":")
        failing[name] = int(runs) if runs else -1
    return failing


def describe(error: BaseException) -> str:
    """An exception with its traceback, as an event's message carries it."""
    return "".join(traceback.format_exception(error)).rstrip()
