"""Inference backends behind one interface: `evaluate(features) -> (logits, values)`.

    backend    device  precisions         how
    eager      any     fp32               the plain model: the reference (on the cpu) and the
                                          baseline that benchmarks compare with on each device
    cpu        cpu     fp32               batch norm folded into the convolutions, channels_last
    cuda       cuda    fp32 bf16 fp16     folded, channels_last, autocast, one CUDA graph per batch bucket
    mps        mps     fp32 fp16          folded, the model cast to the precision
    tensorrt   cuda    fp16 int8          torch-tensorrt engines per (snapshot, batch bucket, precision),
                                          cached on disk; int8 only where it holds TOLERANCE

Every backend returns float32 numpy arrays: logits[B, n*n] and values[B].
Its outputs match eager fp32 within TOLERANCE[precision]: the largest
absolute difference in policy probabilities (softmax of the logits) and in
values, on positions from `sample_features`.

`make_evaluator(source, backend="auto")` measures each available backend for
a moment at a typical batch and keeps the fastest that passes its tolerance;
`evaluator.reason` says which and why, and it is logged.
"""

import copy
import hashlib
import logging
import os
import time
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from hexzd.native.board import NUM_PLANES
from hexzd.nn.net import HexNet, NetSpec
from hexzd.nn.snapshot import Snapshot

