"""mps: Apple's Metal backend, the folded model cast to fp32 or fp16."""

import torch

from hexzd.nn.backends.base import _DTYPES, Backend, _check, fold_batch_norm, register
from hexzd.nn.net import HexNet, planes

__all__ = ["MpsEvaluator"]


class MpsEvaluator:
    """Apple's Metal backend: the folded model cast to fp32 or fp16."""

    backend, device = "mps", "mps"

    def __init__(self, model: HexNet, precision: str = "fp16"):
        self.spec, self.precision, self.reason = model.spec, precision, "asked for"
        self.dtype = _DTYPES[precision]
        self.model = fold_batch_norm(model).to("mps", dtype=self.dtype)

    def evaluate(self, codes):
        codes = torch.from_numpy(_check(codes, self.spec)).to("mps")
        with torch.inference_mode():
            logits, values = self.model(planes(codes, self.spec.board_size, self.dtype))
        return logits.float().cpu().numpy(), values.float().cpu().numpy()

    def warm(self, max_batch: int) -> None:
        pass


def _available() -> tuple[str, ...]:
    return ("fp32", "fp16") if torch.backends.mps.is_available() else ()


def _build(model: HexNet, precision: str, device: str) -> MpsEvaluator:
    return MpsEvaluator(model, precision)


register(Backend("mps", priority=30, available=_available, build=_build))
