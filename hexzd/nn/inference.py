"""Inference backends behind one interface: `evaluate(codes) -> (logits, values)`.

    backend    device  precisions         how
    eager      any     fp32               the plain model: the reference (on the cpu) and the
                                          baseline that benchmarks compare with on each device
    cpu        cpu     fp32               batch norm folded into the convolutions, channels_last
    cuda       cuda    fp32 bf16 fp16     folded, channels_last, the weights cast to the precision
                                          once, one CUDA graph per batch bucket, pinned buffers and
                                          the evaluator's own stream
    mps        mps     fp32 fp16          folded, the model cast to the precision
    tensorrt   cuda    fp16 int8          torch-tensorrt engines per (snapshot, batch bucket, precision),
                                          cached on disk; int8 only where it holds TOLERANCE

The input is the compact encoding that the search writes,
uint8[B, n*n + 1] (the layout is defined once, in
hexzd.native.board.codes_one): n*n + 1 bytes a position cross to the
device, and every backend expands them to the network's planes there with
hexzd.nn.net.planes, in the precision it runs. Float planes [B, 4, n, n]
(Games.features, the trainer's form) are still accepted and turned into codes
on the host first, for callers that hold planes.

Every backend returns float32 numpy arrays: logits[B, n*n] and values[B].
Its outputs match eager fp32 within TOLERANCE[precision]: the largest
absolute difference in policy probabilities (softmax of the logits) and in
values, on positions from `sample_features`.

`make_evaluator(source, backend="auto")` measures each available backend for
a moment at a typical batch and keeps the fastest that passes its tolerance;
`evaluator.reason` says which and why, and it is logged.
"""

import copy
import fcntl
import hashlib
import logging
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, TypeVar

import numpy as np
import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from hexzd.native.board import CODE_OPPONENT, CODE_OWN, NUM_PLANES
from hexzd.nn.net import HexNet, NetSpec, planes
from hexzd.nn.snapshot import Snapshot

__all__ = [
    "BACKENDS",
    "BUCKETS",
    "PRECISIONS",
    "TENSORRT_BUCKETS",
    "TOLERANCE",
    "EagerEvaluator",
    "Evaluator",
    "available",
    "build",
    "cached",
    "codes_from_planes",
    "fold_batch_norm",
    "make_evaluator",
    "max_difference",
    "sample_features",
    "throughput",
]

log = logging.getLogger(__name__)

