"""The cluster worker: self-play on the nodes of a Ray cluster, its games to the daemon.

The daemon starts it like its other workers (`python -m hexzd.daemon.workers
cluster`) while `[cluster] address` is set, and it is the only hexzd process
that imports Ray: the daemon and this machine's own workers never do, so a
lost head or connection leaves them playing. It is the Ray driver:

- it joins the cluster (`ray.init(address)`). A failure, then or later (the
  head lost), ends the worker; the supervisor restarts it with its doubling
  backoff and an event that says why, so it reconnects when it can;
- it looks at `ray.nodes()` every NODE_POLL seconds. A node that joins gets
  self-play actors (hexzd.daemon.actors.SelfPlayActor), placed there by Ray
  with their resources declared: on a node with GPUs, `selfplay.workers` per
  GPU, each a 1/workers share of one; without, `selfplay.workers` sharing
  its CPUs. The node this driver attached to is this machine's, whose
  self-play is its own workers': it gets none (with a `ray://` address, the
  head is remote and every node gets actors). A node that leaves loses its
  actors and the games they had not yet handed back; an actor that dies is
  placed again on its node's next look;
- it sends the best model's weights once per promotion: one `ray.put`, whose
  ObjectRef goes to every actor (each node fetches the bytes once);
- it keeps one `play` call in flight per actor (`[cluster] batch_seconds` of
  self-play), takes the finished games as the calls end (`ray.wait`), and
  pushes each to the daemon as a Game tagged with its node and id, over the
  socket and through the ingest of local self-play: the daemon validates them
  alike and stores each id once;
- it tunes each node's batch from that node's own evaluations/s and GPU use (a
  hexzd.train.tuner.Tuner per node), and tells the daemon about its nodes once
  a second (Nodes), which `hexzd status` and the dashboard show.
"""

import logging
import time
from collections import deque
from dataclasses import dataclass, field

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from hexzd import store
from hexzd.config import Config
from hexzd.daemon import messages as m
from hexzd.daemon.actors import SelfPlayActor, environment
from hexzd.daemon.workers import Link
from hexzd.train.tuner import Telemetry, Tuner

log = logging.getLogger("hexzd.cluster")

NODE_POLL = 1.0  # seconds between looks at the cluster's nodes
REPORT_EVERY = 1.0  # seconds between the Nodes messages to the daemon
RATE_SPAN = 10.0  # seconds over which a node's games/s and evals/s are measured
WAIT = 0.2  # seconds the loop waits for a play call to end before it looks at the rest
MAX_BACKOFF = 60.0  # the longest wait before an actor lost on a node that stays is placed again


@dataclass
class Node:
    """One node of the cluster with self-play actors: what it has, and what it made."""

    id: str
    address: str
    cpus: float
    gpus: float
    tuner: Tuner
    actors: dict = field(default_factory=dict)  # name -> actor handle
    placed: int = 0  # actors placed on it so far, for their names and seeds
    games: int = 0
    positions: int = 0
    evals: int = 0
    gpu_util: float | None = None  # the least busy of its actors' GPUs, over their last calls
    settling: bool = False  # an actor plays out games of an older batch shape
    start_batch: int = 0  # the batch in force when it joined, where its tuner started
    tuned: tuple = ()  # the [tune] section and sims its tuner was last configured with
    backoff: float = 0.0  # seconds before an actor lost while the node stays is placed again; doubles
    retry_at: float = 0.0  # monotonic time before which no actor is placed on it
    samples: deque = field(default_factory=lambda: deque(maxlen=64))  # (monotonic, games, positions, evals)

    @property
    def short(self) -> str:
        return self.id[:8]

    def rates(self) -> tuple[float, float, float]:
        """(games/s, positions/s, evals/s) over the last RATE_SPAN seconds."""
        now = time.monotonic()
        self.samples.append((now, self.games, self.positions, self.evals))
        while len(self.samples) > 2 and now - self.samples[1][0] >= RATE_SPAN:
            self.samples.popleft()
        then, games, positions, evals = self.samples[0]
        span = now - then
        if span <= 0:
            return 0.0, 0.0, 0.0
        return (self.games - games) / span, (self.positions - positions) / span, (self.evals - evals) / span


def wanted_actors(cpus: float, gpus: float, workers: int) -> list[dict]:
    """The resources of each self-play actor a node with `cpus` and `gpus` gets: on GPUs,
    `workers` per GPU, each a 1/workers share of one and of the CPUs; without, `workers`
    sharing the CPUs."""
    count = int(gpus) * workers if gpus >= 1 else workers
    share = {"num_gpus": 1 / workers} if gpus >= 1 else {}
    return [{"num_cpus": cpus / count, **share} for _ in range(count)] if cpus > 0 else []


