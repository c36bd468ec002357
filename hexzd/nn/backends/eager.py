"""eager: the plain model, fp32, on any device; the reference for every other backend.

On the CPU it is what the others are checked against (TOLERANCE), and on
each device the baseline that benchmarks compare with. "auto" never picks
it: it is built when asked for by name.
"""

import copy

import torch

from hexzd.nn.backends.base import Backend, _check, _TorchThreads, _true_fp32, fp32_only, register
from hexzd.nn.net import HexNet, planes

__all__ = ["EagerEvaluator"]


class EagerEvaluator:
    """The model as it trains, in fp32: on the CPU, the reference for every other backend."""

    backend, precision = "eager", "fp32"

    def __init__(self, model: HexNet, device: str = "cpu"):
        self.model = copy.deepcopy(model).float().to(device).eval()
        self.spec, self.device, self.reason = model.spec, device, "asked for"
        self._threads = _TorchThreads()

    def evaluate(self, codes):
        self._threads()
        codes = torch.from_numpy(_check(codes, self.spec)).to(self.device)
        x = planes(codes, self.spec.board_size).contiguous()  # the layout the model trains in
        with torch.inference_mode(), _true_fp32():
            logits, values = self.model(x)
        return logits.cpu().numpy(), values.cpu().numpy()

    def warm(self, max_batch: int) -> None:
        pass


def _build(model: HexNet, precision: str, device: str) -> EagerEvaluator:
    fp32_only("eager", precision)
    return EagerEvaluator(model, device)


register(Backend("eager", priority=0, available=lambda: ("fp32",), build=_build, probed=False))
