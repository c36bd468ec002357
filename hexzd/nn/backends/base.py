"""What every backend shares: the `Evaluator` interface, the registry, and the input.

A backend is a module of this package that registers one `Backend`: its
name, its priority, `available()` (the precisions this machine runs) and
`build(model, precision, device)` (an evaluator, not warmed). The entry
points of hexzd.nn.inference (available, build, make_evaluator) go through
`registered()` and never name a backend.

The input is the compact encoding that the search writes, uint8[B, n*n + 1]
(the layout is defined once, in hexzd.native.board.codes_one): n*n + 1 bytes
a position cross to the device, and every backend expands them to the
network's planes there with hexzd.nn.net.planes, in the precision it runs.
Float planes [B, 4, n, n] (Games.features, the trainer's form) are still
accepted and turned into codes on the host first (`_check`), for callers
that hold planes.

Every backend returns float32 numpy arrays: logits[B, n*n] and values[B].
Its outputs match eager fp32 within TOLERANCE[precision]: the largest
absolute difference in policy probabilities (softmax of the logits) and in
values (`max_difference`), on positions from `sample_codes`.
"""

import copy
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from hexzd.native.board import CODE_OPPONENT, CODE_OWN, NUM_PLANES
from hexzd.nn.net import HexNet, NetSpec

__all__ = [
    "PRECISIONS",
    "PROBE_BATCH",
    "TOLERANCE",
    "Backend",
    "Evaluator",
    "codes_from_planes",
    "fold_batch_norm",
    "max_difference",
    "register",
    "registered",
    "sample_codes",
]

PRECISIONS = ("fp32", "bf16", "fp16", "int8")
TOLERANCE = {"fp32": 1e-4, "bf16": 4e-2, "fp16": 1e-2, "int8": 5e-2}
PROBE_BATCH = 256  # the batch at which "auto" compares backends: a self-play worker's usual size
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class Evaluator(Protocol):
    backend: str
    precision: str
    device: str
    spec: NetSpec
    reason: str  # why this backend: the auto-selection's measurement, or "asked for"

    def evaluate(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8[B, n*n + 1] codes (or float32[B, 4, n, n] planes) -> (float32[B, n*n] logits, float32[B] values)."""
        ...

    def warm(self, max_batch: int) -> None:
        """Prepares every batch size up to max_batch (CUDA graphs, engines); a no-op elsewhere."""
        ...


@dataclass(frozen=True)
class Backend:
    """One backend's entry in the registry.

    priority: how fast the kind is expected to be; `available` lists the pairs
    by it, lowest first ("fastest kinds last"), and "auto" tries them in that
    order. probed: "auto" and `available` consider it; eager, the reference,
    is built only when asked for by name.
    """

    name: str
    priority: int
    available: Callable[[], tuple[str, ...]]  # the precisions this machine runs; () where none
    build: Callable[[HexNet, str, str], Evaluator]  # (model, precision, device) -> an evaluator, not warmed
    probed: bool = True


_REGISTRY: dict[str, Backend] = {}


def register(backend: Backend) -> Backend:
    """Adds a backend to the registry; each backend module registers itself once, on import."""
    if backend.name in _REGISTRY:
        raise ValueError(f"backend {backend.name!r} is registered twice")
    _REGISTRY[backend.name] = backend
    return backend


def registered() -> dict[str, Backend]:
    """Every registered backend by name, by priority (lowest first)."""
    return {b.name: b for b in sorted(_REGISTRY.values(), key=lambda b: b.priority)}


def fp32_only(backend: str, precision: str) -> None:
    """Refuses any precision but fp32, for the backends that run only that."""
    if precision != "fp32":
        raise ValueError(f"the {backend} backend runs fp32, not {precision}")


def sample_codes(n: int, batch: int, seed: int = 0) -> np.ndarray:
    """Plausible network inputs, uint8[B, n*n + 1] codes: random stones, as many
    for each player or one more for the opponent (who moved last), and swap
    available in about half of the positions with a single stone.

    For accuracy checks and benchmarks, where the position need not come from
    a real game but should look like one to the network.
    """
    rng = np.random.default_rng(seed)
    nn_ = n * n
    out = np.zeros((batch, nn_ + 1), np.uint8)
    for b in range(batch):
        stones = rng.integers(0, nn_)
        cells = rng.permutation(nn_)[:stones]
        out[b, cells[0::2]] = CODE_OPPONENT
        out[b, cells[1::2]] = CODE_OWN
        out[b, nn_] = stones == 1 and rng.random() < 0.5
    return out


def codes_from_planes(planes: np.ndarray) -> np.ndarray:
    """The codes of float planes [B, 4, n, n] (hexzd.native.board.features): uint8[B, n*n + 1]."""
    b, n = planes.shape[0], planes.shape[-1]
    out = np.empty((b, n * n + 1), np.uint8)
    out[:, : n * n] = (planes[:, 0] * CODE_OWN + planes[:, 1] * CODE_OPPONENT).reshape(b, n * n)
    out[:, n * n] = planes[:, 3, 0, 0]
    return out


def max_difference(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> float:
    """The largest gap in policy probability or value between two evaluations."""
    pa, pb = (torch.softmax(torch.from_numpy(x[0]).double(), 1).numpy() for x in (a, b))
    return float(max(np.abs(pa - pb).max(initial=0), np.abs(a[1] - b[1]).max(initial=0)))


def fold_batch_norm(model: HexNet) -> HexNet:
    """A copy of the model for inference, each conv + BN pair folded into one conv.

    Exact up to rounding, and it saves the batch-norm passes over the activations.
    """
    model = copy.deepcopy(model).eval()
    for seq in model.modules():
        if not isinstance(seq, nn.Sequential):
            continue
        for i in range(len(seq) - 1):
            conv, norm = seq[i], seq[i + 1]
            if isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d):
                seq[i] = fuse_conv_bn_eval(conv, norm)
                seq[i + 1] = nn.Identity()
    return model


def _check(codes: np.ndarray, spec: NetSpec) -> np.ndarray:
    """The codes uint8[B, n*n + 1] of an input: codes as they are, float planes converted."""
    n = spec.board_size
    codes = np.asarray(codes)
    if codes.ndim == 4 and codes.shape[1:] == (NUM_PLANES, n, n):
        return codes_from_planes(codes)
    if codes.ndim != 2 or codes.shape[1] != n * n + 1:
        raise ValueError(
            f"input of shape {codes.shape}, expected uint8 codes [B, {n * n + 1}]"
            f" (or float planes [B, {NUM_PLANES}, {n}, {n}])"
        )
    return np.ascontiguousarray(codes, dtype=np.uint8)


class _TorchThreads:
    """torch's CPU threads as the building thread had them, set in whichever thread evaluates.

    torch.set_num_threads holds for the thread that calls it: a thread started
    later (the inference service's) runs an OpenMP thread per core whatever
    torch.get_num_threads says there. On the 2-core VM, with [device]
    threads = 1, a service thread ran a matrix product 1.9x as fast as the
    main thread: on both cores, one of them the search thread's.
    """

    def __init__(self):
        self.threads, self._here = torch.get_num_threads(), threading.local()

    def __call__(self) -> None:
        if getattr(self._here, "threads", None) != self.threads:
            torch.set_num_threads(self.threads)
            self._here.threads = self.threads


def _true_fp32():
    """cuDNN runs fp32 convolutions in TF32 unless told not to; fp32 here means fp32."""
    cudnn = torch.backends.cudnn
    return cudnn.flags(
        enabled=cudnn.enabled, benchmark=cudnn.benchmark, deterministic=cudnn.deterministic, allow_tf32=False
    )
