"""cuda: folded, channels_last, the weights cast to the precision once, one CUDA graph per batch bucket."""

import torch

from hexzd.nn.backends.base import _DTYPES, Backend, _true_fp32, fold_batch_norm, register
from hexzd.nn.backends.staging import BUCKETS, _bucket, _Staged
from hexzd.nn.net import HexNet, planes

__all__ = ["CudaEvaluator"]


class CudaEvaluator(_Staged):
    """CUDA: folded, channels_last, weights in the precision, a CUDA graph per batch bucket.

    A graph replays the whole forward pass, the expansion of the codes
    included, as one launch, which is what small networks need: at batch
    256 their kernels are shorter than the launch overhead. The batch is
    padded up to its bucket (BUCKETS); the padding rows are never read back.
    bf16 and fp16 cast the folded weights once, and the planes are built in
    that dtype on the device: no autocast, no cast kernels per call. Each
    evaluator has its own stream, so evaluators in several threads overlap;
    the copies up and down are asynchronous on it, from and to pinned
    buffers (_Staged), with one event wait per call.

    Graphs are captured as buckets are first used, or all up to a batch at
    once by `warm(max_batch)` (the constructor's max_batch), largest first:
    they share one memory pool, which the largest sizes.
    """

    backend, device = "cuda", "cuda"

    def __init__(self, model: HexNet, precision: str = "bf16", graphs: bool = True, max_batch: int | None = None):
        if precision not in ("fp32", "bf16", "fp16"):
            raise ValueError(f"cuda runs fp32, bf16 or fp16, not {precision}")
        self.spec, self.precision, self.reason = model.spec, precision, "asked for"
        self.dtype = _DTYPES[precision]
        self._device = torch.device("cuda", torch.cuda.current_device())
        with torch.cuda.device(self._device):
            self.model = fold_batch_norm(model).to(self._device, self.dtype).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
            self.stream = torch.cuda.Stream(self._device)
            self._done = torch.cuda.Event()
            self._codes = torch.zeros(BUCKETS[-1], self.spec.board_size**2 + 1, dtype=torch.uint8, device=self._device)
            self._pool = torch.cuda.graph_pool_handle() if graphs else None
        self.graphs = graphs
        self._stage_buffers(BUCKETS, pin=True)
        self._captured: dict[int, tuple] = {}  # bucket -> (graph or None, logits, values): the graph's outputs, float32
        if max_batch:
            self.warm(max_batch)

    def warm(self, max_batch: int) -> None:
        """Captures the graph of every bucket up to the one of max_batch, largest first."""
        for bucket in sorted((b for b in BUCKETS if b <= _bucket(max_batch)), reverse=True):
            if bucket not in self._captured:
                self._capture(bucket)

    def _forward(self, codes):
        logits, values = self.model(planes(codes, self.spec.board_size, self.dtype))
        return logits.float(), values.float()

    def _capture(self, bucket: int):
        x = self._codes[:bucket]
        with torch.cuda.device(self._device), torch.inference_mode(), _true_fp32():
            self.stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(self.stream):  # warm-up off the default stream (cuDNN's choices, allocator)
                for _ in range(3):
                    logits, values = self._forward(x)
            graph = None
            if self.graphs:
                graph = torch.cuda.CUDAGraph()
                # thread_local: other threads' evaluators may use CUDA meanwhile
                with torch.cuda.graph(graph, pool=self._pool, stream=self.stream, capture_error_mode="thread_local"):
                    logits, values = self._forward(x)
            self.stream.synchronize()
        self._captured[bucket] = (graph, logits, values) if graph is not None else (None, None, None)
        return self._captured[bucket]

    def _launch(self, b: int, bucket: int) -> None:
        graph, logits, values = self._captured.get(bucket) or self._capture(bucket)
        with torch.cuda.device(self._device), torch.cuda.stream(self.stream), torch.inference_mode():
            self._codes[:b].copy_(self._host_in[:b], non_blocking=True)
            if graph is not None:
                graph.replay()
            else:
                with _true_fp32():
                    logits, values = self._forward(self._codes[:bucket])
            self._host_logits[:b].copy_(logits[:b], non_blocking=True)
            self._host_values[:b].copy_(values[:b], non_blocking=True)
            self._done.record(self.stream)
        self._done.synchronize()


def _available() -> tuple[str, ...]:
    if not torch.cuda.is_available():
        return ()
    return ("fp32", "fp16") + (("bf16",) if torch.cuda.is_bf16_supported() else ())


def _build(model: HexNet, precision: str, device: str) -> CudaEvaluator:
    return CudaEvaluator(model, precision)


register(Backend("cuda", priority=20, available=_available, build=_build))
