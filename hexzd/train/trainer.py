"""The trainer: finished games in, network snapshots out.

    source    GameSource: SqliteGames (the run's state file, read-only) or
              RecordFile (JSON lines, one game a line, for runs without a daemon)
    window    the most recent `window` positions, rebuilt from each game's
              moves and stored visit distributions (GameRecord.positions)
    step      a batch drawn with replacement, each position rotated by 180
              degrees with probability 1/2; loss = policy cross-entropy
              against the visit distribution + value_weight * value MSE
              against the game's result, weight decay in the optimiser
    pacing    a step is due while samples_trained + samples_forgiven +
              batch_size <= reuse * positions_seen, so each position is
              trained on `reuse` times on average whether self-play is fast
              or slow. What a flood of games owes beyond `reuse` passes over
              the window is forgiven (samples_forgiven): positions that left
              the window cannot be trained on any more, and a backlog of them
              would keep the trainer on stale data long after (the rollout
              phase makes games 20-100x faster than the first networks)
    snapshot  every `snapshot_every` steps: weights, optimiser state,
              counters, RNG states, the source's cursor, params and FLOPs

A snapshot holds no positions: on resume the window is refilled from the
source, newest game first, up to the cursor the snapshot names, and each
position goes back into the slot it had. Training then continues as if it
had never stopped, to the bit on the CPU.

A game that cannot be read (a corrupt blob, an illegal move, a winner that
does not match the moves) is logged, counted in `skipped` and left out.

The trainer worker (hexzd.daemon.workers) runs it as:

    trainer = Trainer(config, SqliteGames(db), Snapshot.from_bytes(blob) or None)
    trainer.run(should_stop, wait=link.wait, on_snapshot=publish, on_metrics=send, config=live)
"""

import logging
import math
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from hexzd.config import Config, TrainConfig
from hexzd.game.records import GameRecord
from hexzd.native.board import NUM_PLANES, rotate180
from hexzd.nn.net import TRAIN_FLOPS_PER_SAMPLE, HexNet, NetSpec, count_flops, count_params
from hexzd.nn.snapshot import Snapshot, clean_weights, to_cpu
from hexzd.train.sources import GameSource

__all__ = ["Trainer", "Window", "learning_rate", "losses"]

log = logging.getLogger(__name__)

# ---------------------------------------------------------------- window


class Window:
    """A ring of the most recent positions: position i (counting from the first
    ever added) lives in slot (i - origin) % capacity.

    The origin is 0 until the capacity changes; a resized window starts
    counting at its oldest position, so that its filled slots stay 0..size-1.
    Planes are 0/1 and kept as uint8; the visit distributions come from
    float16 blobs and stay float16, normalised to sum 1.
    """

    def __init__(self, capacity: int, n: int, origin: int = 0):
        self.capacity, self.n, self.origin = capacity, n, origin
        self.planes = np.zeros((capacity, NUM_PLANES, n, n), np.uint8)
        self.policy = np.zeros((capacity, n * n), np.float16)
        self.value = np.zeros(capacity, np.float32)
        self.seen = origin  # positions ever added

    @property
    def size(self) -> int:
        return min(self.seen - self.origin, self.capacity)

    def put(self, first: int, planes, policy, value) -> None:
        """Writes positions first, first+1, ... into their slots.

        Positions before the origin, or older than the newest `capacity`
        (counting up to `seen` or the last one written, whichever is later),
        are left out: their slots belong to newer positions.
        """
        total = policy.sum(1, keepdims=True)
        policy = np.divide(policy, total, out=np.zeros_like(policy), where=total > 0)
        newest = max(self.seen, first + len(value))
        oldest = max(self.origin, newest - self.capacity)
        keep = min(len(value), max(0, oldest - first))
        slots = (first - self.origin + np.arange(keep, len(value))) % self.capacity
        self.planes[slots] = planes[keep:]
        self.policy[slots] = policy[keep:]
        self.value[slots] = value[keep:]

    def add(self, planes, policy, value) -> None:
        self.put(self.seen, planes, policy, value)
        self.seen += len(value)

    def sample(self, batch: int, rng: np.random.Generator):
        """A batch drawn with replacement, half of it rotated by 180 degrees.

        Returns float32 planes[B, 4, n, n], policy[B, n*n], value[B].
        """
        index = rng.integers(0, self.size, batch)
        planes = self.planes[index].astype(np.float32)
        policy = self.policy[index].astype(np.float32)
        flip = rng.random(batch) < 0.5
        if flip.any():
            planes[flip], policy[flip] = rotate180(planes[flip], policy[flip])
        return planes, policy, self.value[index].copy()

    def resized(self, capacity: int) -> "Window":
        """The same newest positions in a window of another capacity."""
        count = min(self.size, capacity)
        out = Window(capacity, self.n, origin=self.seen - count)
        out.seen = self.seen
        slots = (np.arange(out.origin, self.seen) - self.origin) % self.capacity
        out.put(out.origin, self.planes[slots], self.policy[slots].astype(np.float32), self.value[slots])
        return out


# ---------------------------------------------------------------- snapshots


