"""Every backend against eager fp32, auto-selection, buckets, the engine cache, and snapshots from elsewhere."""

import multiprocessing
import threading
import time

import numpy as np
import pytest
import torch

from hexzd.game.rules import Games
from hexzd.nn.backends import staging
from hexzd.nn.backends.base import (
    TOLERANCE,
    codes_from_planes,
    fold_batch_norm,
    max_difference,
    registered,
    sample_codes,
)
from hexzd.nn.backends.eager import EagerEvaluator
from hexzd.nn.backends.engine_cache import cached
from hexzd.nn.backends.staging import BUCKETS
from hexzd.nn.backends.tensorrt import TENSORRT_BUCKETS
from hexzd.nn.inference import available, build, make_evaluator
from hexzd.nn.net import NetSpec, planes
from hexzd.train.trainer import Snapshot

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

N = 5
ALL_PAIRS = [
    ("cpu", "fp32"),
    ("cuda", "fp32"),
    ("cuda", "bf16"),
    ("cuda", "fp16"),
    ("mps", "fp32"),
    ("mps", "fp16"),
    ("tensorrt", "fp16"),
    ("tensorrt", "int8"),
]


def why_unavailable(backend: str, precision: str) -> str:
    if backend in ("cuda", "tensorrt") and not torch.cuda.is_available():
        return "needs a CUDA GPU; this machine has none"
    if backend == "mps" and not torch.backends.mps.is_available():
        return "needs Apple's MPS; this machine has none"
    return f"{backend} {precision} is not installed here (the tensorrt extra, or modelopt for int8)"


@pytest.fixture(scope="module")
def model():
    """A small network whose batch norms do something, so folding them is tested."""
    torch.manual_seed(0)
    net = NetSpec(N, 2, 16).build()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return net.eval()


@pytest.mark.parametrize("backend,precision", ALL_PAIRS)
def test_every_backend_matches_eager_fp32(model, backend, precision):
    if (backend, precision) not in available():
        pytest.skip(why_unavailable(backend, precision))
    codes = sample_codes(N, 300, seed=5)  # not a bucket size: padding is exercised
    reference = EagerEvaluator(model).evaluate(codes)
    logits, values = build(model, backend, precision).evaluate(codes)
    assert logits.shape == (300, N * N) and values.shape == (300,)
    assert logits.dtype == values.dtype == np.float32
    assert max_difference((logits, values), reference) <= TOLERANCE[precision]


