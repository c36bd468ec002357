"""The HTP client against engines that misbehave: small real processes, each checked to be gone after.

An engine that floods its output, writes a line without end, closes its
output but lives on, or never answers must fail with its reason, in bounded
time and memory, and leave no process behind: killed and reaped. So must the
engine of a match whose other engine cannot start.
"""

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from hexzd.evaluation import engines
from hexzd.evaluation.engines import EngineFailure, EnginePlayer, HtpClient
from hexzd.game.rules import Games
from hexzd.protocols.referee import referee_match

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]  # real processes: `pytest -m e2e`

ANSWER = "print('= ', end='\\n\\n', flush=True)"


def engine(tmp_path: Path, name: str, on_command: str, after_input: str = "") -> str:
    """The command line of a Python engine that runs `on_command` for each line of input (`line`),
    then `after_input` once its input has ended."""
    script = tmp_path / f"{name}.py"
    script.write_text(
        "import os, sys, time\n"
        f"open({str(tmp_path / (name + '.pid'))!r}, 'w').write(str(os.getpid()))\n"
        "for line in sys.stdin:\n"
        f"    {on_command}\n"
        f"{after_input}\n"
    )
    return f"{sys.executable} {script}"


def pid_of(tmp_path: Path, name: str) -> int:
    path = tmp_path / f"{name}.pid"
    for _ in range(200):
        if path.exists() and path.read_text():
            return int(path.read_text())
        time.sleep(0.05)
    raise AssertionError(f"{name} never started")


def gone(pid: int) -> bool:
    """No such process, not even a zombie waiting to be reaped."""
    return not Path(f"/proc/{pid}").exists()


@pytest.fixture
def processes(tmp_path):
    """The pids the test's engines wrote; any left at the end is killed, and fails the test."""
    yield tmp_path
    left = []
    for path in tmp_path.glob("*.pid"):
        pid = int(path.read_text() or 0)
        if pid and not gone(pid):
            left.append(path.stem)
            os.kill(pid, signal.SIGKILL)
    assert not left, f"engines left running: {left}"


def asked(client: HtpClient, command: str, timeout: float) -> tuple[str, float]:
    """(the failure's reason, seconds it took)."""
    started = time.monotonic()
    with pytest.raises(EngineFailure) as failure:
        client.ask(command, timeout)
    return str(failure.value), time.monotonic() - started


MISBEHAVING = {  # what the engine does when asked to move (it answers `name`), how it fails, in how long
    "flood": (
        "print('= a1\\n' * 5000, end='', flush=True)",  # no blank line to end the answer
        "more than 1000 lines and no blank line in the answer to `genmove b`",  # engines.MAX_LINES
        10,
    ),
    "line": (
        "print('= ' + 'x' * 10**6, end='', flush=True)",  # a line with no end
        "a line of more than 16384 characters in the answer to `genmove b`",  # engines.MAX_LINE
        10,
    ),
    "mute": (
        "(os.close(1), time.sleep(120))",  # its output closed, and it lives on
        f"the engine closed its output during `genmove b` and had not exited {engines.QUIT_SECONDS:g} s later: killed",
        engines.QUIT_SECONDS + 5,
    ),
}


@pytest.mark.parametrize("kind", MISBEHAVING)
def test_an_engine_that_misbehaves_fails_with_its_reason_and_is_killed(processes, kind):
    on_move, reason, most = MISBEHAVING[kind]
    client = HtpClient(engine(processes, kind, f"{ANSWER} if line.startswith('name') else {on_move}"))
    try:
        assert client.ask("name", 30) == ""
        why, seconds = asked(client, "genmove b", 30)
        assert why == reason
        assert seconds < most and not client.alive
        assert gone(pid_of(processes, kind))
        why, _ = asked(client, "name", 30)  # and what is asked next fails at once
        assert why.startswith("the engine has exited")
    finally:
        client.close()


def test_closing_an_engine_that_never_answers_takes_seconds_not_minutes(processes):
    command = engine(processes, "silent", "time.sleep(120)")
    client = HtpClient(command)
    pid_of(processes, "silent")
    started = time.monotonic()
    client.close()
    assert time.monotonic() - started < engines.QUIT_SECONDS + 5
    assert not client.alive and gone(pid_of(processes, "silent"))
    client.close()  # again: nothing left to do, and no error


def test_an_engine_that_answers_and_exits_on_quit_is_closed_cleanly(processes):
    command = engine(processes, "polite", f"{ANSWER}; sys.exit() if line.startswith('quit') else None")
    client = HtpClient(command)
    assert client.ask("name", 30) == ""
    started = time.monotonic()
    client.close()
    assert time.monotonic() - started < 2 and client.process.returncode == 0


def test_a_rating_match_engine_that_floods_fails_and_is_gone_after_close(processes):
    player = EnginePlayer(engine(processes, "flood", "print('= a1\\n' * 5000, end='', flush=True)"), timeout=30)
    try:
        with pytest.raises(EngineFailure, match="more than 1000 lines"):
            player.moves(Games.new(1, 3))
    finally:
        player.close()
    assert gone(pid_of(processes, "flood"))


def test_a_match_whose_second_engine_cannot_start_leaves_no_first_engine(processes):
    """A lives on after its input ends, as a careless engine may: the referee must kill it."""
    a = engine(processes, "a", ANSWER, after_input="time.sleep(120)")
    with pytest.raises(OSError):
        referee_match(a, "no-such-engine-xyz --quiet", 3, 2, log_dir=processes)
    assert gone(pid_of(processes, "a"))
