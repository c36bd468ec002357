"""The policy/value network: an AlphaZero-style residual tower.

Input: the canonical planes of `hexzd.native.board.features`,
float32[B, NUM_PLANES, n, n], where the player to move connects top to
bottom. Evaluators receive the compact form instead, uint8[B, n*n + 1]
(`hexzd.native.board.codes_one`), and expand it with `planes` on their own
device: the trainer's planes and the search's codes give the same input.
Output: policy logits float32[B, n*n] in canonical indices (the search maps
the swap move onto its cell) and a value float32[B] in (-1, 1) for the
player to move.

    stem    conv3x3(NUM_PLANES -> C), BN, ReLU
    tower   `blocks` x [conv3x3, BN, ReLU, conv3x3, BN, + skip, ReLU]
    policy  conv1x1(C -> 2), BN, ReLU, linear(2 n^2 -> n^2)
    value   conv1x1(C -> 1), BN, ReLU, linear(n^2 -> C), ReLU, linear(C -> 1), tanh

The convolutions have no bias: the batch norm that follows supplies it.

Compute is accounted for as in Jones (2021) and Neumann & Gros (2022): the
FLOPs of one evaluation are counted from the layers that actually run (torch's
FlopCounterMode on a forward pass), with one multiply-add as 2 FLOPs. Only
convolutions and matrix products count; batch norm, ReLU and the additions are
under 1% of the total at every size in docs/how/network.md and are left out. A
training sample costs 3x a forward pass (forward, and a backward of twice
the forward's cost).
"""

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from hexzd.native.board import CODE_OPPONENT, CODE_OWN, NUM_PLANES

__all__ = ["HexNet", "NetSpec", "TRAIN_FLOPS_PER_SAMPLE", "count_flops", "count_params", "planes"]

TRAIN_FLOPS_PER_SAMPLE = 3  # x flops_per_eval: forward plus a backward of twice its cost


@dataclass(frozen=True)
class NetSpec:
    """Everything needed to rebuild a network's layers; stored in snapshots."""

    board_size: int
    blocks: int
    channels: int

    def build(self) -> "HexNet":
        return HexNet(self)

    def to_dict(self) -> dict:
        return asdict(self)


def _conv_bn(cin: int, cout: int, k: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout)]


class ResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            *_conv_bn(channels, channels, 3), nn.ReLU(inplace=True), *_conv_bn(channels, channels, 3)
        )

    def forward(self, x):
        return torch.relu(x + self.body(x))


class HexNet(nn.Module):
    """The residual tower with a policy head and a value head."""

    def __init__(self, spec: NetSpec):
        super().__init__()
        self.spec = spec
        n, c = spec.board_size, spec.channels
        self.stem = nn.Sequential(*_conv_bn(NUM_PLANES, c, 3), nn.ReLU(inplace=True))
        self.tower = nn.Sequential(*(ResidualBlock(c) for _ in range(spec.blocks)))
        self.policy = nn.Sequential(
            *_conv_bn(c, 2, 1), nn.ReLU(inplace=True), nn.Flatten(), nn.Linear(2 * n * n, n * n)
        )
        self.value = nn.Sequential(
            *_conv_bn(c, 1, 1),
            nn.ReLU(inplace=True),
            nn.Flatten(),
            nn.Linear(n * n, c),
            nn.ReLU(inplace=True),
            nn.Linear(c, 1),
            nn.Tanh(),
        )

    def forward(self, planes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """planes float[B, 4, n, n] -> (logits float[B, n*n], values float[B])."""
        x = self.tower(self.stem(planes))
        return self.policy(x), self.value(x).squeeze(1)


def planes(codes: torch.Tensor, n: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The network's input planes [B, NUM_PLANES, n, n] from compact codes uint8[B, n*n + 1].

    Runs where `codes` is, so a GPU evaluator sends n*n + 1 bytes a position
    and builds the planes in the model's dtype on the device. Every backend
    expands through here. Only elementwise kernels, no host tensors: a CUDA
    graph can capture it. The result has channels_last strides (stacked along
    the last dimension), the layout the evaluators run in, and holds exactly
    the values of hexzd.native.board.features.
    """
    nn_ = n * n
    cells = codes[:, :nn_].reshape(-1, n, n)
    own = cells == CODE_OWN
    stacked = torch.stack(
        [own, cells == CODE_OPPONENT, torch.ones_like(own), codes[:, nn_:].reshape(-1, 1, 1).expand_as(own) != 0], -1
    )
    return stacked.to(dtype).permute(0, 3, 1, 2)


def count_params(model: nn.Module) -> int:
    """Trainable parameters (batch norm's running statistics are buffers, not counted)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_flops(model: HexNet) -> int:
    """FLOPs of one evaluation (batch 1), counted on a real forward pass."""
    n = model.spec.board_size
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, NUM_PLANES, n, n, device=device))
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())