BACKENDS = ("eager", "cpu", "cuda", "mps", "tensorrt")
PRECISIONS = ("fp32", "bf16", "fp16", "int8")
TOLERANCE = {"fp32": 1e-4, "bf16": 4e-2, "fp16": 1e-2, "int8": 5e-2}
PROBE_BATCH = 256  # the batch at which "auto" compares backends: a self-play worker's usual size
PROBE_SECONDS = 0.3  # per backend, after a warm-up
# The batch sizes that CUDA graphs are captured for; a batch runs padded up to
# the next one. Finer than powers of two, so that padding runs at most 7 rows
# more below 16, 15 up to 128, 63 up to 1024 and 255 up to 4096 (a third of
# a bucket at worst from 64 on, instead of half): 1 2 4 8, multiples of 16 to
# 128, of 64 to 1024, of 256 to 4096, 38 graphs in all. Larger batches run in
# chunks of 4096.
BUCKETS = (1, 2, 4, 8) + tuple(range(16, 129, 16)) + tuple(range(192, 1025, 64)) + tuple(range(1280, 4097, 256))
# TensorRT builds an engine per bucket, which takes far longer than a graph
# capture: powers of two, built when first used (and cached on disk).
TENSORRT_BUCKETS = tuple(2**k for k in range(13))  # 1 .. 4096
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class Evaluator(Protocol):
    backend: str
    precision: str
    device: str
    spec: NetSpec
    reason: str  # why this backend: the auto-selection's measurement, or "asked for"

    def evaluate(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8[B, n*n + 1] codes (or float32[B, 4, n, n] planes) -> (float32[B, n*n] logits, float32[B] values)."""
        ...

    def warm(self, max_batch: int) -> None:
        """Prepares every batch size up to max_batch (CUDA graphs, engines); a no-op elsewhere."""
        ...


def available(backend: str = "auto", precision: str = "auto") -> list[tuple[str, str]]:
    """The (backend, precision) pairs this machine can run, fastest kinds last."""
    pairs = [("cpu", "fp32")]
    if torch.cuda.is_available():
        pairs += [("cuda", "fp32"), ("cuda", "fp16")]
        if torch.cuda.is_bf16_supported():
            pairs.append(("cuda", "bf16"))
        if _has_tensorrt():
            pairs.append(("tensorrt", "fp16"))
            if _has_modelopt():
                pairs.append(("tensorrt", "int8"))
    if torch.backends.mps.is_available():
        pairs += [("mps", "fp32"), ("mps", "fp16")]
    return [(b, p) for b, p in pairs if backend in ("auto", b) and precision in ("auto", p)]


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


def sample_features(n: int, batch: int, seed: int = 0) -> np.ndarray:
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


def codes_from_planes(features: np.ndarray) -> np.ndarray:
    """The codes of float planes [B, 4, n, n] (hexzd.native.board.features): uint8[B, n*n + 1]."""
    b, n = features.shape[0], features.shape[-1]
    out = np.empty((b, n * n + 1), np.uint8)
    out[:, : n * n] = (features[:, 0] * CODE_OWN + features[:, 1] * CODE_OPPONENT).reshape(b, n * n)
    out[:, n * n] = features[:, 3, 0, 0]
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
            if isinstance(seq[i], nn.Conv2d) and isinstance(seq[i + 1], nn.BatchNorm2d):
                seq[i] = fuse_conv_bn_eval(seq[i], seq[i + 1])
                seq[i + 1] = nn.Identity()
    return model


def _check(features: np.ndarray, spec: NetSpec) -> np.ndarray:
    """The codes uint8[B, n*n + 1] of an input: codes as they are, float planes converted."""
    n = spec.board_size
    features = np.asarray(features)
    if features.ndim == 4 and features.shape[1:] == (NUM_PLANES, n, n):
        return codes_from_planes(features)
    if features.ndim != 2 or features.shape[1] != n * n + 1:
        raise ValueError(
            f"input of shape {features.shape}, expected uint8 codes [B, {n * n + 1}]"
            f" (or float planes [B, {NUM_PLANES}, {n}, {n}])"
        )
    return np.ascontiguousarray(features, dtype=np.uint8)


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


class EagerEvaluator:
    """The model as it trains, in fp32: on the CPU, the reference for every other backend."""

    backend, precision = "eager", "fp32"

    def __init__(self, model: HexNet, device: str = "cpu"):
        self.model = copy.deepcopy(model).float().to(device).eval()
        self.spec, self.device, self.reason = model.spec, device, "asked for"
        self._threads = _TorchThreads()

    def evaluate(self, features):
        self._threads()
        codes = torch.from_numpy(_check(features, self.spec)).to(self.device)
        x = planes(codes, self.spec.board_size).contiguous()  # the layout the model trains in
        with torch.inference_mode(), _true_fp32():
            logits, values = self.model(x)
        return logits.cpu().numpy(), values.cpu().numpy()

    def warm(self, max_batch: int) -> None:
        pass


def _true_fp32():
    """cuDNN runs fp32 convolutions in TF32 unless told not to; fp32 here means fp32."""
    cudnn = torch.backends.cudnn
    return cudnn.flags(
        enabled=cudnn.enabled, benchmark=cudnn.benchmark, deterministic=cudnn.deterministic, allow_tf32=False
    )


class CpuEvaluator:
    """fp32 on the CPU with batch norm folded and channels_last, which oneDNN runs faster."""

    backend, precision, device = "cpu", "fp32", "cpu"

    def __init__(self, model: HexNet):
        self.model = fold_batch_norm(model).float().cpu().to(memory_format=torch.channels_last)
        self.spec, self.reason = model.spec, "asked for"
        self._threads = _TorchThreads()

    def evaluate(self, features):
        self._threads()
        x = planes(torch.from_numpy(_check(features, self.spec)), self.spec.board_size)  # channels_last already
        with torch.inference_mode():
            logits, values = self.model(x)
        return logits.numpy(), values.numpy()

    def warm(self, max_batch: int) -> None:
        pass


def _bucket(batch: int, buckets: tuple[int, ...] = BUCKETS) -> int:
    """The smallest bucket that holds `batch` rows (the largest for a larger batch, which runs in chunks)."""
    return next((b for b in buckets if b >= batch), buckets[-1])


def _in_buckets(codes: np.ndarray, run, largest: int = BUCKETS[-1]) -> tuple[np.ndarray, np.ndarray]:
    """Runs `run(chunk)` over chunks of at most `largest` rows and joins the results."""
    parts = [run(codes[i : i + largest]) for i in range(0, len(codes), largest)]
    if not parts:
        return run(codes)
    if len(parts) == 1:
        return parts[0]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


class _Staged:
    """The host side of the bucketed device backends (cuda, tensorrt).

    One host buffer each for the codes, logits and values, sized for the
    largest bucket and pinned, so that the copies to and from the device are
    asynchronous DMA: a call writes its rows into the input buffer, `_launch`
    copies them up, runs its bucket (the rows past the batch hold whatever an
    earlier call left there: positions of their own, never read back), copies
    the batch's rows of the outputs down and waits for them once; the caller
    gets copies, since the next call overwrites the buffers. A lock makes an
    evaluator safe to share between threads (they take turns); threads that
    want to overlap use an evaluator each.
    """

    def _stage_buffers(self, buckets: tuple[int, ...], pin: bool) -> None:
        nn_ = self.spec.board_size**2
        self.buckets, largest = buckets, buckets[-1]
        self._host_in = torch.zeros(largest, nn_ + 1, dtype=torch.uint8, pin_memory=pin)
        self._host_logits = torch.zeros(largest, nn_, dtype=torch.float32, pin_memory=pin)
        self._host_values = torch.zeros(largest, dtype=torch.float32, pin_memory=pin)
        self._in_np, self._logits_np, self._values_np = (
            t.numpy() for t in (self._host_in, self._host_logits, self._host_values)
        )
        self._lock = threading.Lock()

    def evaluate(self, features):
        codes = _check(features, self.spec)
        with self._lock:
            return _in_buckets(codes, self._run_chunk, self.buckets[-1])

    def _run_chunk(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        b = len(codes)
        bucket = _bucket(b, self.buckets)
        self._in_np[:b] = codes
        self._launch(b, bucket)
        return self._logits_np[:b].copy(), self._values_np[:b].copy()

    def _launch(self, b: int, bucket: int) -> None:
        """Host rows [:b] of the input -> the bucket's run on the device -> host rows [:b] of logits and values."""
        raise NotImplementedError


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
            self.model = fold_batch_norm(model).to(self._device, self.dtype).to(memory_format=torch.channels_last)
            self.stream = torch.cuda.Stream(self._device)
            self._done = torch.cuda.Event()
            self._codes = torch.zeros(BUCKETS[-1], self.spec.board_size**2 + 1, dtype=torch.uint8, device=self._device)
            self._pool = torch.cuda.graph_pool_handle() if graphs else None
        self.graphs = graphs
        self._stage_buffers(BUCKETS, pin=True)
        self._captured = {}  # bucket -> (graph or None, logits, values): the graph's outputs, float32
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


class MpsEvaluator:
    """Apple's Metal backend: the folded model cast to fp32 or fp16."""

    backend, device = "mps", "mps"

    def __init__(self, model: HexNet, precision: str = "fp16"):
        self.spec, self.precision, self.reason = model.spec, precision, "asked for"
        self.dtype = _DTYPES[precision]
        self.model = fold_batch_norm(model).to("mps", dtype=self.dtype)

    def evaluate(self, features):
        codes = torch.from_numpy(_check(features, self.spec)).to("mps")
        with torch.inference_mode():
            logits, values = self.model(planes(codes, self.spec.board_size, self.dtype))
        return logits.float().cpu().numpy(), values.float().cpu().numpy()

    def warm(self, max_batch: int) -> None:
        pass


def tensorrt_cache_dir() -> Path:
    return Path(os.environ.get("HEXZD_TRT_CACHE", Path.home() / ".cache" / "hexzd" / "tensorrt"))


def weights_digest(model: nn.Module) -> str:
    """A name for a snapshot's weights, for the engine cache."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


T = TypeVar("T")


def cached(path: Path, build: Callable[[], T], save: Callable[[T, Path], None], load: Callable[[Path], T]) -> T:
    """load(path) when the file exists; otherwise build() it once, however many processes ask.

    The file appears only whole: save(thing, temp) writes a temporary file
    in the same directory, which os.replace then renames to `path` (atomic
    on one file system), so a reader never loads half a file and needs no
    lock. Builders take an exclusive flock on `path` + ".lock" and look for
    the file again once they hold it: of processes that miss the cache
    together, the first builds and the others wait, then load its file. The
    lock file stays (removing it would let a late process lock a file that
    no longer has a name); a builder that dies leaves at most a temporary
    file, and its lock goes with it.
    """
    path = Path(path)
    if path.exists():
        return load(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if path.exists():  # built while this process waited
            return load(path)
        thing = build()
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp" + path.suffix)
        os.close(fd)
        try:
            save(thing, Path(temp))
            os.replace(temp, path)
        finally:
            if os.path.exists(temp):
                os.unlink(temp)
        return thing


class TensorRTEvaluator(_Staged):
    """TensorRT engines built by torch-tensorrt, one per batch bucket, cached on disk.

    Engines are built for TENSORRT_BUCKETS as they are first used (or up to
    a batch by `warm`), and stored under tensorrt_cache_dir() by `cached`,
    keyed by (weights digest, board size, bucket, precision, torch-tensorrt
    version, GPU): a restarted worker, or a second one, loads them instead
    of building. The engine takes the 4 planes; the codes cross to the
    device (pinned buffers, this evaluator's stream, as CudaEvaluator) into
    a preallocated buffer and are expanded there. int8 is calibrated with
    ModelOpt on `sample_features` and refused (ValueError) when it misses
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
        self._engines = {}
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
        calibration = planes(torch.from_numpy(sample_features(n, 512, seed=1)).to(self._device), n).contiguous()
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
        features = sample_features(self.spec.board_size, PROBE_BATCH, seed=2)
        gap = max_difference(self.evaluate(features), EagerEvaluator(self.reference).evaluate(features))
        if gap > TOLERANCE["int8"]:
            raise ValueError(f"int8 misses its tolerance: {gap:.3g} > {TOLERANCE['int8']}")


def build(
    model: HexNet, backend: str, precision: str = "fp32", device: str = "cpu", max_batch: int | None = None
) -> Evaluator:
    """One evaluator of a named backend and precision, without measuring.

    `device` matters only to the eager backend, which runs anywhere.
    `max_batch` warms it up to that batch (CUDA graphs, TensorRT engines).
    """
    if backend in ("eager", "cpu") and precision != "fp32":
        raise ValueError(f"the {backend} backend runs fp32, not {precision}")
    if backend == "eager":
        evaluator = EagerEvaluator(model, device)
    elif backend == "cpu":
        evaluator = CpuEvaluator(model)
    elif backend == "cuda":
        evaluator = CudaEvaluator(model, precision)
    elif backend == "mps":
        evaluator = MpsEvaluator(model, precision)
    elif backend == "tensorrt":
        evaluator = TensorRTEvaluator(model, precision)
    else:
        raise ValueError(f"unknown backend {backend!r}; one of {', '.join(BACKENDS)}")
    if max_batch:
        evaluator.warm(max_batch)
    return evaluator


def throughput(evaluator: Evaluator, features: np.ndarray, seconds: float, rounds: int = 1) -> float:
    """Evaluations per second, the best of `rounds` rounds of about seconds/rounds each.

    One warm-up call goes first (graph capture, engine build, allocator).
    The best round, not the mean, because on a shared machine the slow
    rounds measure the neighbours.
    """
    evaluator.evaluate(features)
    best = 0.0
    for _ in range(rounds):
        calls, start = 0, time.perf_counter()
        while True:
            evaluator.evaluate(features)
            calls += 1
            elapsed = time.perf_counter() - start
            if elapsed >= seconds / rounds:
                break
        best = max(best, calls * len(features) / elapsed)
    return best


def to_model(source) -> HexNet:
    """A HexNet from a model, a Snapshot or a snapshot's bytes."""
    if isinstance(source, HexNet):
        return source
    if isinstance(source, (bytes, bytearray, memoryview)):
        source = Snapshot.from_bytes(bytes(source))
    if isinstance(source, Snapshot):
        return source.model()
    raise TypeError(f"cannot make a model from {type(source).__name__}")


def make_evaluator(
    source,
    backend: str = "auto",
    precision: str = "auto",
    threads: int | None = None,
    probe_batch: int = PROBE_BATCH,
    max_batch: int | None = None,
) -> Evaluator:
    """An evaluator for a model, Snapshot or snapshot bytes.

    With backend or precision "auto", every available pair is built, checked
    against eager fp32 within its tolerance and timed at `probe_batch`; the
    fastest wins. `threads` sets torch's CPU threads for this process.
    `max_batch` warms the chosen one up to that batch (see Evaluator.warm).
    """
    model = to_model(source)
    if threads:
        torch.set_num_threads(threads)
    if backend == "eager" or (backend != "auto" and precision != "auto"):
        return build(model, backend, "fp32" if precision == "auto" else precision, max_batch=max_batch)
    pairs = available(backend, precision)
    if not pairs:
        raise ValueError(f"no {backend} backend with {precision} precision on this machine")
    features = sample_features(model.spec.board_size, probe_batch, seed=3)
    reference = EagerEvaluator(model).evaluate(features)
    timed, notes = [], []
    for b, p in pairs:
        try:
            evaluator = build(model, b, p)
            gap = max_difference(evaluator.evaluate(features), reference)
            if gap > TOLERANCE[p]:
                notes.append(f"{b} {p} off by {gap:.2g}")
                continue
            # With one candidate there is nothing to compare: skip the timing.
            rate = throughput(evaluator, features, PROBE_SECONDS) if len(pairs) > 1 else None
            timed.append((rate or 0.0, b, p, evaluator))
        except Exception as e:  # a backend that cannot start here is skipped, and said so
            notes.append(f"{b} {p} failed: {e}")
    if not timed:
        raise RuntimeError("no backend works: " + "; ".join(notes))
    timed.sort(key=lambda t: -t[0])
    rate, _, _, best = timed[0]
    if len(pairs) == 1:
        why = "the only one available here"
    else:
        others = ", ".join(f"{b} {p} {r:,.0f}/s" for r, b, p, _ in timed[1:])
        why = f"fastest at batch {probe_batch}, {rate:,.0f} evals/s" + (f"; then {others}" if others else "")
    best.reason = f"{best.backend} {best.precision}: {why}" + (f" ({'; '.join(notes)})" if notes else "")
    log.info("inference backend %s", best.reason)
    if max_batch:
        best.warm(max_batch)
    return best
