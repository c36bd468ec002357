"""Self-play on a real Ray cluster ([cluster] address): three Ray nodes on this machine.

`ray.cluster_utils.Cluster` starts a head (no CPUs: nothing is placed there, and
the daemon's cluster worker attaches to it as this machine's node) and worker
nodes of one CPU each, every one its own raylet process with its own
resources, as `ray start` makes them (docs/guides/cluster.md), with Ray's token
authentication on. A real daemon joins it and gets games from the nodes' actors
in its state file; an actor killed, a node removed mid-run and one added later;
a client without the token refused; the head lost and back (slow). And the
guide's own `ray start` commands, read from the page and run as written. Mark
`cluster` (and e2e): CI's `pytest -m e2e` runs them, about 75 s on 2 cores.
"""

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from daemon_run import DaemonRun, ray_loaded
from states import add_model

from hexzd import store
from hexzd.tui import views

# Ray's token authentication for every process of the module: the cluster's, the daemon's, and
# this one's, which reads RAY_AUTH_MODE once, when it imports Ray.
TOKEN = secrets.token_hex(32)
os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=TOKEN)
ray = pytest.importorskip("ray", reason="the cluster extra: pip install 'hexzd[cluster]'")
from ray.cluster_utils import Cluster  # noqa: E402

pytestmark = [pytest.mark.e2e, pytest.mark.cluster]

EDITS = {
    "[selfplay]": ["batch = 8", "groups = 2"],
    "[train]": ["min_positions = 100_000"],  # self-play is what is tested: the trainer waits
    "[cluster]": ["batch_seconds = 1.0"],
    "[tune]": ["interval = 2.0"],  # each node's tuner decides within the test
}


@pytest.fixture(scope="module")
def cluster():
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    nodes = [c.add_node(num_cpus=1, resources={f"node_{k}": 1}) for k in "ab"]
    c.wait_for_nodes()
    yield c, nodes
    c.shutdown()