def test_folding_batch_norm_changes_the_layers_not_the_outputs(model):
    folded = fold_batch_norm(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    x = planes(torch.from_numpy(sample_codes(N, 64, seed=6)), N)
    with torch.no_grad():
        a, b = model(x), folded(x)
    assert torch.allclose(a[0], b[0], atol=1e-4) and torch.allclose(a[1], b[1], atol=1e-5)
    # The reference would hide a fold that did nothing: the batch norms must matter.
    with torch.no_grad():
        plain = NetSpec(N, 2, 16).build().eval()
        plain.load_state_dict({k: v for k, v in model.state_dict().items() if "running" not in k}, strict=False)
        assert not torch.allclose(plain(x)[1], a[1], atol=1e-3)


def test_a_batch_is_the_rows_evaluated_one_by_one(model):
    evaluator = build(model, "cpu")
    codes = sample_codes(N, 6, seed=7)
    logits, values = evaluator.evaluate(codes)
    for i in range(6):
        row = evaluator.evaluate(codes[i : i + 1])
        assert max_difference(row, (logits[i : i + 1], values[i : i + 1])) <= TOLERANCE["fp32"]
    empty = evaluator.evaluate(codes[:0])
    assert empty[0].shape == (0, N * N) and empty[1].shape == (0,)


def test_input_of_the_wrong_shape_is_refused(model):
    for wrong in (np.zeros((2, 4, 6, 6), np.float32), np.zeros((2, 37), np.uint8), np.zeros(26, np.uint8)):
        with pytest.raises(ValueError, match=r"expected uint8 codes \[B, 26\] \(or float planes \[B, 4, 5, 5\]\)"):
            build(model, "cpu").evaluate(wrong)


def test_sample_codes_are_plausible():
    codes = sample_codes(N, 2000, seed=11)
    assert codes.dtype == np.uint8 and codes.shape == (2000, N * N + 1)
    cells = codes[:, : N * N]
    own, opponent = (cells == 1).sum(1), (cells == 2).sum(1)
    assert set(np.unique(cells)) <= {0, 1, 2}
    assert np.all((opponent == own) | (opponent == own + 1))  # the opponent moved last, or it is even
    assert np.all(codes[:, -1] <= (own + opponent == 1))  # swap only after the first stone
    assert codes[:, -1].any()
    assert np.array_equal(sample_codes(N, 7, seed=3), sample_codes(N, 7, seed=3))


def test_float_planes_are_still_accepted_and_read_as_their_codes(model):
    games = Games.new(30, N, swap=True)
    rng = np.random.default_rng(12)
    for _ in range(3):
        legal = games.legal()
        games.play([int(rng.choice(np.flatnonzero(row))) for row in legal])
    assert np.array_equal(codes_from_planes(games.features()), games.codes())
    for backend in ("eager", "cpu"):
        evaluator = build(model, backend)
        a, b = evaluator.evaluate(games.features()), evaluator.evaluate(games.codes())
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_buckets_hold_every_batch_and_are_finer_than_powers_of_two():
    for buckets in (BUCKETS, TENSORRT_BUCKETS):
        assert list(buckets) == sorted(set(buckets)) and buckets[0] == 1 and buckets[-1] == 4096
        for batch in range(1, buckets[-1] + 1):
            bucket = staging._bucket(batch, buckets)
            assert bucket >= batch and bucket in buckets
            assert bucket == buckets[0] or buckets[buckets.index(bucket) - 1] < batch  # the smallest that fits
    assert staging._bucket(5000) == 4096  # larger batches run in chunks
    assert staging._bucket(300) == 320 and staging._bucket(129) == 192 and staging._bucket(1100) == 1280


class FakeDevice(staging._Staged):
    """The host side of CudaEvaluator and TensorRTEvaluator with the device run on the CPU.

    _launch does what a graph replay does: the model over the whole bucket,
    padding rows included, which it poisons so that reading them back shows.
    """

    backend, precision, device = "fake", "fp32", "cpu"

    def __init__(self, model, buckets):
        self.spec, self.model, self.runs = model.spec, model, []
        self._stage_buffers(buckets, pin=False)

    def _launch(self, b, bucket):
        self.runs.append((b, bucket))
        codes = self._host_in[:bucket].clone()
        codes[b:] = 7  # not a code: planes of garbage in the padding
        with torch.no_grad():
            logits, values = self.model(planes(codes, self.spec.board_size).contiguous())
        logits[b:], values[b:] = float("nan"), float("nan")
        self._host_logits[:b] = logits[:b]
        self._host_values[:b] = values[:b]


def test_padding_is_run_but_never_read_back(model):
    fake = FakeDevice(model, (1, 2, 4, 16, 64))
    reference = EagerEvaluator(model)
    for batch in (1, 3, 16, 17, 64, 150, 0):
        codes = sample_codes(N, batch, seed=batch)
        logits, values = fake.evaluate(codes)
        assert logits.shape == (batch, N * N) and values.shape == (batch,)
        assert np.isfinite(logits).all() and np.isfinite(values).all()
        assert max_difference((logits, values), reference.evaluate(codes)) <= TOLERANCE["fp32"]
    # 150 rows ran as 64 + 64 + 22 padded to 64; the empty batch as one padded row.
    assert fake.runs == [(1, 1), (3, 4), (16, 16), (17, 64), (64, 64), (64, 64), (64, 64), (22, 64), (0, 1)]
    first = fake.evaluate(sample_codes(N, 3, seed=1))
    fake.evaluate(sample_codes(N, 3, seed=2))
    assert not np.array_equal(first[0], fake.evaluate(sample_codes(N, 3, seed=2))[0])  # results are copies


def test_the_engine_cache_builds_once_and_loads_after(tmp_path):
    path = tmp_path / "engines" / "x.ep"
    built = []

    def build():
        built.append(1)
        return b"engine"

    save = lambda thing, temp: temp.write_bytes(thing)  # noqa: E731
    load = lambda p: p.read_bytes() + b" loaded"  # noqa: E731
    assert cached(path, build, save, load) == b"engine"
    assert cached(path, build, save, load) == b"engine loaded"
    assert len(built) == 1
    assert sorted(p.name for p in path.parent.iterdir()) == ["x.ep", "x.ep.lock"]  # no temporary file left

    def broken(thing, temp):
        temp.write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        cached(tmp_path / "y.ep", build, broken, load)
    assert not (tmp_path / "y.ep").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["engines", "y.ep.lock"]


SIZE = 1 << 20


def slow_build_and_save(path, log):
    """One contender for the cache: a build that takes a while, written out slowly in two halves."""

    def build():
        with open(log, "a") as f:
            f.write("built\n")
        time.sleep(0.3)
        return bytes(range(256)) * (SIZE // 256)

    def save(thing, temp):
        with open(temp, "wb") as f:
            f.write(thing[: SIZE // 2])
            f.flush()
            time.sleep(0.2)
            f.write(thing[SIZE // 2 :])

    return len(cached(path, build, save, lambda p: p.read_bytes()))


def test_processes_that_miss_the_cache_together_build_once_and_never_read_half_a_file(tmp_path):
    path, log = tmp_path / "engine.ep", tmp_path / "log"
    seen = []

    def reader():  # loads the moment the name exists, without the lock
        deadline = time.monotonic() + 10
        while not path.exists() and time.monotonic() < deadline:
            pass
        seen.append(len(path.read_bytes()))

    watcher = threading.Thread(target=reader)
    watcher.start()
    context = multiprocessing.get_context("fork")
    with context.Pool(3) as pool:
        sizes = pool.starmap(slow_build_and_save, [(path, log)] * 3)
    threads = [threading.Thread(target=lambda: sizes.append(slow_build_and_save(path, log))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    watcher.join()
    assert sizes == [SIZE] * 5 and seen == [SIZE]
    assert log.read_text() == "built\n"


def test_auto_picks_a_working_backend_and_says_why(model, caplog):
    caplog.set_level("INFO", logger="hexzd.nn.inference")
    evaluator = make_evaluator(model, threads=1)
    assert (evaluator.backend, evaluator.precision) in available()
    assert evaluator.reason.startswith(f"{evaluator.backend} {evaluator.precision}: ")
    assert evaluator.reason in caplog.text
    codes = sample_codes(N, 10, seed=8)
    assert (
        max_difference(evaluator.evaluate(codes), EagerEvaluator(model).evaluate(codes))
        <= TOLERANCE[evaluator.precision]
    )


@needs_cuda
def test_cuda_graphs_cover_every_bucket_and_evaluators_run_side_by_side(model):
    evaluator = build(model, "cuda", "fp32", max_batch=300)
    assert sorted(evaluator._captured) == [b for b in BUCKETS if b <= 320]
    assert all(graph is not None for graph, _, _ in evaluator._captured.values())
    codes = sample_codes(N, 300, seed=13)
    reference = EagerEvaluator(model).evaluate(codes)
    evaluators = [build(model, "cuda", p) for p in ("fp32", "fp16", "fp32")]
    results = [None] * 3

    def work(i):
        for _ in range(20):
            results[i] = evaluators[i].evaluate(codes[: 100 + 100 * i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, p in enumerate(("fp32", "fp16", "fp32")):
        rows = 100 + 100 * i
        assert max_difference(results[i], (reference[0][:rows], reference[1][:rows])) <= TOLERANCE[p]
    assert len({e.stream.cuda_stream for e in evaluators}) == 3
    big = sample_codes(N, 5000, seed=14)  # past the largest bucket: chunks
    assert max_difference(evaluator.evaluate(big), EagerEvaluator(model).evaluate(big)) <= TOLERANCE["fp32"]


@needs_cuda
def test_cuda_half_precisions_cast_the_weights_once(model):
    for precision in ("fp16", "bf16"):
        if ("cuda", precision) not in available():
            continue
        evaluator = build(model, "cuda", precision)
        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[precision]
        assert all(p.dtype == dtype for p in evaluator.model.parameters())


def test_a_backend_that_is_missing_is_refused_clearly(model):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ValueError, match="no cuda backend"):
        make_evaluator(model, backend="cuda")


def snapshot_bytes(weights: dict) -> bytes:
    return Snapshot(NetSpec(N, 2, 16), weights, params=0, flops_per_eval=0).to_bytes()


def test_a_snapshot_written_by_a_compiled_channels_last_half_model_loads(model):
    """torch.compile prefixes `_orig_mod.`, DataParallel `module.`; a GPU run may keep half weights."""
    weights = {}
    for i, (k, v) in enumerate(model.state_dict().items()):
        if v.ndim == 4:
            v = v.contiguous(memory_format=torch.channels_last)
        weights[("_orig_mod." if i % 2 else "module.") + k] = v
    codes = sample_codes(N, 20, seed=9)
    loaded = make_evaluator(snapshot_bytes(weights), backend="cpu", precision="fp32")
    assert max_difference(loaded.evaluate(codes), EagerEvaluator(model).evaluate(codes)) <= TOLERANCE["fp32"]
    halves = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    restored = Snapshot.from_bytes(snapshot_bytes(halves))
    assert all(v.dtype == torch.float32 for v in restored.weights.values() if v.is_floating_point())
    assert (
        max_difference(
            make_evaluator(restored.to_bytes(), "eager").evaluate(codes), EagerEvaluator(model).evaluate(codes)
        )
        <= TOLERANCE["fp16"]
    )


def test_a_snapshot_written_on_a_gpu_loads_on_the_cpu(model):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU to write the snapshot; this machine has none")
    blob = snapshot_bytes({k: v.cuda() for k, v in model.state_dict().items()})
    codes = sample_codes(N, 20, seed=10)
    loaded = make_evaluator(blob, backend="cpu", precision="fp32")
    assert max_difference(loaded.evaluate(codes), EagerEvaluator(model).evaluate(codes)) <= TOLERANCE["fp32"]


def test_the_registry_holds_every_backend_and_the_entry_points_name_none(model):
    backends = registered()
    assert list(backends) == ["eager", "cpu", "cuda", "mps", "tensorrt"]  # by priority
    assert [name for name, entry in backends.items() if not entry.probed] == ["eager"]  # asked for by name only
    assert all(backend in backends and backends[backend].probed for backend, _ in available())
    assert ("cpu", "fp32") in available() and backends["cpu"].available() == ("fp32",)
    with pytest.raises(ValueError, match="unknown backend 'tpu'; one of eager, cpu, cuda, mps, tensorrt"):
        build(model, "tpu")
    for backend in ("eager", "cpu"):
        with pytest.raises(ValueError, match=f"the {backend} backend runs fp32, not fp16"):
            build(model, backend, "fp16")