class Driver:
    """The Ray driver of the cluster worker; see the module's doc."""

    def __init__(self, link: Link, db, seed: int):
        self.link, self.db, self.seed = link, db, seed
        self.address = link.config.cluster.address
        self.nodes: dict[str, Node] = {}
        self.calls: dict = {}  # ObjectRef of a play call -> (node id, actor name)
        self.weights: tuple[int, object] | None = None  # (model id, ObjectRef of its bytes)
        self.looked = self.reported = self.recorded = float("-inf")

    def run(self) -> None:
        self.connect()
        try:
            while not self.link.stopping:
                self.link.poll()
                if self.link.config.cluster.address != self.address:
                    self.link.event("info", f"[cluster] address is now {self.link.config.cluster.address!r}: leaving")
                    return
                if time.monotonic() - self.looked >= NODE_POLL:
                    self.looked = time.monotonic()
                    self.look_at_nodes()
                self.send_weights()
                if not self.link.paused:
                    self.submit()
                self.collect()
                if time.monotonic() - self.reported >= REPORT_EVERY:
                    self.reported = time.monotonic()
                    self.report()
        finally:
            for node in list(self.nodes.values()):
                self.drop(node)
            ray.shutdown()

    def connect(self) -> None:
        """Joins the cluster, and says what it found; raises (the worker restarts) if it cannot."""
        ray.init(address=self.address, namespace="hexzd", log_to_driver=False, logging_level=logging.WARNING)
        self.remote = ray.remote(SelfPlayActor)
        self.own = None if self.address.startswith("ray://") else ray.get_runtime_context().get_node_id()
        alive = [n for n in ray.nodes() if n["Alive"]]
        cpus = sum(n["Resources"].get("CPU", 0) for n in alive)
        gpus = sum(n["Resources"].get("GPU", 0) for n in alive)
        listed = "; ".join(self.describe(n) for n in alive)
        self.link.event(
            "info",
            f"joined the Ray cluster at {self.address}: {len(alive)} nodes, {cpus:g} CPUs, {gpus:g} GPUs: {listed}",
        )

    def describe(self, node: dict) -> str:
        resources = node["Resources"]
        mine = ", this machine: its own workers" if node["NodeID"] == self.own else ""
        return (
            f"node {node['NodeID'][:8]} at {node['NodeManagerAddress']} "
            f"({resources.get('CPU', 0):g} CPUs, {resources.get('GPU', 0):g} GPUs{mine})"
        )

    # -- nodes and their actors ------------------------------------------------------

    def look_at_nodes(self) -> None:
        """Places actors on nodes that joined (and where actors are missing); drops those that left."""
        alive = {n["NodeID"]: n for n in ray.nodes() if n["Alive"] and n["NodeID"] != self.own}
        for node_id in [n for n in self.nodes if n not in alive]:
            node = self.nodes.pop(node_id)
            lost = len(node.actors)
            self.drop(node)
            self.link.event(
                "warning",
                f"node {node.short} at {node.address} left the cluster: its {lost} self-play actors are gone,"
                f" with the games they had not handed back; {node.games} of its games were delivered",
            )
        c = self.link.config
        for node_id, info in alive.items():
            if node_id not in self.nodes:
                self.nodes[node_id] = self.joined(info, c)
            if time.monotonic() >= self.nodes[node_id].retry_at:
                self.place(self.nodes[node_id], c)

    def joined(self, info: dict, c: Config) -> Node:
        resources = info["Resources"]
        node = Node(
            info["NodeID"],
            info["NodeManagerAddress"],
            resources.get("CPU", 0.0),
            resources.get("GPU", 0.0),
            Tuner(c.tune, c.selfplay.sims, c.selfplay.batch),
            start_batch=c.selfplay.batch,
        )
        count = len(wanted_actors(node.cpus, node.gpus, c.selfplay.workers))
        self.link.event("info", f"{self.describe(info)} joined: {count} self-play actors")
        return node

    def place(self, node: Node, c: Config) -> None:
        """Places the node's missing actors, each pinned to it with its resources declared."""
        wanted = wanted_actors(node.cpus, node.gpus, c.selfplay.workers)
        if len(node.actors) > len(wanted):  # fewer workers configured: the node starts over
            self.drop(node)
        for resources in wanted[len(node.actors) :]:
            name = f"ray-{node.short}-{node.placed}"
            node.placed += 1
            options = {
                **resources,
                "scheduling_strategy": NodeAffinitySchedulingStrategy(node.id, soft=False),
                "max_restarts": 0,
                "runtime_env": {"env_vars": environment(c, resources)},
            }
            seed = self.seed * 1_000_003 + hash((node.id, node.placed)) % 1_000_003
            actor = self.remote.options(**options).remote(name, node.id, self.config_for(node), seed)
            if self.weights is not None:
                actor.set_weights.remote(*self.weights)
            node.actors[name] = actor

    def drop(self, node: Node) -> None:
        """Kills the node's actors (if it is still there) and forgets their calls."""
        for actor in node.actors.values():
            try:
                ray.kill(actor, no_restart=True)
            except Exception:  # a node that left: nothing there to kill
                pass
        node.actors.clear()
        self.calls = {ref: (node_id, name) for ref, (node_id, name) in self.calls.items() if node_id != node.id}

    def config_for(self, node: Node) -> dict:
        """The config in force, with the node's own batch (its tuner's)."""
        data = self.link.config.model_dump()
        data["selfplay"]["batch"] = node.tuner.batch
        return data

    # -- weights, play calls and their games -----------------------------------------

    def send_weights(self) -> None:
        """A new best model: its weights into the object store once, the ObjectRef to every actor."""
        best = self.link.best
        if best is None or (self.weights is not None and self.weights[0] == best):
            return
        with store.read_only(self.db) as connection:
            blob = store.weights(connection, best)
        self.weights = (best, ray.put(blob))
        for node in self.nodes.values():
            for actor in node.actors.values():
                actor.set_weights.remote(*self.weights)
        self.link.event("info", f"model {best} sent to {sum(len(n.actors) for n in self.nodes.values())} actors")

    def submit(self) -> None:
        """A play call for every actor that has none in flight."""
        busy = {(node_id, name) for node_id, name in self.calls.values()}
        seconds = self.link.config.cluster.batch_seconds
        for node in self.nodes.values():
            config = None
            for name, actor in node.actors.items():
                if (node.id, name) not in busy:
                    config = config or self.config_for(node)
                    self.calls[actor.play.remote(config, seconds)] = (node.id, name)

    def collect(self) -> None:
        """Takes the play calls that ended and pushes their games to the daemon."""
        if not self.calls:
            self.link.wait(WAIT)
            return
        ready, _ = ray.wait(list(self.calls), num_returns=len(self.calls), timeout=WAIT)
        for ref in ready:
            node_id, name = self.calls.pop(ref)
            node = self.nodes.get(node_id)
            try:
                result = ray.get(ref)
            except ray.exceptions.RayError as e:
                self.lost_actor(node, name, e)
                continue
            if node is not None:
                self.delivered(node, name, result)

    def delivered(self, node: Node, name: str, result: dict) -> None:
        for game in result["games"]:
            self.link.send(game)
        node.games += len(result["games"])
        node.positions += sum(g.length for g in result["games"])
        node.evals += result["evals"]
        node.settling = result["settling"]
        if result["gpu_util"] is not None:
            node.gpu_util = result["gpu_util"] if node.gpu_util is None else min(node.gpu_util, result["gpu_util"])
        node.backoff = 0.0
        if result["loaded"]:
            self.link.event("info", f"{name} now uses model {self.weights[0]} ({result['loaded']})")

    def lost_actor(self, node: Node | None, name: str, error: Exception) -> None:
        """An actor died (or its node): its games in flight are lost; the next look places another."""
        if node is None or node.actors.pop(name, None) is None:
            return
        node.backoff = min(MAX_BACKOFF, 2 * node.backoff or self.link.config.daemon.restart_backoff)
        node.retry_at = time.monotonic() + node.backoff
        first = (str(error).strip().splitlines() or [""])[0]
        self.link.event(
            "warning",
            f"self-play actor {name} on node {node.short} is lost ({type(error).__name__}: {first}),"
            f" with its games in flight; another in {node.backoff:g} s unless the node left",
        )

    # -- the daemon's view, and each node's tuner ------------------------------------

    def report(self) -> None:
        """Each node's rates to its tuner, and every node to the daemon: shown at once, and
        stored as metrics every `[daemon] progress_seconds` (source `node ID8`)."""
        record = time.monotonic() - self.recorded >= self.link.config.daemon.progress_seconds
        self.recorded = time.monotonic() if record else self.recorded
        rows = []
        for node in self.nodes.values():
            games_per_s, positions_per_s, evals_per_s = node.rates()
            self.tune(node, positions_per_s, evals_per_s)
            if record:
                values = {"games_per_s": games_per_s, "evals_per_s": evals_per_s, "actors": len(node.actors)}
                self.link.send(m.Metrics(source=f"node {node.short}", values=values))
            rows.append(
                m.Node(
                    node=node.id,
                    address=node.address,
                    cpus=node.cpus,
                    gpus=node.gpus,
                    actors=len(node.actors),
                    batch=node.tuner.batch,
                    games_per_s=games_per_s,
                    evals_per_s=evals_per_s,
                    games=node.games,
                )
            )
        self.link.send(m.Nodes(address=self.address, nodes=rows))

    def tune(self, node: Node, positions_per_s: float, evals_per_s: float) -> None:
        """The node's batch, from its own evaluations/s and GPU use; sims stay the run's."""
        c = self.link.config
        if node.tuned != (c.tune, c.selfplay.sims):
            # The batch in force here is the daemon's tuner's, for this machine: a node's stays its own,
            # its tuner told the batch it started from, which leaves the tuned one in place.
            node.tuned = (c.tune, c.selfplay.sims)
            node.tuner.configure(c.tune, c.selfplay.sims, node.start_batch)
        telemetry = Telemetry(
            positions_per_s=positions_per_s,
            evals_per_s=evals_per_s,
            samples_per_s=0.0,  # no trainer here: the sims rule holds, batch alone moves
            reuse=c.train.reuse,
            gpu_util=node.gpu_util,
            settling=node.settling,
        )
        node.gpu_util = None
        for decision in node.tuner.observe(telemetry, time.monotonic()):
            if decision.knob == "batch":
                self.link.event("info", f"node {node.short}: {decision.reason}")
