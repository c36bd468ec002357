"""`Snapshot`: a network and everything needed to resume its training, as bytes.

The one format for weights: the trainer writes it, the daemon stores it in
`models.weights` (without optimiser state) and `models.checkpoint` (whole),
and `hexzd.nn.loader` reads it back for every player.
"""

import io
import time
from dataclasses import asdict, dataclass, field

import torch

from hexzd.nn.net import HexNet, NetSpec

SNAPSHOT_FORMAT = 1


def to_cpu(obj):
    """A copy of a state dict (nested) with every tensor on the CPU, plain layout."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu").contiguous().clone()
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_cpu(v) for v in obj)
    return obj


_WRAPPER_PREFIXES = ("_orig_mod.", "module.")  # torch.compile; DataParallel and DDP


def clean_weights(weights: dict) -> dict:
    """Weights as a plain CPU HexNet expects them, whoever wrote them.

    Strips the prefixes that torch.compile and DataParallel add, moves every
    tensor to the CPU in the plain layout and widens half floats to float32.
    """
    out = {}
    for key, t in weights.items():
        for prefix in _WRAPPER_PREFIXES:
            key = key.removeprefix(prefix)
        t = to_cpu(t)
        out[key] = t.float() if t.is_floating_point() else t
    return out


@dataclass
class Snapshot:
    """A network and everything needed to resume its training.

    `to_bytes` is what the daemon stores in `models.weights`; `meta` has the
    values of the other `models` columns.
    """

    spec: NetSpec
    weights: dict  # state dict, CPU float32
    params: int
    flops_per_eval: int
    step: int = 0
    positions_seen: int = 0
    samples_trained: int = 0
    samples_forgiven: int = 0  # the pacing target's samples forgiven, see the module docstring
    train_flops: int = 0
    cursor: int = 0  # the source's cursor after the last game in the window
    window_origin: int = 0  # Window.origin: where the window started counting after a resize
    optimizer: dict | None = None  # optimizer.state_dict(), tensors on the CPU
    rng: dict = field(default_factory=dict)  # {"numpy": bit generator state, "torch": ByteTensor}
    created_at: float = field(default_factory=time.time)

    def model(self) -> HexNet:
        """The network in eval mode, on the CPU."""
        model = self.spec.build()
        model.load_state_dict(clean_weights(self.weights))
        return model.eval()

    def meta(self) -> dict:
        return {
            "train_step": self.step,
            "positions_seen": self.positions_seen,
            "params": self.params,
            "flops_per_eval": self.flops_per_eval,
            "train_flops": self.train_flops,
        }

    def to_bytes(self) -> bytes:
        data = asdict(self)
        data["spec"] = self.spec.to_dict()
        data["format"] = SNAPSHOT_FORMAT
        buffer = io.BytesIO()
        torch.save(data, buffer)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, blob: bytes) -> "Snapshot":
        """Reads a snapshot written on any device; only plain data is unpickled."""
        data = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
        version = data.pop("format", None)
        if version != SNAPSHOT_FORMAT:
            raise ValueError(f"snapshot format {version}, this hexzd reads {SNAPSHOT_FORMAT}")
        data["spec"] = NetSpec(**data["spec"])
        data["weights"] = clean_weights(data["weights"])
        return cls(**data)