def actor_of(node) -> int:
    """The pid of the self-play actor on `node` (a Ray node of the Cluster): a child of its raylet."""
    raylet = dict(node.live_processes())["raylet"].pid
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat, command = (entry / "stat").read_text(), (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if command.startswith(b"ray::SelfPlayActor") and int(stat.rsplit(")", 1)[1].split()[1]) == raylet:
                return int(entry.name)
    raise AssertionError(f"no self-play actor on node {node.node_id}")


def listening(pid: int) -> set[int]:
    """The TCP ports process `pid` listens on: its sockets' inodes found in /proc/net/tcp{,6} in LISTEN."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def node_games(run: DaemonRun) -> dict[str, int]:
    return dict(run.query("SELECT node, COUNT(*) FROM games WHERE node IS NOT NULL GROUP BY node"))


@pytest.mark.timeout(240)
def test_self_play_on_two_nodes_survives_a_node_lost_and_takes_a_node_added(cluster, tmp_path):
    c, (a, b) = cluster
    edits = dict(EDITS, **{"[cluster]": EDITS["[cluster]"] + [f'address = "{c.address}"']})
    store.prepare(tmp_path / "run.sqlite")
    best = add_model(tmp_path / "run.sqlite", 5)  # a promoted network: its weights go out through Ray
    run = DaemonRun(tmp_path, edits=edits).start()
    try:
        run.wait_for(lambda: set(node_games(run)) >= {a.node_id, b.node_id}, 90, "games from both nodes")
        assert run.count("games", f"node IS NOT NULL AND model_id IS NOT {best}") == 0  # its network played them
        pids = run.worker_pids()
        # Ray lives in the cluster worker alone: the daemon and this machine's workers never load it.
        assert ray_loaded(pids["cluster"])
        assert not any(ray_loaded(p) for p in [run.process.pid, *(p for w, p in pids.items() if w != "cluster")])
        assert listening(run.process.pid) == set()  # no port of hexzd's own for the cluster: Ray's alone
        status = run.hexzd("status").stdout
        assert f"Ray cluster at {c.address}" in status and a.node_id[:8] in status and b.node_id[:8] in status
        nodes = json.loads(run.hexzd("status", "--json").stdout)["cluster"]  # what the dashboard reads
        assert {(n["node"], n["cpus"], n["actors"]) for n in nodes["nodes"]} == {(a.node_id, 1, 1), (b.node_id, 1, 1)}
        system = views.device_panel({"cluster": nodes}).plain  # the dashboard's system tab
        assert f"Ray cluster at {c.address}: 2 nodes" in system and "1 actors" in system

        os.kill(actor_of(b), signal.SIGKILL)  # an actor lost, its node staying: another is placed there
        lost = f"message LIKE 'self-play actor ray-{b.node_id[:8]}-0 % is lost%'"
        run.wait_for(lambda: run.count("events", lost), 30, "the lost actor's event")
        again = f"ray-{b.node_id[:8]}-1-%"
        run.wait_for(lambda: run.count("games", f"uid LIKE '{again}'") > 0, 60, "games from the actor placed again")

        c.remove_node(a)  # mid-run: its actor and the games it has in flight go with it
        run.wait_for(lambda: run.count("events", f"message LIKE 'node {a.node_id[:8]}% left the cluster%'"), 60, "a")
        left = node_games(run).get(a.node_id, 0)
        fresh = c.add_node(num_cpus=1, resources={"node_c": 1})
        run.wait_for(lambda: node_games(run).get(fresh.node_id, 0) > 0, 90, "games from the node added")
        from_b = node_games(run)[b.node_id]
        run.wait_for(lambda: node_games(run)[b.node_id] > from_b, 30, "more games from the node that stayed")
        assert node_games(run).get(a.node_id, 0) == left  # nothing of the lost node's came after its loss

        run.config.write_text(run.config.read_text().replace(f'address = "{c.address}"', 'address = ""'))
        run.wait_for(lambda: "cluster" not in run.worker_pids(), 30, "the cluster worker to stop")  # a live key
        assert "Ray cluster" not in run.hexzd("status").stdout
        assert run.hexzd("stop").returncode == 0
        assert run.process.wait(60) == 0
    finally:
        run.cleanup()
    # Every game an actor delivered is there, in order: each actor life's ids are 1..k, no gap, none twice.
    lives: dict[str, list[int]] = {}
    for (uid,) in run.query("SELECT uid FROM games WHERE uid IS NOT NULL ORDER BY id"):
        life, seq = uid.rsplit(":", 1)
        lives.setdefault(life, []).append(int(seq))
    assert len(lives) >= 3 and all(seqs == list(range(1, len(seqs) + 1)) for seqs in lives.values())
    counted = run.query("SELECT value FROM meta WHERE key = 'counter.games'")[0][0]
    assert float(counted) == run.count("games")
    assert run.count("events", "message LIKE 'cluster exited%' OR (source = 'cluster' AND level = 'error')") == 0
    tuned = f"source = 'cluster' AND message LIKE 'node {b.node_id[:8]}: %evals/s%batch%'"
    assert run.count("events", tuned) > 0  # the node's batch, by its tuner from its own evaluations/s
    joined = run.query("SELECT message FROM events WHERE message LIKE 'joined the Ray cluster%'")[0][0]
    assert "3 nodes, 2 CPUs, 0 GPUs" in joined
    stored = run.query("SELECT DISTINCT source FROM metrics WHERE name = 'games_per_s' AND source LIKE 'node %'")
    assert {f"node {a.node_id[:8]}", f"node {b.node_id[:8]}"} <= {source for (source,) in stored}
    # The weights went into the object store once, for the actors there then and those placed later.
    assert run.count("events", f"message LIKE 'model {best} sent to%'") == 1


@pytest.mark.timeout(120)
def test_a_client_without_the_token_is_refused(cluster):
    c, _ = cluster
    join = f"import ray; ray.init(address={c.address!r}); print(sum(n['Alive'] for n in ray.nodes()))"
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_TOKEN", "RAY_AUTH_MODE")}
    for given in ({}, {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}):
        assert refusal(join, env | given).startswith("Failed to get cluster ID from GCS server: Unauthenticated")
    joined = subprocess.run([sys.executable, "-c", join], capture_output=True, text=True, timeout=90)
    assert joined.returncode == 0 and joined.stdout.strip().endswith("3"), joined.stderr[-2000:]


def refusal(command: str, env: dict) -> str:
    """The cluster's answer to a client that runs `command`: the first refusal it logs (Ray
    retries for 20 s before it gives up; the first says it all), or its output if it joins."""
    client = subprocess.Popen(
        [sys.executable, "-c", command], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        for line in client.stdout:
            if "InvalidAuthToken" in line:
                return line.split("] ", 1)[-1].split(" gcs_client.cc:", 1)[-1].split(": ", 1)[-1].strip()
        return f"it joined: {client.wait()}"
    finally:
        client.kill()
        client.wait()
        client.stdout.close()


@pytest.mark.slow  # two clusters one after the other, and the backoff between: 2 minutes
@pytest.mark.timeout(300)
def test_the_head_lost_leaves_local_self_play_going_and_the_daemon_joins_again(tmp_path):
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    port = int(c.address.rsplit(":", 1)[1])
    node = c.add_node(num_cpus=1)
    edits = dict(EDITS, **{"[cluster]": EDITS["[cluster]"] + [f'address = "{c.address}"']})
    run = DaemonRun(tmp_path, edits=edits).start()
    again = None
    try:
        run.wait_for(lambda: node_games(run).get(node.node_id, 0) > 0, 90, "games from the node")
        c.shutdown()  # the head, and the node with it
        local = run.count("games", "node IS NULL")
        run.wait_for(lambda: run.count("events", "message LIKE 'cluster exited with code%'") > 0, 60, "the loss")
        run.wait_for(lambda: run.count("games", "node IS NULL") > local + 50, 60, "local games meanwhile")
        again = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "gcs_server_port": port})
        fresh = again.add_node(num_cpus=1)
        run.wait_for(lambda: node_games(run).get(fresh.node_id, 0) > 0, 120, "games from the cluster back")
        assert run.hexzd("stop").returncode == 0
        assert run.process.wait(60) == 0
    finally:
        run.cleanup()
        for cluster in (c, again):
            if cluster is not None:
                cluster.shutdown()


GUIDE = Path(__file__).resolve().parents[2] / "docs" / "guides" / "cluster.md"


def guide_commands() -> list[str]:
    """The shell commands of the guide's "Two machines, step by step", in order, comments cut."""
    section = GUIDE.read_text().split("## Two machines, step by step")[1].split("\n## ")[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
    return [line.split("  #")[0].strip() for block in blocks for line in block.splitlines() if line.strip()]


@pytest.mark.timeout(300)
def test_the_guides_two_machines_as_its_commands_start_them(tmp_path):
    port = free_port()
    temp = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))  # Ray's socket paths must stay short
    # The token file, as the guide has it; and Ray's files under a folder of the test's, where "auto"
    # finds this cluster and not another (the module's): RAY_TMPDIR, for Ray's commands and the daemon.
    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_TOKEN"} | {"RAY_TMPDIR": str(temp)}
    commands = guide_commands()[:6]  # then the queries of its games
    assert [c.split(" --")[0] for c in commands] == [
        "ray get-auth-token",
        "chmod 600 ~/.ray/auth_token",
        "export RAY_AUTH_MODE=token",
        "ray start",
        "hexzd start",
        "ray start",
    ]
    head, worker = commands[3], commands[5]
    shell = {"HEAD_IP": "127.0.0.1", "6379": str(port)}
    for name, value in shell.items():
        head, worker = head.replace(name, value), worker.replace(name, value)
    run = DaemonRun(tmp_path, edits=dict(EDITS, **{"[cluster]": ['address = "auto"']}))
    try:
        setup = " && ".join([*commands[:3], head, worker])
        started = subprocess.run(["bash", "-c", setup], env=env, capture_output=True, text=True, timeout=120)
        assert started.returncode == 0, started.stderr[-3000:]
        assert oct(Path(env["HOME"], ".ray", "auth_token").stat().st_mode & 0o777) == "0o600"
        saved = dict(os.environ)
        os.environ.clear()
        os.environ.update(env)  # the daemon's, and so its cluster worker's
        try:
            run.start()
        finally:
            os.environ.clear()
            os.environ.update(saved)
        run.wait_for(lambda: len(node_games(run)) > 0, 120, "games from the worker node")
        joined = run.query("SELECT message FROM events WHERE message LIKE 'joined the Ray cluster at auto%'")
        assert joined and "2 nodes, 2 CPUs" in joined[0][0] and "this machine: its own workers" in joined[0][0]
        # A live edit to the head's client port, as through the guide's SSH tunnel: the worker leaves and
        # comes back through Ray's client, no node is this machine's then, and the node's actor is new.
        lives = "SELECT COUNT(DISTINCT substr(uid, 1, instr(uid, ':'))) FROM games WHERE uid IS NOT NULL"
        before = run.query(lives)[0][0]
        run.config.write_text(run.config.read_text().replace('address = "auto"', 'address = "ray://127.0.0.1:10001"'))
        client = "message LIKE 'joined the Ray cluster at ray://127.0.0.1:10001: 2 nodes, 2 CPUs%'"
        run.wait_for(lambda: run.count("events", client), 90, "the connection through Ray's client")
        run.wait_for(lambda: run.query(lives)[0][0] > before, 90, "games through Ray's client")
        assert run.hexzd("stop").returncode == 0
    finally:
        run.cleanup()
        stop_ray_under(temp)
        shutil.rmtree(temp, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_ray_under(temp: Path) -> None:
    """Kills the Ray processes whose command line names `temp` (`ray stop` would stop every Ray
    of the machine), then their children: the raylets' workers."""
    named = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if str(temp).encode() in (entry / "cmdline").read_bytes():
                    named.add(int(entry.name))
            except OSError:
                continue
    children = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError):
                continue
            if parent in named:
                children.add(int(entry.name))
    for pid in named | children:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
