"""Games from outside the daemon's machine: each game id stored once, and Ray never loaded here.

A cluster actor's games carry an id (`ACTOR:SEQ`, hexzd.daemon.actors): a batch
delivered twice, through the socket the cluster worker pushes to, is stored
and counted once. And without `[cluster] address`, the single-machine path,
neither the daemon nor any of its workers imports Ray (tests/daemon/test_cluster.py
shows the same check finds it in the cluster worker).
"""

import time

import pytest
import zmq
from daemon_run import DaemonRun, ray_loaded

from hexzd.daemon import messages as m
from hexzd.daemon.rundir import RunDir

pytestmark = pytest.mark.e2e  # a real daemon: `pytest -m e2e`


@pytest.mark.timeout(120)
def test_a_batch_delivered_twice_is_stored_once_and_one_machine_loads_no_ray(tmp_path):
    run = DaemonRun(tmp_path, edits={"[train]": ["min_positions = 100_000"]}).start()
    try:
        run.wait_for(lambda: run.count("games") > 0, 60, "a local game")
        pids = run.worker_pids()
        assert {"selfplay-0", "trainer", "duel"} <= set(pids) and "cluster" not in pids
        assert not any(ray_loaded(pid) for pid in [run.process.pid, *pids.values()])  # no Ray on one machine
        row = run.query("SELECT board_size, sims, moves, winner, length, policy FROM games LIMIT 1")[0]
        fields = dict(zip(("board_size", "sims", "moves", "winner", "length", "policy"), row))
        batch = [
            m.Game(worker="ray-test-0", model_id=None, evals=0, seconds=0.0, node="test", uid=f"life:{k}", **fields)
            for k in (1, 2, 3)
        ]
        context = zmq.Context()
        push = context.socket(zmq.PUSH)
        push.connect(RunDir.of(run.db).results)
        for _ in range(2):  # the same batch twice, through the socket the cluster worker uses
            for game in batch:
                push.send(m.encode(game))
        push.close(linger=5000)
        context.term()
        run.wait_for(lambda: run.count("games", "node = 'test'") == 3, 30, "the batch")
        time.sleep(1.0)  # the repeat arrived behind it: still three
        assert run.count("games", "node = 'test'") == 3
        assert run.hexzd("stop").returncode == 0
        assert run.process.wait(60) == 0
    finally:
        run.cleanup()
    counted = run.query("SELECT value FROM meta WHERE key = 'counter.games'")[0][0]
    assert float(counted) == run.count("games")  # the repeat was not counted either
