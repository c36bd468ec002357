"""A full disk: the daemon keeps every committed row, says "disk full" (status, events,
progress), self-play waits, and all goes on by itself once there is room again.

On a real small filesystem: a tmpfs mounted for the test (root only; skipped with the
reason elsewhere)."""

import json
import os
import subprocess
import time

import pytest
from daemon_run import QUICK, DaemonRun

pytestmark = pytest.mark.e2e  # a real daemon on a real full disk: `pytest -m e2e`


@pytest.fixture
def small_disk(tmp_path):
    where = tmp_path / "disk"
    where.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64m,mode=0700", "tmpfs", str(where)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield where
    subprocess.run(["umount", "-l", str(where)], check=False)


def state(run) -> str | None:
    done = run.hexzd("status", "--json")
    return json.loads(done.stdout).get("state") if done.returncode == 0 else None


def fill(where) -> None:
    with open(where / "filler", "wb") as f:
        try:
            while True:
                f.write(b"\0" * (1 << 20))
                f.flush()
        except OSError:
            pass


@pytest.mark.timeout(240)
def test_a_full_disk_halts_self_play_and_a_freed_one_resumes_it(small_disk):
    run = DaemonRun(small_disk, edits=QUICK).start()
    try:
        _fill_and_free(run, small_disk)
    finally:
        run.cleanup()


def _fill_and_free(run, small_disk) -> None:
    run.wait_for(lambda: run.count("games") > 50, 60, "self-play")
    committed = {r[0] for r in run.query("SELECT id FROM games")}
    fill(small_disk)
    run.wait_for(lambda: state(run) == "disk full", 60, "status to say disk full")
    time.sleep(3.0)  # self-play has halted: what it plays now would only be held
    assert run.process.poll() is None
    (small_disk / "filler").unlink()
    run.wait_for(lambda: state(run) == "running", 60, "the daemon to see room again")
    games = run.count("games")
    run.wait_for(lambda: run.count("games") > games + 20, 60, "self-play to go on")
    assert committed <= {r[0] for r in run.query("SELECT id FROM games")}  # every committed game kept
    said = [m for (m,) in run.query("SELECT message FROM events WHERE source = 'daemon'")]
    assert any(m.startswith("disk full:") for m in said) and any("room again" in m for m in said)
    assert run.query("PRAGMA integrity_check") == [("ok",)]
    assert run.hexzd("stop").returncode == 0 and run.process.wait(60) == 0
