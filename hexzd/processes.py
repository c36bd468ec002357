"""Child processes and stop signals, for the commands that run other commands.

A child starts in a session of its own (its own process group), so that a
Ctrl-C in the terminal reaches the parent alone, which decides what the child
gets; a stop then signals the child's whole group, whatever it started
there. Nothing here knows hexzd: it imports nothing of it, and sits at the
bottom of the layers.
"""

import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)  # what asks a long command to stop: Ctrl-C, `kill`


def start(command: list[str], **popen) -> subprocess.Popen:
    """Starts `command` in a new session; popen: subprocess.Popen's other arguments."""
    return subprocess.Popen(command, start_new_session=True, **popen)


def signal_group(process: subprocess.Popen, sig: int) -> None:
    """`sig` to the child's process group: the child and whatever it started there; none if all are gone."""
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        pass


def stop(process: subprocess.Popen, grace: float, sig: int = signal.SIGINT) -> int:
    """`sig` to the child's group, SIGKILL to the group if the child has not exited
    within `grace` seconds; its return code once it has."""
    signal_group(process, sig)
    try:
        return process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        return kill(process)


def kill(process: subprocess.Popen) -> int:
    """SIGKILL to the child's group; its return code once it has exited."""
    signal_group(process, signal.SIGKILL)
    return process.wait()


def run(command: list[str], budget: float, grace: float, **popen) -> tuple[int, bool]:
    """Runs `command` (started as `start` does) for at most `budget` seconds: SIGINT to its
    group at the budget less `grace` (a second at the least), SIGKILL at the budget.
    Returns (its return code, whether the budget ran out)."""
    process = start(command, **popen)
    try:
        return process.wait(timeout=max(1.0, budget - grace)), False
    except subprocess.TimeoutExpired:
        return stop(process, min(grace, budget)), True


@contextmanager
def on_stop_signals(handler: Callable[[int, object], None]) -> Iterator[None]:
    """handler(signal number, frame) for SIGINT and SIGTERM within the block; the handlers
    before it are back afterwards, however the block ends."""
    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, before in previous.items():
            signal.signal(sig, before)
