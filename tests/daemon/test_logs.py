"""The run directory's logs rotate by size: the daemon's, each worker's, each engine's."""

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from hexzd.config import Config
from hexzd.daemon import supervisor as supervision
from hexzd.daemon.core import Daemon
from hexzd.daemon.rundir import RunDir, rotate


@pytest.fixture
def short_dir():
    path = Path(tempfile.mkdtemp(prefix="hz", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_a_log_past_its_size_rotates_and_its_writer_goes_on(tmp_path):
    log = tmp_path / "selfplay-0.log"
    writer = open(log, "ab", buffering=0)  # as a worker's stdout: append mode  # noqa: SIM115
    try:
        for k in range(5):
            writer.write(f"round {k}\n".encode() * 200)
            assert rotate(log, 1000, keep=2)
        writer.write(b"after\n")
    finally:
        writer.close()
    assert log.read_bytes() == b"after\n"  # at the start of the emptied file: no hole
    assert (tmp_path / "selfplay-0.log.1").read_bytes() == b"round 4\n" * 200
    assert (tmp_path / "selfplay-0.log.2").read_bytes() == b"round 3\n" * 200
    assert sorted(p.name for p in tmp_path.iterdir()) == ["selfplay-0.log", "selfplay-0.log.1", "selfplay-0.log.2"]
    assert not rotate(log, 1000, keep=2)  # small: left alone
    assert rotate(log, 1, keep=0) and log.read_bytes() == b"" and not (tmp_path / "selfplay-0.log.3").exists()


WRITER = """
import sys
import time
from pathlib import Path
from hexzd.daemon.rundir import Follow
follow = Follow(Path(sys.argv[1]))
for i in range(int(sys.argv[2])):
    print(f"line {i} " + "x" * 60, flush=True)
    if i % 50 == 0:  # a worker looks once a second; rotations here come every few ms
        follow()
        time.sleep(0.001)
"""


def test_a_log_rotated_under_a_writer_that_follows_loses_no_line(tmp_path):
    """A real process writing its stdout to the log, rotated again and again while it writes:
    every line is in the log or a rotated one, once and whole."""
    log, lines = tmp_path / "trainer.log", 20_000
    with open(log, "ab") as out:
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(log), str(lines)], stdout=out, stderr=out)
    rotations = 0
    while writer.poll() is None:
        rotations += rotate(log, 1, keep=1000, follows=True)  # never as many: none is deleted
        time.sleep(0.005)
    assert writer.returncode == 0 and rotations >= 20
    written = [line for path in tmp_path.iterdir() for line in path.read_text().splitlines()]
    assert sorted(written, key=lambda line: int(line.split()[1])) == [f"line {i} " + "x" * 60 for i in range(lines)]


def test_a_writer_whose_output_is_not_the_log_is_left_alone(tmp_path):
    log = tmp_path / "trainer.log"
    log.write_text("old\n")
    done = subprocess.run([sys.executable, "-c", WRITER, str(log), "3"], capture_output=True, text=True, check=True)
    assert done.stdout.splitlines()[-1].startswith("line 2 ") and log.read_text() == "old\n"


def test_the_tick_rotates_every_log_of_the_run_directory(short_dir):
    daemon = Daemon(short_dir / "config.toml", short_dir / "run.sqlite")
    daemon.config = Config(retention={"log_mb": 0.01, "log_files": 1})
    run = RunDir.of(daemon.db).make()
    for name in ("daemon", "selfplay-0", "trainer", "engine-mohex"):
        run.log(name).write_bytes(b"x" * 20_000)
    run.log("duel").write_bytes(b"short\n")

    async def tick():
        await daemon.open()
        try:
            await daemon.ticks._retain()
        finally:
            await daemon.store.close()

    asyncio.run(tick())
    for name in ("daemon", "selfplay-0", "trainer", "engine-mohex"):
        assert run.log(name).stat().st_size == 0 and (run.path / f"{name}.log.1").stat().st_size == 20_000
    assert run.log("duel").read_bytes() == b"short\n"


def test_a_worker_log_is_rotated_when_the_worker_starts(short_dir, monkeypatch):
    run = RunDir.of(short_dir / "run.sqlite").make()
    run.log("trainer").write_bytes(b"x" * 20_000)
    config = Config(retention={"log_mb": 0.01, "log_files": 3})
    started = []

    async def fake_exec(*args, stdout, **kw):
        started.append(os.fstat(stdout.fileno()).st_size)
        return None

    monkeypatch.setattr(supervision.asyncio, "create_subprocess_exec", fake_exec)

    async def no_warning(message):
        raise AssertionError(message)

    sup = supervision.Supervisor(run.path.parent / "run.sqlite", run, lambda: config, no_warning)
    asyncio.run(sup._start(supervision.Worker("trainer", "trainer", 0)))
    assert started == [0]  # the new process writes to an empty log
    assert (run.path / "trainer.log.1").stat().st_size == 20_000
