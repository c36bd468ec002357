"""cpu: fp32 with batch norm folded into the convolutions, channels_last."""

import torch

from hexzd.nn.backends.base import Backend, _check, _TorchThreads, fold_batch_norm, fp32_only, register
from hexzd.nn.net import HexNet, planes

__all__ = ["CpuEvaluator"]


class CpuEvaluator:
    """fp32 on the CPU with batch norm folded and channels_last, which oneDNN runs faster."""

    backend, precision, device = "cpu", "fp32", "cpu"

    def __init__(self, model: HexNet):
        self.model = fold_batch_norm(model).float().cpu().to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.spec, self.reason = model.spec, "asked for"
        self._threads = _TorchThreads()

    def evaluate(self, codes):
        self._threads()
        x = planes(torch.from_numpy(_check(codes, self.spec)), self.spec.board_size)  # channels_last already
        with torch.inference_mode():
            logits, values = self.model(x)
        return logits.numpy(), values.numpy()

    def warm(self, max_batch: int) -> None:
        pass


def _build(model: HexNet, precision: str, device: str) -> CpuEvaluator:
    fp32_only("cpu", precision)
    return CpuEvaluator(model)


register(Backend("cpu", priority=10, available=lambda: ("fp32",), build=_build))
