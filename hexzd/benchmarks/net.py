"""`hexzd bench net`: network evaluations per second, per backend and batch size.

The baseline, in the same run, is the same model in torch eager fp32 on the
same device. Each row also gives the FLOP/s achieved (the network's
counted FLOPs per evaluation times evaluations per second) and, where the
device's peak is known, the fraction of that peak.

Batch sizes run 1, 2, 4, ... 4096 on every backend; a row lasts its share of
`seconds` or, for batches that take longer, one warm-up and ROUNDS calls. The
CPU runs with `[device] threads` torch threads, as a self-play worker would.
"""

import platform

import torch

from hexzd.config import DeviceConfig
from hexzd.nn.backends.base import sample_codes
from hexzd.nn.inference import available, build, throughput
from hexzd.nn.net import NetSpec, count_flops, count_params

__all__ = ["BATCHES", "peak", "report", "run"]

BATCHES = tuple(2**k for k in range(13))  # 1 .. 4096
ROUNDS = 3  # a row's time is split in rounds and the best round is kept
ROW_SHARE = 0.25  # of `seconds`, per CPU row: 26 CPU rows must fit well inside a minute

# Dense peak FLOP/s from NVIDIA's data sheets, by the precision the kernels
# run in (fp32 without TF32, which the fp32 backends turn off). Matched
# against torch.cuda.get_device_name(), first match wins.
GPU_PEAKS = (
    ("H100 PCIe", {"fp32": 51e12, "bf16": 756e12, "fp16": 756e12, "int8": 1513e12}),
    ("H100", {"fp32": 67e12, "bf16": 989e12, "fp16": 989e12, "int8": 1979e12}),
    ("H200", {"fp32": 67e12, "bf16": 989e12, "fp16": 989e12, "int8": 1979e12}),
    ("A100", {"fp32": 19.5e12, "bf16": 312e12, "fp16": 312e12, "int8": 624e12}),
    ("L4", {"fp32": 30.3e12, "bf16": 121e12, "fp16": 121e12, "int8": 242e12}),
    ("A10", {"fp32": 31.2e12, "bf16": 125e12, "fp16": 125e12, "int8": 250e12}),
    ("RTX 4090", {"fp32": 82.6e12, "bf16": 165e12, "fp16": 165e12, "int8": 661e12}),
    ("T4", {"fp32": 8.1e12, "fp16": 65e12, "int8": 130e12}),
)


def backend_device(backend: str) -> str:
    """Where a backend runs: cuda and tensorrt on the GPU, the others on their namesake."""
    return {"cpu": "cpu", "mps": "mps"}.get(backend, "cuda")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:  # not Linux
        pass
    return platform.processor() or platform.machine()


def device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name()
    if device == "cpu":
        threads = torch.get_num_threads()
        return f"{cpu_model()}, {threads} torch thread{'s' if threads > 1 else ''}"
    return device


def peak(device: str, precision: str) -> float | None:
    """The device's dense peak FLOP/s at this precision, or None where unknown (CPUs, MPS)."""
    if device != "cuda":
        return None
    name = torch.cuda.get_device_name()
    for key, peaks in GPU_PEAKS:
        if key in name:
            return peaks.get(precision)
    return None


def _rows(evaluator, n: int, flops: int, seconds: float) -> list[dict]:
    """One row per batch size."""
    rows = []
    for batch in BATCHES:
        codes = sample_codes(n, batch, seed=batch)
        rate = throughput(evaluator, codes, seconds, ROUNDS)
        top = peak(evaluator.device, evaluator.precision)
        rows.append(
            {
                "backend": evaluator.backend,
                "precision": evaluator.precision,
                "device": evaluator.device,
                "batch": batch,
                "evals_per_s": rate,
                "flops_per_s": rate * flops,
                "peak_fraction": rate * flops / top if top else None,
            }
        )
    return rows


def run(
    size: int = 9,
    seconds: float = 3.0,
    blocks: int | None = None,
    channels: int | None = None,
    threads: int | None = None,
) -> dict:
    """Times every available backend against eager fp32 on the same device.

    A CPU row gets ROW_SHARE of `seconds`; a GPU row a fifth of that, as a
    GPU reaches a steady rate sooner. The network defaults to 4 x 32 on any
    board (docs/results.md's tables measure it; a run's own size follows the board,
    config.scaled_shape); threads to config.toml's default.
    """
    torch.set_num_threads(threads or DeviceConfig().threads)
    spec = NetSpec(size, blocks or 4, channels or 32)
    torch.manual_seed(0)
    model = spec.build().eval()
    flops = count_flops(model)
    devices = sorted({backend_device(b) for b, _ in available()}, key=lambda d: d != "cpu")
    table = []
    for device in devices:
        row_seconds = seconds * ROW_SHARE if device == "cpu" else seconds * ROW_SHARE / 5
        table += _rows(build(model, "eager", "fp32", device), size, flops, row_seconds)
        for backend, precision in available():
            if backend_device(backend) == device:
                table += _rows(build(model, backend, precision), size, flops, row_seconds)
    best = max((r for r in table if r["backend"] != "eager"), key=lambda r: r["evals_per_s"])
    baseline = max(
        (r for r in table if r["backend"] == "eager" and r["device"] == best["device"]),
        key=lambda r: r["evals_per_s"],
    )
    return {
        "unit": "evals/s",
        "size": size,
        "blocks": spec.blocks,
        "channels": spec.channels,
        "params": count_params(model),
        "flops_per_eval": flops,
        "devices": {d: device_name(d) for d in devices},
        "hexzd_per_s": best["evals_per_s"],
        "hexzd": f"{best['backend']} {best['precision']} at batch {best['batch']}",
        "baseline_per_s": baseline["evals_per_s"],
        "baseline": f"eager fp32 on {baseline['device']} at batch {baseline['batch']}",
        "ratio": best["evals_per_s"] / baseline["evals_per_s"],
        "table": table,
    }


def _si(x: float | None, unit: str = "") -> str:
    if x is None:
        return "-"
    for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= scale:
            return f"{x / scale:.3g} {prefix}{unit}"
    return f"{x:.3g} {unit}"


def report(result: dict) -> None:
    print(
        f"network {result['blocks']} blocks x {result['channels']} channels on {result['size']}x{result['size']}: "
        f"{result['params']:,} parameters, {_si(result['flops_per_eval'], 'FLOP')} per evaluation"
    )
    for device, name in result["devices"].items():
        print(f"  {device}: {name}")
    print(f"{'backend':<10}{'precision':<10}{'device':<8}{'batch':>6}{'evals/s':>12}{'FLOP/s':>14}{'of peak':>9}")
    for r in result["table"]:
        fraction = "-" if r["peak_fraction"] is None else f"{r['peak_fraction']:.1%}"
        print(
            f"{r['backend']:<10}{r['precision']:<10}{r['device']:<8}{r['batch']:>6}"
            f"{r['evals_per_s']:>12,.0f}{_si(r['flops_per_s'], 'FLOP/s'):>14}{fraction:>9}"
        )
    print(
        f"best: {result['hexzd']}, {result['hexzd_per_s']:,.0f} evals/s; baseline {result['baseline']}, "
        f"{result['baseline_per_s']:,.0f} evals/s; ratio {result['ratio']:.2f}x"
    )
