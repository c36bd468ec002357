"""tensorrt: torch-tensorrt engines per (snapshot, batch bucket, precision), cached on disk.

fp16, or int8 where it holds TOLERANCE; needs the `tensorrt` extra (and
modelopt for int8). The engine cache is hexzd.nn.backends.engine_cache.
"""

import copy
import logging
import re

import torch

from hexzd.native.board import NUM_PLANES
from hexzd.nn.backends.base import (
    PROBE_BATCH,
    TOLERANCE,
    Backend,
    fold_batch_norm,
    max_difference,
    register,
    sample_codes,
)
from hexzd.nn.backends.eager import EagerEvaluator
from hexzd.nn.backends.engine_cache import cached, tensorrt_cache_dir, weights_digest
from hexzd.nn.backends.staging import _bucket, _Staged
from hexzd.nn.net import HexNet, planes

__all__ = ["TENSORRT_BUCKETS", "TensorRTEvaluator"]

log = logging.getLogger(__name__)

# TensorRT builds an engine per bucket, which takes far longer than a graph
# capture: powers of two, built when first used (and cached on disk).
TENSORRT_BUCKETS = tuple(2**k for k in range(13))  # 1 .. 4096


class TensorRTEvaluator(_Staged):
    """TensorRT engines built by torch-tensorrt, one per batch bucket, cached on disk.

    Engines are built for TENSORRT_BUCKETS as they are first used (or up to
    a batch by `warm`), and stored under tensorrt_cache_dir() by `cached`,
    keyed by (weights digest, board size, bucket, precision, torch-tensorrt
    version, GPU): a restarted worker, or a second one, loads them instead
    of building. The engine takes the 4 planes; the codes cross to the
    device (pinned buffers, this evaluator's stream, as CudaEvaluator) into
    a preallocated buffer and are expanded there. int8 is calibrated with
    ModelOpt on `sample_codes` and refused (ValueError) when it misses
    TOLERANCE["int8"].
    """

    backend, device = "tensorrt", "cuda"

    def __init__(self, model: HexNet, precision: str = "fp16", max_batch: int | None = None):
        import torch_tensorrt  # noqa: F401  (fails here, not later, when the extra is missing)

        if precision not in ("fp16", "int8"):
            raise ValueError(f"tensorrt runs fp16 or int8, not {precision}")
        self.spec, self.precision, self.reason = model.spec, precision, "asked for"
        self.reference = copy.deepcopy(model).float().cpu().eval()
        self.digest = weights_digest(self.reference)
        # fp16: an fp16 model with fp16 inputs, explicit typing that every torch-tensorrt 2.x
        # accepts; int8: fp32 inputs, quantized inside.
        self.dtype = torch.float16 if precision == "fp16" else torch.float32
        self._device = torch.device("cuda", torch.cuda.current_device())
        with torch.cuda.device(self._device):
            self.model = fold_batch_norm(self.reference).to(self._device, self.dtype)
            self.stream = torch.cuda.Stream(self._device)
            self._done = torch.cuda.Event()
            largest = TENSORRT_BUCKETS[-1]
            self._codes = torch.zeros(largest, self.spec.board_size**2 + 1, dtype=torch.uint8, device=self._device)
        self._stage_buffers(TENSORRT_BUCKETS, pin=True)
        self._engines: dict[int, object] = {}  # bucket -> its compiled engine
        if precision == "int8":
            self._check_int8()
        if max_batch:
            self.warm(max_batch)

    def warm(self, max_batch: int) -> None:
        """Builds (or loads) the engine of every bucket up to the one of max_batch."""
        for bucket in TENSORRT_BUCKETS:
            if bucket <= _bucket(max_batch, TENSORRT_BUCKETS):
                self._engine(bucket)

    def _engine(self, bucket: int):
        if bucket in self._engines:
            return self._engines[bucket]
        import torch_tensorrt

        n = self.spec.board_size
        gpu = re.sub(r"[^A-Za-z0-9]+", "_", torch.cuda.get_device_name(self._device))
        name = f"{self.digest}-n{n}-b{bucket}-{self.precision}-trt{torch_tensorrt.__version__}-{gpu}.ep"
        example = torch.zeros(bucket, NUM_PLANES, n, n, device=self._device, dtype=self.dtype)
        engine = cached(
            tensorrt_cache_dir() / name,
            build=lambda: self._build(example),
            save=lambda engine, temp: torch_tensorrt.save(engine, str(temp), arg_inputs=[example]),
            load=lambda path: torch.export.load(str(path)).module(),
        )
        log.info("TensorRT engine %s ready", name)
        self._engines[bucket] = engine
        return engine

    def _build(self, example):
        import torch_tensorrt

        if self.precision == "fp16":
            return torch_tensorrt.compile(self.model, ir="dynamo", arg_inputs=[example])
        import modelopt.torch.quantization as mtq
        from modelopt.torch.quantization.utils import export_torch_mode

        n = self.spec.board_size
        calibration = planes(torch.from_numpy(sample_codes(n, 512, seed=1)).to(self._device), n).contiguous()
        quantized = copy.deepcopy(self.model)
        mtq.quantize(quantized, mtq.INT8_DEFAULT_CFG, forward_loop=lambda m: m(calibration))
        with export_torch_mode():
            return torch_tensorrt.compile(quantized, ir="dynamo", arg_inputs=[example], enabled_precisions={torch.int8})

    def _launch(self, b: int, bucket: int) -> None:
        engine = self._engine(bucket)
        with torch.cuda.device(self._device), torch.cuda.stream(self.stream), torch.inference_mode():
            self._codes[:b].copy_(self._host_in[:b], non_blocking=True)
            x = planes(self._codes[:bucket], self.spec.board_size, self.dtype).contiguous()
            logits, values = engine(x)
            self._host_logits[:b].copy_(logits[:b].float(), non_blocking=True)
            self._host_values[:b].copy_(values[:b].float(), non_blocking=True)
            self._done.record(self.stream)
        self._done.synchronize()

    def _check_int8(self):
        codes = sample_codes(self.spec.board_size, PROBE_BATCH, seed=2)
        gap = max_difference(self.evaluate(codes), EagerEvaluator(self.reference).evaluate(codes))
        if gap > TOLERANCE["int8"]:
            raise ValueError(f"int8 misses its tolerance: {gap:.3g} > {TOLERANCE['int8']}")


def _has_tensorrt() -> bool:
    try:
        import torch_tensorrt  # noqa: F401  (the `tensorrt` extra)
    except ImportError:
        return False
    return True


def _has_modelopt() -> bool:
    try:
        import modelopt.torch.quantization  # noqa: F401  (int8 calibration for TensorRT)
    except ImportError:
        return False
    return True


def _available() -> tuple[str, ...]:
    if not torch.cuda.is_available() or not _has_tensorrt():
        return ()
    return ("fp16", "int8") if _has_modelopt() else ("fp16",)


def _build(model: HexNet, precision: str, device: str) -> TensorRTEvaluator:
    return TensorRTEvaluator(model, precision)


register(Backend("tensorrt", priority=40, available=_available, build=_build))
