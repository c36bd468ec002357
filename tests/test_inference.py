"""Every backend against eager fp32, auto-selection, and snapshots from elsewhere."""

import numpy as np
import pytest
import torch

from hexzd.nn.inference import (
    TOLERANCE,
    EagerEvaluator,
    available,
    build,
    fold_batch_norm,
    make_evaluator,
    max_difference,
    sample_features,
)
from hexzd.nn.net import NetSpec
from hexzd.train.trainer import Snapshot

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
    features = sample_features(N, 300, seed=5)  # not a bucket size: padding is exercised
    reference = EagerEvaluator(model).evaluate(features)
    logits, values = build(model, backend, precision).evaluate(features)
    assert logits.shape == (300, N * N) and values.shape == (300,)
    assert logits.dtype == values.dtype == np.float32
    assert max_difference((logits, values), reference) <= TOLERANCE[precision]


def test_folding_batch_norm_changes_the_layers_not_the_outputs(model):
    folded = fold_batch_norm(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    x = torch.from_numpy(sample_features(N, 64, seed=6))
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
    features = sample_features(N, 6, seed=7)
    logits, values = evaluator.evaluate(features)
    for i in range(6):
        row = evaluator.evaluate(features[i : i + 1])
        assert max_difference(row, (logits[i : i + 1], values[i : i + 1])) <= TOLERANCE["fp32"]
    empty = evaluator.evaluate(features[:0])
    assert empty[0].shape == (0, N * N) and empty[1].shape == (0,)


def test_features_of_the_wrong_shape_are_refused(model):
    with pytest.raises(ValueError, match=r"expected \[B, 4, 5, 5\]"):
        build(model, "cpu").evaluate(np.zeros((2, 4, 6, 6), np.float32))


def test_auto_picks_a_working_backend_and_says_why(model, caplog):
    caplog.set_level("INFO", logger="hexzd.nn.inference")
    evaluator = make_evaluator(model, threads=1)
    assert (evaluator.backend, evaluator.precision) in available()
    assert evaluator.reason.startswith(f"{evaluator.backend} {evaluator.precision}: ")
    assert evaluator.reason in caplog.text
    features = sample_features(N, 10, seed=8)
    assert (
        max_difference(evaluator.evaluate(features), EagerEvaluator(model).evaluate(features))
        <= TOLERANCE[evaluator.precision]
    )


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
    features = sample_features(N, 20, seed=9)
    loaded = make_evaluator(snapshot_bytes(weights), backend="cpu", precision="fp32")
    assert max_difference(loaded.evaluate(features), EagerEvaluator(model).evaluate(features)) <= TOLERANCE["fp32"]
    halves = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    restored = Snapshot.from_bytes(snapshot_bytes(halves))
    assert all(v.dtype == torch.float32 for v in restored.weights.values() if v.is_floating_point())
    assert (
        max_difference(
            make_evaluator(restored.to_bytes(), "eager").evaluate(features), EagerEvaluator(model).evaluate(features)
        )
        <= TOLERANCE["fp16"]
    )


def test_a_snapshot_written_on_a_gpu_loads_on_the_cpu(model):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU to write the snapshot; this machine has none")
    blob = snapshot_bytes({k: v.cuda() for k, v in model.state_dict().items()})
    features = sample_features(N, 20, seed=10)
    loaded = make_evaluator(blob, backend="cpu", precision="fp32")
    assert max_difference(loaded.evaluate(features), EagerEvaluator(model).evaluate(features)) <= TOLERANCE["fp32"]
