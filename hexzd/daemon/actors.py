"""Self-play on a node of a Ray cluster: the actor the cluster worker places there.

A plain class: the cluster worker (hexzd.daemon.cluster) makes it a Ray actor
with `ray.remote`, and `hexzd bench cluster` runs the same class in local
processes, so this module imports no Ray. Each `play` call runs the same step
as this machine's self-play workers (hexzd.daemon.workers.play_move) for
`seconds`, and hands back the games that ended meanwhile, each with the node
that played it and an id of its own (`ACTOR:SEQ`, ACTOR new for each life of
an actor): the daemon stores each id once. Games still in flight stay in the
actor for its next call; an actor or node that is lost loses those alone.
"""

import os
import time
import uuid

from hexzd.config import Config
from hexzd.daemon.workers import game_message, play_move, worker_config

GPU_SAMPLE = 1.0  # seconds between samples of this actor's GPU use, for its node's tuner


class SelfPlayActor:
    """The games of one self-play actor; `set_weights` once per promotion, `play` again and again."""

    def __init__(self, name: str, node: str, config: dict, seed: int):
        from hexzd.train.selfplay import SelfPlay
        from hexzd.train.tuner import GpuMeter

        c = worker_config(config)
        self.name, self.node = name, node
        self.life = f"{name}-{uuid.uuid4().hex[:12]}"  # a restarted actor's ids never meet its last life's
        self.sequence = 0
        self.games = SelfPlay(c.selfplay, c.game.board_size, c.game.swap, seed=seed)
        self.weights: tuple[int, bytes] | None = None
        self.meter = GpuMeter.open() if os.environ.get("CUDA_VISIBLE_DEVICES") else None
        self.sampled = float("-inf")

    def set_weights(self, model_id: int, weights: bytes) -> None:
        """The best model from the next move on (the cluster worker passes one ObjectRef to every actor)."""
        self.weights = (model_id, weights)

    def play(self, config: dict, seconds: float) -> dict:
        """Self-play for about `seconds` (a move at least); the games that ended, and its totals."""
        from hexzd.nn.loader import load

        c = worker_config(config)
        best = self.weights[0] if self.weights else None
        started, served = time.monotonic(), self.games.served
        finished, note = [], None
        while True:
            ended, loaded = play_move(self.games, c, best, lambda model_id: load(self.weights[1], model_id, c.device))
            note = loaded or note
            finished += [self._message(*game) for game in ended]
            self._sample_gpu()
            if time.monotonic() - started >= seconds:
                break
        return {
            "games": finished,
            "evals": self.games.served - served,
            "seconds": time.monotonic() - started,
            "settling": self.games.settling,
            "gpu_util": self.meter.take_mean() if self.meter is not None else None,
            "loaded": note,
        }

    def _message(self, record, evals: int, seconds: float):
        self.sequence += 1
        return game_message(self.name, record, evals, seconds, node=self.node, uid=f"{self.life}:{self.sequence}")

    def _sample_gpu(self) -> None:
        if self.meter is not None and time.monotonic() - self.sampled >= GPU_SAMPLE:
            self.sampled = time.monotonic()
            self.meter.sample()


def environment(c: Config, resources: dict) -> dict[str, str]:
    """An actor's thread counts, as the supervisor gives this machine's self-play workers, within
    the CPUs the actor declared."""
    threads = str(max(1, min(c.device.threads, int(resources["num_cpus"]))))
    return {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "NUMBA_NUM_THREADS": "1"}