__all__ = [
    "BACKENDS",
    "PRECISIONS",
    "TOLERANCE",
    "EagerEvaluator",
    "Evaluator",
    "available",
    "build",
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
BUCKETS = tuple(2**k for k in range(13))  # 1 .. 4096: CUDA graphs and TensorRT engines are per bucket
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class Evaluator(Protocol):
    backend: str
    precision: str
    device: str
    spec: NetSpec
    reason: str  # why this backend: the auto-selection's measurement, or "asked for"

    def evaluate(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """float32[B, 4, n, n] canonical planes -> (float32[B, n*n] logits, float32[B] values)."""
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
    """Plausible canonical planes: random stones, the mover with as many or one more.

    For accuracy checks and benchmarks, where the position need not come from
    a real game but should look like one to the network.
    """
    rng = np.random.default_rng(seed)
    out = np.zeros((batch, NUM_PLANES, n, n), np.float32)
    for b in range(batch):
        stones = rng.integers(0, n * n)
        cells = rng.permutation(n * n)[:stones]
        out[b, 0].flat[cells[0::2]] = 1.0
        out[b, 1].flat[cells[1::2]] = 1.0
    out[:, 2] = 1.0
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
    n = spec.board_size
    if features.ndim != 4 or features.shape[1:] != (NUM_PLANES, n, n):
        raise ValueError(f"features of shape {features.shape}, expected [B, {NUM_PLANES}, {n}, {n}]")
    return np.ascontiguousarray(features, dtype=np.float32)


class EagerEvaluator:
    """The model as it trains, in fp32: on the CPU, the reference for every other backend."""

    backend, precision = "eager", "fp32"

    def __init__(self, model: HexNet, device: str = "cpu"):
        self.model = copy.deepcopy(model).float().to(device).eval()
        self.spec, self.device, self.reason = model.spec, device, "asked for"

    def evaluate(self, features):
        x = torch.from_numpy(_check(features, self.spec)).to(self.device)
        with torch.inference_mode(), _true_fp32():
            logits, values = self.model(x)
        return logits.cpu().numpy(), values.cpu().numpy()


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

    def evaluate(self, features):
        x = torch.from_numpy(_check(features, self.spec)).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            logits, values = self.model(x)
        return logits.numpy(), values.numpy()


def _bucket(batch: int) -> int:
    return next((b for b in BUCKETS if b >= batch), BUCKETS[-1])


def _in_buckets(features: np.ndarray, run) -> tuple[np.ndarray, np.ndarray]:
    """Runs `run(chunk)` over chunks of at most the largest bucket and joins the results."""
    parts = [run(features[i : i + BUCKETS[-1]]) for i in range(0, len(features), BUCKETS[-1])]
    if not parts:
        return run(features)
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


class CudaEvaluator:
    """CUDA with autocast, channels_last and a CUDA graph per batch bucket.

    A graph replays the whole forward pass as one launch, which is what
    small networks need: at batch 256 their kernels are shorter than the
    launch overhead. The batch is padded up to its bucket (a power of two);
    the padding rows are never read back.
    """

    backend, device = "cuda", "cuda"

    def __init__(self, model: HexNet, precision: str = "bf16", graphs: bool = True):
        self.spec, self.precision, self.reason = model.spec, precision, "asked for"
        self.model = fold_batch_norm(model).float().to("cuda", memory_format=torch.channels_last)
        self.dtype = _DTYPES[precision]
        self.graphs = graphs
        self._captured = {}  # bucket -> (graph, host input, device input, logits, values)

    def _forward(self, x):
        # No autocast weight cache: a graph must not capture casts of tensors
        # that the cache frees or replaces (the CUDA-graph notes ask for this).
        autocast = torch.autocast("cuda", dtype=self.dtype, enabled=self.dtype != torch.float32, cache_enabled=False)
        with autocast, _true_fp32():
            logits, values = self.model(x)
        return logits.float(), values.float()

    def _capture(self, bucket: int):
        n = self.spec.board_size
        host = torch.zeros(bucket, NUM_PLANES, n, n).pin_memory()
        x = torch.zeros(bucket, NUM_PLANES, n, n, device="cuda").contiguous(memory_format=torch.channels_last)
        graph = torch.cuda.CUDAGraph() if self.graphs else None
        with torch.inference_mode():
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):  # warm-up off the capture stream, as the CUDA-graph docs ask
                for _ in range(3):
                    logits, values = self._forward(x)
            torch.cuda.current_stream().wait_stream(side)
            if graph is not None:
                with torch.cuda.graph(graph):
                    logits, values = self._forward(x)
        self._captured[bucket] = (graph, host, x, logits, values)
        return self._captured[bucket]

    def _run(self, features):
        b = len(features)
        bucket = _bucket(b)
        graph, host, x, logits, values = self._captured.get(bucket) or self._capture(bucket)
        host[:b].numpy()[...] = features
        x.copy_(host, non_blocking=True)
        with torch.inference_mode():
            if graph is not None:
                graph.replay()
            else:
                logits, values = self._forward(x)
        return logits[:b].cpu().numpy(), values[:b].cpu().numpy()

    def evaluate(self, features):
        return _in_buckets(_check(features, self.spec), self._run)


class MpsEvaluator:
    """Apple's Metal backend: the folded model cast to fp32 or fp16."""

    backend, device = "mps", "mps"

    def __init__(self, model: HexNet, precision: str = "fp16"):
        self.spec, self.precision, self.reason = model.spec, precision, "asked for"
        self.dtype = _DTYPES[precision]
        self.model = fold_batch_norm(model).to("mps", dtype=self.dtype)

    def evaluate(self, features):
        x = torch.from_numpy(_check(features, self.spec)).to("mps", dtype=self.dtype)
        with torch.inference_mode():
            logits, values = self.model(x)
        return logits.float().cpu().numpy(), values.float().cpu().numpy()


def tensorrt_cache_dir() -> Path:
    return Path(os.environ.get("HEXZD_TRT_CACHE", Path.home() / ".cache" / "hexzd" / "tensorrt"))


def weights_digest(model: nn.Module) -> str:
    """A name for a snapshot's weights, for the engine cache."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


class TensorRTEvaluator:
    """TensorRT engines built by torch-tensorrt, one per batch bucket, cached on disk.

    The cache key is (weights digest, board size, bucket, precision), so a
    restarted worker reuses its engines. int8 is calibrated with ModelOpt on
    `sample_features` and refused (ValueError) when it misses TOLERANCE["int8"].
    """

    backend, device = "tensorrt", "cuda"

    def __init__(self, model: HexNet, precision: str = "fp16"):
        import torch_tensorrt  # noqa: F401  (fails here, not later, when the extra is missing)

        if precision not in ("fp16", "int8"):
            raise ValueError(f"tensorrt runs fp16 or int8, not {precision}")
        self.spec, self.precision, self.reason = model.spec, precision, "asked for"
        self.reference = copy.deepcopy(model).float().cpu().eval()
        self.model = fold_batch_norm(self.reference).cuda()
        self.digest = weights_digest(self.reference)
        self._engines = {}
        if precision == "int8":
            self._check_int8()

    def _engine(self, bucket: int):
        if bucket in self._engines:
            return self._engines[bucket]
        import torch_tensorrt

        n = self.spec.board_size
        path = tensorrt_cache_dir() / f"{self.digest}-n{n}-b{bucket}-{self.precision}.ep"
        example = torch.zeros(bucket, NUM_PLANES, n, n, device="cuda")
        if path.exists():
            engine = torch.export.load(str(path)).module()
        else:
            engine = self._build(example)
            path.parent.mkdir(parents=True, exist_ok=True)
            torch_tensorrt.save(engine, str(path), arg_inputs=[example])
            log.info("built TensorRT engine %s", path.name)
        self._engines[bucket] = engine
        return engine

    def _build(self, example):
        import torch_tensorrt

        if self.precision == "fp16":
            # An fp16 model with fp16 inputs: explicit typing, which every
            # torch-tensorrt 2.x accepts, gives an fp16 engine.
            return torch_tensorrt.compile(self.model.half(), ir="dynamo", arg_inputs=[example.half()])
        import modelopt.torch.quantization as mtq
        from modelopt.torch.quantization.utils import export_torch_mode

        calibration = torch.from_numpy(sample_features(self.spec.board_size, 512, seed=1)).cuda()
        quantized = copy.deepcopy(self.model)
        mtq.quantize(quantized, mtq.INT8_DEFAULT_CFG, forward_loop=lambda m: m(calibration))
        with export_torch_mode():
            return torch_tensorrt.compile(quantized, ir="dynamo", arg_inputs=[example], enabled_precisions={torch.int8})

    def _run(self, features):
        b = len(features)
        bucket = _bucket(b)
        x = torch.zeros(bucket, NUM_PLANES, self.spec.board_size, self.spec.board_size, device="cuda")
        x[:b] = torch.from_numpy(features).cuda()
        if self.precision == "fp16":
            x = x.half()
        with torch.inference_mode():
            logits, values = self._engine(bucket)(x)
        return logits[:b].float().cpu().numpy(), values[:b].float().cpu().numpy()

    def evaluate(self, features):
        return _in_buckets(_check(features, self.spec), self._run)

    def _check_int8(self):
        features = sample_features(self.spec.board_size, PROBE_BATCH, seed=2)
        gap = max_difference(self.evaluate(features), EagerEvaluator(self.reference).evaluate(features))
        if gap > TOLERANCE["int8"]:
            raise ValueError(f"int8 misses its tolerance: {gap:.3g} > {TOLERANCE['int8']}")


def build(model: HexNet, backend: str, precision: str = "fp32", device: str = "cpu") -> Evaluator:
    """One evaluator of a named backend and precision, without measuring.

    `device` matters only to the eager backend, which runs anywhere.
    """
    if backend in ("eager", "cpu") and precision != "fp32":
        raise ValueError(f"the {backend} backend runs fp32, not {precision}")
    if backend == "eager":
        return EagerEvaluator(model, device)
    if backend == "cpu":
        return CpuEvaluator(model)
    if backend == "cuda":
        return CudaEvaluator(model, precision)
    if backend == "mps":
        return MpsEvaluator(model, precision)
    if backend == "tensorrt":
        return TensorRTEvaluator(model, precision)
    raise ValueError(f"unknown backend {backend!r}; one of {', '.join(BACKENDS)}")


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
) -> Evaluator:
    """An evaluator for a model, Snapshot or snapshot bytes.

    With backend or precision "auto", every available pair is built, checked
    against eager fp32 within its tolerance and timed at `probe_batch`; the
    fastest wins. `threads` sets torch's CPU threads for this process.
    """
    model = to_model(source)
    if threads:
        torch.set_num_threads(threads)
    if backend == "eager" or (backend != "auto" and precision != "auto"):
        return build(model, backend, "fp32" if precision == "auto" else precision)
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
    return best
