"""The one way to load a model: `load(db or blob, model_id, device) -> Network`.

Self-play, the trainer's resume, duels, perfect play, `hexzd htp`, `play`
and `perfect` all load through here; `hexzd export` takes the torch module
itself (`snapshot(...).model()`). `find(db, "best" or an id)` says which
model a `--model` option names. The `auto` backend probe (see
hexzd.nn.inference) times every backend for a moment; its choice depends on
the network's shape and the machine, not on the weights, so a process makes
it once per shape and reuses it for every later model.
"""

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from hexzd import store
from hexzd.config import Config, DeviceConfig, stored
from hexzd.nn.backends.base import Evaluator
from hexzd.nn.inference import build, make_evaluator
from hexzd.nn.net import NetSpec
from hexzd.nn.snapshot import Snapshot

__all__ = ["Network", "find", "load", "snapshot"]

# (spec, backend asked, precision asked, threads) -> (backend, precision, why) chosen by the probe
_chosen: dict[tuple, tuple[str, str, str]] = {}

# Batches in flight at once on an inference service, by device: on a GPU, a
# second evaluator (with its own stream) copies one batch while the other
# computes; on the CPU the cores are the limit and a second would only compete.
IN_FLIGHT = {"cuda": 2}


@dataclass
class Network:
    """A model ready to evaluate positions: codes uint8[B, n*n + 1] -> (logits[B, n*n], values[B])."""

    model_id: int | None
    evaluate: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
    spec: NetSpec | None = None
    reason: str = ""  # the backend and why it was chosen
    backend: str = ""  # the backend and precision in use, e.g. "cuda bf16"
    evaluators: list = field(default_factory=list)  # one per batch in flight on an inference service

    @property
    def board_size(self) -> int:
        return self._spec().board_size

    @property
    def blocks(self) -> int:
        return self._spec().blocks

    @property
    def channels(self) -> int:
        return self._spec().channels

    def _spec(self) -> NetSpec:
        if self.spec is None:
            raise ValueError("this network was made without its NetSpec")
        return self.spec


def load(
    source, model_id: int | None = None, device: DeviceConfig | None = None, in_flight: int | None = None
) -> Network:
    """The network of `model_id` in the state file `source` (a path), or of snapshot bytes.

    `in_flight` evaluators of it go to `Network.evaluators`, for an inference
    service (default: IN_FLIGHT of the backend's device, else 1).

    Raises KeyError for a model that is not in the file or whose weights
    were pruned.
    """
    stored_snapshot = snapshot(source, model_id)
    evaluator = _evaluator(stored_snapshot, device or DeviceConfig())
    backend = f"{evaluator.backend} {evaluator.precision}"
    copies = in_flight or IN_FLIGHT.get(evaluator.device, 1)
    evaluators = [evaluator]
    if copies > 1:
        model = stored_snapshot.model()
        evaluators += [build(model, evaluator.backend, evaluator.precision) for _ in range(copies - 1)]
    return Network(model_id, evaluator.evaluate, stored_snapshot.spec, evaluator.reason, backend, evaluators)


def snapshot(source, model_id: int | None = None) -> Snapshot:
    """The Snapshot of `model_id` in the state file `source` (a path), or of snapshot bytes.

    Raises KeyError for a model that is not in the file or whose weights
    were pruned.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        return Snapshot.from_bytes(bytes(source))
    if model_id is None:
        raise KeyError("a state file's network needs its model id")
    with store.read_only(source) as connection:
        return Snapshot.from_bytes(store.weights(connection, model_id))


def find(db, model: str = "best") -> tuple[int | None, Config | None]:
    """(the id of the model that `model` names in the state file `db`, the run's config).

    model: `best` (the latest promoted; None before the first promotion) or a
    model id, which is not checked here: `snapshot` and `load` say whether it
    is in the file. The config is None in a file made before the daemon
    recorded one. Raises ValueError for any other `model`, and
    store.StateFileError for a file that is not a state file this hexzd reads.
    """
    if model != "best" and not model.isdigit():
        raise ValueError(f"--model is `best` or a model id, not '{model}'")
    with store.consistent_read(db) as connection:
        text = store.config_text(connection)
        model_id = store.best_model(connection) if model == "best" else int(model)
    return model_id, stored(text) if text else None


def _evaluator(snapshot: Snapshot, d: DeviceConfig) -> Evaluator:
    key = (snapshot.spec, d.backend, d.precision, d.threads)
    if key in _chosen:
        backend, precision, why = _chosen[key]
        evaluator = make_evaluator(snapshot, backend, precision, d.threads)
        evaluator.reason = f"{why}, chosen for an earlier model of this shape"
        return evaluator
    evaluator = make_evaluator(snapshot, d.backend, d.precision, d.threads)
    _chosen[key] = (evaluator.backend, evaluator.precision, evaluator.reason)
    return evaluator
