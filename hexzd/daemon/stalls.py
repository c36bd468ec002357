"""The daemon's event loop, watched from a thread: where a slow answer comes from.

Everything the daemon does runs on one asyncio loop, so one callback that blocks
it (or a machine so busy that the daemon gets no core) delays every answer,
`hexzd status` included. The loop beats every BEAT seconds. A thread looks as
often, and when the loop has not beaten for STALL seconds it takes the loop
thread's stack while the stall lasts: the place that blocks it. A thread, since
a task cannot run while the loop is blocked. Once the loop beats again the
stall's length is known: `status` counts every stall and keeps the worst with
its place, and one past WARN seconds is an `events` warning (at most one a
minute). A stall "in selectors.py ... select" is a loop that was idle but got
no CPU: the machine, not the daemon.
"""

import asyncio
import sys
import threading
import time
import traceback
from collections.abc import Awaitable, Callable

BEAT = 0.1  # seconds between the loop's beats, and between the thread's looks
STALL = 0.5  # seconds without a beat that count as a stall
WARN = 1.0  # a stall this long is an events warning (a status answer is due within 2 s)
WARN_EVERY = 60.0  # seconds: at most one warning per this


class Stalls:
    def __init__(self, tell: Callable[[str, str], Awaitable[None]]):
        """tell(level, message): writes an event."""
        self.tell = tell
        self.count, self.worst, self.worst_in = 0, 0.0, ""
        self._beat = time.monotonic()
        self._caught = (0.0, "")  # (the beat the stall came after, the stack the thread caught in it)
        self._warned = float("-inf")
        self._loop_thread = 0  # set by start()
        self._closed = threading.Event()

    def start(self) -> None:
        """The watching thread; call from the loop's thread."""
        self._loop_thread = threading.get_ident()
        threading.Thread(target=self._watch, name="hexzd-stalls", daemon=True).start()

    def close(self) -> None:
        self._closed.set()

    def status(self) -> dict:
        return {"count": self.count, "worst_seconds": round(self.worst, 3), "worst_in": self.worst_in}

    async def run(self) -> None:
        """The beat: a supervised loop of the daemon."""
        self._beat = time.monotonic()
        while True:
            await asyncio.sleep(BEAT)
            now, beat = time.monotonic(), self._beat
            self._beat = now
            stalled = now - beat - BEAT
            if stalled >= STALL:
                caught_after, place = self._caught
                await self._stalled(stalled, place if caught_after == beat else "(not caught: no CPU for the watcher)")
                self._beat = time.monotonic()  # the wait to tell it is not the loop's

    async def _stalled(self, seconds: float, where: str) -> None:
        self.count += 1
        if seconds > self.worst:
            self.worst, self.worst_in = seconds, where
        if seconds >= WARN and time.monotonic() - self._warned >= WARN_EVERY:
            self._warned = time.monotonic()
            await self.tell("warning", f"the daemon's loop stalled {seconds:.1f} s, in {where}")

    def _watch(self) -> None:
        while not self._closed.wait(BEAT):
            beat = self._beat
            if self._caught[0] != beat and time.monotonic() - beat > STALL:
                frame = sys._current_frames().get(self._loop_thread)
                self._caught = (beat, where(frame) if frame is not None else "")


def where(frame, depth: int = 3) -> str:
    """The innermost `depth` frames of a stack, innermost first: "file.py:12 f < file.py:30 g"."""
    frames = traceback.extract_stack(frame)[-depth:]
    return " < ".join(f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno} {f.name}" for f in reversed(frames))