# ---------------------------------------------------------------- training


def learning_rate(step: int, train: TrainConfig) -> float:
    """Linear warm-up to lr, then constant or a cosine down to lr * lr_final."""
    warm = min(1.0, (step + 1) / train.warmup_steps) if train.warmup_steps else 1.0
    if train.lr_schedule == "constant":
        return train.lr * warm
    progress = min(1.0, max(0, step - train.warmup_steps) / train.decay_steps)
    return train.lr * warm * (train.lr_final + (1 - train.lr_final) * 0.5 * (1 + math.cos(math.pi * progress)))


def losses(model: HexNet, planes, policy, value) -> tuple[torch.Tensor, torch.Tensor]:
    """(policy cross-entropy against the visit distributions, value MSE against results)."""
    logits, predicted = model(planes)
    policy_loss = -(policy * F.log_softmax(logits, dim=1)).sum(1).mean()
    return policy_loss, F.mse_loss(predicted, value)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    return torch.device(name)


def make_optimizer(model: HexNet, train: TrainConfig) -> torch.optim.Optimizer:
    """AdamW or SGD; weight decay on conv and linear weights only, not on biases or batch norm."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    other = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": train.weight_decay}, {"params": other, "weight_decay": 0.0}]
    if train.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=train.lr, momentum=train.momentum)
    return torch.optim.AdamW(groups, lr=train.lr, betas=(train.momentum, 0.999))


class Trainer:
    """Reads games, keeps the window, steps the optimiser at the pace of the games."""

    def __init__(self, config: Config, source: GameSource, snapshot: Snapshot | None = None):
        self.config, self.source = config, source
        train = config.train
        torch.set_num_threads(config.device.trainer_threads)
        self.spec = NetSpec(config.game.board_size, config.model.blocks, config.model.channels)
        self.device = pick_device(config.device.trainer)
        torch.manual_seed(train.seed)
        self.rng = np.random.default_rng(train.seed)
        self.model = self.spec.build().to(self.device)
        self.params, self.flops_per_eval = count_params(self.model), count_flops(self.model)
        self.optimizer = make_optimizer(self.model, train)
        self.window = Window(train.window, self.spec.board_size)
        self.step = self.samples_trained = self.samples_forgiven = self.train_flops = 0
        self.skipped = 0  # games left out as unreadable
        if snapshot is not None:
            self._restore(snapshot)

    # -- games in

    def _positions(self, item: GameRecord | Exception):
        """The positions of one game, or None (logged and counted) if it cannot be used."""
        try:
            if isinstance(item, Exception):
                raise item
            if item.board_size != self.spec.board_size:
                raise ValueError(
                    f"a {item.board_size}x{item.board_size} game in a {self.spec.board_size}x{self.spec.board_size} run"
                )
            return item.positions(self.config.game.swap)
        except Exception as e:  # any fault of one record skips that record, never the training
            self.skipped += 1
            log.warning("skipped a game: %s", e)
            return None

    def poll(self, limit: int = 1000) -> int:
        """Reads new games into the window; returns the positions added."""
        added = 0
        for item in self.source.read(limit):
            positions = self._positions(item)
            if positions is not None:
                self.window.add(positions.planes, positions.policy, positions.value)
                added += len(positions.value)
        self._forgive()
        return added

    def _owed(self) -> float:
        """Samples the reuse target asks for and training has not yet given."""
        return self.config.train.reuse * self.window.seen - self.samples_trained - self.samples_forgiven

    def _forgive(self) -> None:
        """Caps what is owed at `reuse` passes over the positions in the window."""
        excess = self._owed() - self.config.train.reuse * self.window.size
        if excess >= 1:
            self.samples_forgiven += int(excess)

    def _refill(self, cursor: int, seen: int, origin: int) -> None:
        """Puts back the window as it was when the source stood at `cursor`."""
        self.window = Window(self.window.capacity, self.spec.board_size, origin)
        self.window.seen = end = seen
        for item in self.source.history(cursor):
            if end <= max(origin, seen - self.window.capacity):
                break
            positions = self._positions(item)
            if positions is not None:
                count = len(positions.value)
                self.window.put(end - count, positions.planes, positions.policy, positions.value)
                end -= count
        self.source.cursor = cursor

    # -- steps

    def ready(self) -> bool:
        """Enough positions in to train at all (`train.min_positions`, or a full window)."""
        train = self.config.train
        return self.window.size >= min(train.min_positions, train.window)

    def steps_due(self) -> int:
        """Steps the reuse target allows now (0 until it is ready)."""
        train = self.config.train
        if not self.ready():
            return 0
        return max(0, int(self._owed()) // train.batch_size)

    def train_step(self) -> dict:
        """One optimiser step on a fresh batch; returns its metrics."""
        train = self.config.train
        lr = learning_rate(self.step, train)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        planes, policy, value = (
            torch.from_numpy(a).to(self.device) for a in self.window.sample(train.batch_size, self.rng)
        )
        self.model.train()
        policy_loss, value_loss = losses(self.model, planes, policy, value)
        loss = policy_loss + train.value_weight * value_loss
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.step += 1
        self.samples_trained += train.batch_size
        self.train_flops += TRAIN_FLOPS_PER_SAMPLE * self.flops_per_eval * train.batch_size
        return {"step": self.step, "lr": lr, "policy_loss": policy_loss.item(), "value_loss": value_loss.item()}

    def run(
        self,
        should_stop: Callable[[], bool] = lambda: False,
        wait: Callable[[float], None] = time.sleep,
        on_snapshot: Callable[[Snapshot, float], None] | None = None,
        on_metrics: Callable[[dict], None] | None = None,
        config: Callable[[], Config] | None = None,
        paused: Callable[[], bool] = lambda: False,
        max_steps: int | None = None,
        metrics_seconds: float = 2.0,
    ) -> None:
        """The training loop: trains while steps are due, waits for games when ahead.

        Runs until `should_stop()` (or `max_steps` more steps). `config()` is
        the config in force, applied when its [train] keys change; `paused()`
        holds the loop. `on_snapshot(snapshot, seconds)` gets a snapshot every
        `snapshot_every` steps and one for the steps left at the end, with the
        seconds spent training since the last; `on_metrics(values)` gets the
        losses and the share of time spent waiting for games every
        `metrics_seconds`. `wait(seconds)` sleeps (a worker wakes it early).
        """
        target = None if max_steps is None else self.step + max_steps
        busy, waited, losses, lr, unsaved = 0.0, 0.0, [], 0.0, 0
        last_metrics = time.monotonic()
        while not should_stop() and (target is None or self.step < target):
            if config is not None and config().train != self.config.train:
                self.apply(config())
            if paused():
                wait(1.0)
                continue
            self.poll()
            if on_metrics and time.monotonic() - last_metrics > metrics_seconds:
                on_metrics(self._metrics(losses, lr, waited / (time.monotonic() - last_metrics)))
                losses, waited, last_metrics = [], 0.0, time.monotonic()
            if self.steps_due() == 0:
                started = time.monotonic()
                wait(self.config.train.poll_seconds)
                waited += time.monotonic() - started
                continue
            started = time.perf_counter()
            result = self.train_step()
            busy += time.perf_counter() - started
            unsaved += 1
            losses.append((result["policy_loss"], result["value_loss"]))
            lr = result["lr"]
            if on_snapshot and self.step % self.config.train.snapshot_every == 0:
                on_snapshot(self.snapshot(), busy)
                busy, unsaved = 0.0, 0
        if on_snapshot and unsaved:  # a graceful stop keeps the steps since the last snapshot
            on_snapshot(self.snapshot(), busy)

    def _metrics(self, losses: list, lr: float, waiting: float) -> dict:
        # The tuner reads "waiting" as "self-play cannot keep up": it is sent
        # while idle too, once enough games are in to train at all.
        values = {"train_step": self.step, "window": self.window.size, "skipped_games": self.skipped}
        if self.ready():
            values["train_waiting"] = min(1.0, waiting)
        if losses:
            policy_loss, value_loss = np.mean(losses, axis=0)
            values.update(policy_loss=float(policy_loss), value_loss=float(value_loss), lr=lr)
        return values

    def apply(self, config: Config) -> None:
        """Takes a new config's live keys (fixed keys were refused before this)."""
        train = config.train
        torch.set_num_threads(config.device.trainer_threads)
        if train.window != self.window.capacity:
            self.window = self.window.resized(train.window)
        for group in self.optimizer.param_groups:
            if group["weight_decay"]:
                group["weight_decay"] = train.weight_decay
            if "momentum" in group:
                group["momentum"] = train.momentum
            else:
                group["betas"] = (train.momentum, group["betas"][1])
        self.config = config

    # -- snapshots

    def snapshot(self) -> Snapshot:
        return Snapshot(
            spec=self.spec,
            weights=to_cpu(self.model.state_dict()),
            params=self.params,
            flops_per_eval=self.flops_per_eval,
            step=self.step,
            positions_seen=self.window.seen,
            samples_trained=self.samples_trained,
            samples_forgiven=self.samples_forgiven,
            train_flops=self.train_flops,
            cursor=self.source.cursor,
            window_origin=self.window.origin,
            optimizer=to_cpu(self.optimizer.state_dict()),
            rng={"numpy": self.rng.bit_generator.state, "torch": torch.get_rng_state()},
        )

    def _restore(self, snapshot: Snapshot) -> None:
        if snapshot.spec != self.spec:
            raise ValueError(f"the snapshot's network {snapshot.spec} is not this run's {self.spec}")
        self.model.load_state_dict(clean_weights(snapshot.weights))
        if snapshot.optimizer is not None:
            self.optimizer.load_state_dict(snapshot.optimizer)
        self.step, self.samples_trained = snapshot.step, snapshot.samples_trained
        self.samples_forgiven = snapshot.samples_forgiven
        self.train_flops = snapshot.train_flops
        if snapshot.rng:
            self.rng.bit_generator.state = snapshot.rng["numpy"]
            torch.set_rng_state(snapshot.rng["torch"])
        self._refill(snapshot.cursor, snapshot.positions_seen, snapshot.window_origin)
