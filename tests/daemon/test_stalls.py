"""The event loop's watcher: a real loop, blocked for real by a callback that sleeps."""

import asyncio
import time

from hexzd.daemon import stalls
from hexzd.daemon.stalls import Stalls


def blocks_the_loop(seconds: float) -> None:
    time.sleep(seconds)  # what a blocking call in a daemon's callback does to its loop


def watched(scenario) -> tuple[Stalls, list]:
    """Runs scenario() on a loop that Stalls watches; the watcher and its events."""
    told = []

    async def tell(level: str, message: str) -> None:
        told.append((level, message))

    async def main():
        watcher = Stalls(tell)
        watcher.start()
        beat = asyncio.create_task(watcher.run())
        try:
            await asyncio.sleep(0.3)
            await scenario()
            await asyncio.sleep(0.3)  # the beat after the stall says it
        finally:
            beat.cancel()
            watcher.close()
        return watcher

    return asyncio.run(main()), told


def test_a_callback_that_blocks_the_loop_is_caught_with_its_place():
    async def scenario():
        blocks_the_loop(1.5)

    watcher, told = watched(scenario)
    assert watcher.count == 1 and 1.3 <= watcher.worst <= 3.0
    assert watcher.worst_in.startswith("test_stalls.py:11 blocks_the_loop < test_stalls.py:")
    ((level, message),) = told
    assert level == "warning" and message.startswith("the daemon's loop stalled 1.") and "blocks_the_loop" in message
    assert watcher.status() == {"count": 1, "worst_seconds": round(watcher.worst, 3), "worst_in": watcher.worst_in}


def test_short_stalls_are_counted_and_not_told():
    async def scenario():
        for _ in range(2):
            blocks_the_loop(stalls.STALL + 0.2)  # a stall, under WARN
            await asyncio.sleep(0.3)

    watcher, told = watched(scenario)
    assert watcher.count == 2 and stalls.STALL <= watcher.worst < stalls.WARN and told == []


def test_a_loop_that_awaits_is_not_stalled():
    async def scenario():
        for _ in range(10):
            await asyncio.sleep(0.1)

    watcher, told = watched(scenario)
    assert watcher.count == 0 and watcher.worst_in == "" and told == []
