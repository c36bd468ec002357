"""`hexzd doctor --suggest`: a config.toml fitted to this machine, as `katago genconfig` writes KataGo's.

It counts the cores this process may use and the GPUs torch sees, measures
for a few seconds what the settings depend on, and writes the default
config's text (`hexzd.config.default_toml`) with only the keys it changes
edited, each under a `# hexzd doctor:` line that gives the figures that chose
it. The file is validated by the one config validation before it is written.

Without a GPU (self-play and training on the cores), it measures:
    a worker         the default self-play worker (hexzd.train.selfplay, one search thread,
                     two groups, the CPU backend with one torch thread) on the run's network:
                     positions/s, evaluations/s, and the cores it keeps busy (its search thread
                     and its inference service's thread overlap)
    the trainer      optimiser steps of train.batch_size on the run's network, one torch thread
and sizes:
    workers          evaluation keeps evaluation.cpu_share of the cores; each worker needs its own
                     cores and the trainer's for train.reuse passes over what it makes
    trainer_threads  enough threads for those passes
It leaves selfplay.batch at the default: on a CPU the tuner hill-climbs it on the
run's own evaluations/s, which a few seconds on a fresh network cannot foresee.
(The doctor once chose the batch by network evaluations/s alone: 256 here,
which bought no strength on 5x5 in 5 minutes; docs/results.md, 2026-12-05.)
With GPUs the search runs on the cores and the network on the GPUs: each
GPU gets an even share of the cores left by evaluation and the trainer,
spread over search threads, no more than Amdahl's law lets one process use
well (SERIAL_SHARE: the share of a search thread's time that holds the GIL),
two groups a thread, GPU_BATCH games a group. `--for-gpu h100` writes what it
would write on the lent H100 machine (PROFILES), measuring nothing.

`--hours H` sets budget.hours and sizes the network to the compute of H hours
on this machine: the board's "auto" shape at REFERENCE_FLOP, its parameters
times (compute / REFERENCE_FLOP) ** SIZE_EXPONENT above it, never smaller.
"""

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from hexzd.config import Config, default_toml, line_of, parse, scaled_shape, sections, toml_value
from hexzd.evaluation.throttle import usable_cores

__all__ = ["PROFILES", "Edit", "Machine", "fitted_text", "run"]

# One search thread's share of time outside the GIL-free kernels at 512 games a group,
# 9x9 (docs/results.md, "the inference service's hops and the GIL", 2026-12-03). By
# Amdahl, T threads of one process run 1 / (s + (1 - s) / T) times one thread; at most
# 1 + 0.25 / s threads keep that at 80% of T or more.
SERIAL_SHARE = 0.043
GPU_BATCH = 512  # games a group on a GPU: where that share was measured (docs/guides/gpus.md)
# The compute at which the board's "auto" network is the size hexzd has measured:
# the 7x7 30-minute run of 2026-12-02 on the 2-core VM, 4x32, 0.16 PFLOP (docs/results.md).
REFERENCE_FLOP = 0.16e15
# Parameters grow as compute to this power: AlphaZero's compute-optimal size grows as a
# power of compute "similar to language models" (Neumann & Gros 2022), whose exponent
# is about 0.5 (Hoffmann et al. 2022). Not yet measured for hexzd.
SIZE_EXPONENT = 0.5
MAX_CHANNELS = 256  # past this, depth grows instead of width
MEASURE_SECONDS = 2.0  # each timed measurement
ROUNDS = 3  # a batch's rate is its best of this many rounds, taken in turn with the others'


@dataclass(frozen=True)
class Machine:
    """What the settings are fitted to: cores this process may use, GPUs (names), host memory."""

    cores: int
    gpus: tuple[str, ...] = ()
    here: bool = False  # this machine, measured; else a profile, written for without measuring
    evals_per_s: float | None = None  # a profile's network rate, measured on one (4x32 on 9x9)
    source: str = "this machine"


# Machines written for without one at hand (`--for-gpu NAME`).
PROFILES = {
    # The lent machine of docs/guides/gpus.md: one H100 80GB HBM3 and 16 cores.
    "h100": Machine(cores=16, gpus=("NVIDIA H100 80GB HBM3",), source="an H100 machine (16 cores, one H100)"),
}


@dataclass(frozen=True)
class Edit:
    """One key the doctor changes, and why."""

    section: str
    key: str
    value: object
    why: str


@dataclass
class Fitted:
    """The measurements and the edits they chose."""

    machine: Machine
    edits: list[Edit] = field(default_factory=list)
    figures: dict = field(default_factory=dict)

    def set(self, section: str, key: str, value, why: str) -> None:
        """Records an edit where the value differs from the default config's."""
        if dict(sections())[section].model_fields[key].default != value:
            self.edits.append(Edit(section, key, value, why))


def this_machine() -> Machine:
    """The cores this process may use and the CUDA devices torch sees."""
    import torch

    gpus = tuple(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    return Machine(cores=usable_cores(), gpus=gpus, here=True)


def run(
    path: Path,
    size: int | None = None,
    hours: float | None = None,
    profile: str | None = None,
    force: bool = False,
    seconds: float = MEASURE_SECONDS,
    echo=print,
) -> Fitted:
    """Measures (or takes `profile`), writes the fitted config to `path`; what it chose.

    Raises FileExistsError for an existing `path` without `force`, KeyError for an unknown profile."""
    if path.exists() and not force:
        raise FileExistsError(f"{path} exists: --force to overwrite it")
    machine = PROFILES[profile] if profile else this_machine()
    if hours and not machine.here and machine.evals_per_s is None:
        raise ValueError(unmeasured(machine))
    config = Config.model_validate({"game": {"board_size": size}} if size else {})
    fitted = Fitted(machine)
    if size:
        fitted.set("game", "board_size", size, f"--size {size}")
    echo(f"hexzd doctor --suggest: {machine.cores} cores, {_gpus(machine)} ({machine.source})")
    if machine.gpus:
        flops_per_s = fit_gpu(fitted, config, seconds, echo)
    else:
        flops_per_s = fit_cpu(fitted, config, seconds, echo)
    if hours:
        fit_network(fitted, config, hours, flops_per_s)
    text = fitted_text(fitted.edits, header(machine))
    parse(text, path)  # the one validation: a file it writes, the daemon takes
    path.write_text(text)
    return fitted


def _gpus(machine: Machine) -> str:
    return ", ".join(machine.gpus) if machine.gpus else "no GPU"


def header(machine: Machine) -> list[str]:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return [
        f"# Written by `hexzd doctor --suggest` on {when} for {machine.source}:",
        f"# {machine.cores} cores, {_gpus(machine)}. The keys it changed from the defaults each",
        "# follow a `# hexzd doctor:` line that says why; the rest are the defaults.",
    ]


def fitted_text(edits: list[Edit], head: list[str]) -> str:
    """The default config's text with each edit's value on its key's line and its reason above it."""
    text = default_toml()
    lines = text.splitlines()
    found = [(line_of(text, (e.section, e.key)), e) for e in edits]
    for number, e in sorted(found, key=lambda f: f[0] or 0, reverse=True):  # bottom up: numbers stay true
        if number is None:
            raise ValueError(f"{e.section}.{e.key} is not a key of the default config")
        setting, comment = lines[number - 1].split(" # ", 1)
        lines[number - 1] = f"{f'{e.key} = {toml_value(e.value)}':<28} # {comment}"
        lines.insert(number - 1, f"# hexzd doctor: {e.why}")
    return "\n".join([*head, *lines]) + "\n"


# -- a CPU -----------------------------------------------------------------------------


def fit_cpu(fitted: Fitted, config: Config, seconds: float, echo) -> float:
    """Workers and trainer threads for self-play and training on the cores; the self-play FLOP/s
    the machine will run at."""
    n, cores = config.game.board_size, fitted.machine.cores
    worker = measure_worker(config, seconds)
    samples = measure_trainer(config, seconds)
    fitted.figures.update(worker=worker, trainer_samples_per_s=samples)
    echo(
        f"a self-play worker ({n}x{n}, {worker['shape']}): {worker['positions_per_s']:,.0f} positions/s, "
        f"{worker['evals_per_s']:,.0f} evals/s on {worker['cores']:.2f} cores; the trainer "
        f"{samples:,.0f} samples/s a thread; selfplay.batch is left to the tuner, which hill-climbs "
        "it on the run's own evals/s"
    )
    workers, threads = split_cores(cores, config, worker, samples)
    reuse, share, made = config.train.reuse, config.evaluation.cpu_share, worker["positions_per_s"]
    fitted.set(
        "selfplay",
        "workers",
        workers,
        f"{cores} cores less {share:g} for evaluation; a worker keeps {worker['cores']:.2f} busy and the trainer "
        f"{reuse:g} x {made:,.0f} / {samples:,.0f} more (train.reuse x its positions/s / samples/s a thread)",
    )
    fitted.set(
        "device",
        "trainer_threads",
        threads,
        f"{workers} worker(s) x {made:,.0f} positions/s x train.reuse {reuse:g} / {samples:,.0f} samples/s a thread",
    )
    return workers * worker["evals_per_s"] * worker["flops_per_eval"]


def split_cores(cores: int, config: Config, worker: dict, samples_per_s: float) -> tuple[int, int]:
    """(self-play workers, trainer threads): each worker takes its own cores and the trainer's
    share for train.reuse passes over its positions, within the cores evaluation leaves."""
    left = cores * (1 - config.evaluation.cpu_share)
    trainer_per_worker = config.train.reuse * worker["positions_per_s"] / samples_per_s
    workers = max(1, math.floor(left / (worker["cores"] + trainer_per_worker)))
    threads = max(1, math.ceil(workers * trainer_per_worker))
    return workers, min(threads, max(1, math.floor(left - workers * worker["cores"])))


@contextmanager
def torch_threads(count: int):
    """torch's CPU threads set to `count` in the block, as a worker sets them; then as they were."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _network(config: Config):
    import torch

    from hexzd.nn.net import NetSpec

    torch.manual_seed(0)
    return NetSpec(config.game.board_size, int(config.model.blocks), int(config.model.channels)).build()


def measure_worker(config: Config, seconds: float) -> dict:
    """The default self-play worker on a fresh network of the run's shape, on the CPU: its rates
    per CPU-second (neighbours on a shared machine slow the wall clock, not those), and the cores
    it keeps busy, at least one (its search thread and its inference thread overlap)."""
    from hexzd.benchmarks.selfplay import _selfplay, _time
    from hexzd.nn.inference import build
    from hexzd.nn.net import count_flops

    model = _network(config).eval()
    c = config.selfplay
    with torch_threads(config.device.threads):
        games = _selfplay(config.game.board_size, c.sims, 2 * c.batch, [build(model, "cpu", "fp32")])
        try:
            rates = _time(games, seconds)
        finally:
            games.close()
    busy = rates["evals_per_s"] / rates["evals_per_cpu_s"]  # CPU seconds a wall second
    cores, per_cpu_second = max(1.0, busy), rates["evals_per_cpu_s"] / rates["evals_per_s"]
    return {
        "shape": f"{model.spec.blocks}x{model.spec.channels}",
        "flops_per_eval": count_flops(model),
        "positions_per_s": rates["positions_per_s"] * per_cpu_second * cores,
        "evals_per_s": rates["evals_per_cpu_s"] * cores,
        "cores": cores,
    }


def measure_trainer(config: Config, seconds: float) -> float:
    """Training samples per CPU-second of one torch thread: optimiser steps of train.batch_size,
    as the trainer takes them."""
    import torch

    from hexzd.nn.net import NUM_PLANES
    from hexzd.train.trainer import losses, make_optimizer

    model, n, batch = _network(config).train(), config.game.board_size, config.train.batch_size
    optimizer = make_optimizer(model, config.train)
    planes = torch.rand(batch, NUM_PLANES, n, n).round()
    policy = torch.softmax(torch.randn(batch, n * n), dim=1)
    value = torch.rand(batch) * 2 - 1

    def step():
        policy_loss, value_loss = losses(model, planes, policy, value)
        optimizer.zero_grad(set_to_none=True)
        (policy_loss + value_loss).backward()
        optimizer.step()

    with torch_threads(1):
        step()  # warm-up: the allocator, AdamW's state
        steps, start = 0, time.process_time()
        while time.process_time() - start < seconds:
            step()
            steps += 1
        return steps * batch / (time.process_time() - start)


def measure_batches(config: Config, batches, seconds: float, backend: str = "cpu", precision: str = "fp32") -> dict:
    """Network evaluations/s by batch size on one backend (as `hexzd bench net`); on the CPU, one
    torch thread's evaluations per CPU-second of it."""
    from hexzd.nn.backends.base import sample_codes
    from hexzd.nn.inference import build, throughput

    evaluator = build(_network(config).eval(), backend, precision)
    codes = {b: sample_codes(config.game.board_size, b, seed=b) for b in batches}
    clock = time.thread_time if backend == "cpu" else time.perf_counter
    best = dict.fromkeys(batches, 0.0)
    with torch_threads(config.device.threads):
        for _ in range(ROUNDS):  # the batches in turn, each round: a slow spell falls on all of them
            for b in batches:
                best[b] = max(best[b], throughput(evaluator, codes[b], seconds / ROUNDS, 1, clock))
    return best


# -- GPUs ------------------------------------------------------------------------------


def fit_gpu(fitted: Fitted, config: Config, seconds: float, echo) -> float | None:
    """Workers, threads, groups and batch per GPU; the self-play FLOP/s, where a rate is known."""
    machine = fitted.machine
    gpus, share = len(machine.gpus), config.evaluation.cpu_share
    per_gpu = (machine.cores * (1 - share) - 1) / gpus  # one core: the trainer's and the daemon's
    most = max(1, math.floor(1 + 0.25 / SERIAL_SHARE))
    workers = max(1, math.ceil(per_gpu / most))
    threads = max(1, math.floor(per_gpu / workers))
    fitted.set(
        "selfplay",
        "workers",
        workers,
        f"{machine.cores} cores, {gpus} GPU(s): {per_gpu:.1f} cores a GPU search once evaluation ({share:g}) and "
        f"the trainer (1) have theirs; a process runs at most {most} threads, each then at 80% or more of a lone "
        f"thread's speed (Amdahl: {SERIAL_SHARE:.1%} of a thread's time holds the GIL)",
    )
    fitted.set("selfplay", "threads", threads, f"{per_gpu:.1f} search cores a GPU over {workers} process(es)")
    fitted.set("selfplay", "groups", 2 * threads, "two groups a search thread: one searches while one is evaluated")
    fitted.set(
        "selfplay",
        "batch",
        GPU_BATCH,
        f"{GPU_BATCH} games a group: the GIL share above; the tuner doubles it toward tune.gpu_target",
    )
    rate = measure_gpu(config, threads * GPU_BATCH, seconds, echo) if machine.here else machine.evals_per_s
    if rate is None:
        return None
    flops = _flops_per_eval(config)
    echo(f"network on the GPU at {threads * GPU_BATCH} rows a batch: {rate:,.0f} evals/s")
    fitted.figures["gpu_evals_per_s"] = rate
    return gpus * rate * flops


def measure_gpu(config: Config, rows: int, seconds: float, echo) -> float | None:
    """The cuda backend's evaluations/s at `rows` a batch, its fastest precision; None without one.

    Not TensorRT, whose engines take minutes to build; the daemon's start times it (device.backend auto)."""
    from hexzd.nn.inference import available

    pairs = available("cuda")
    if not pairs:
        echo("no cuda backend runs here: the network's rate is unknown")
        return None
    rows = min(rows, 4096)
    return max(measure_batches(config, (rows,), seconds, b, p)[rows] for b, p in pairs)


def _flops_per_eval(config: Config) -> int:
    from hexzd.nn.net import count_flops

    return count_flops(_network(config))


# -- the network for a budget ------------------------------------------------------------


def fit_network(fitted: Fitted, config: Config, hours: float, flops_per_s: float | None) -> None:
    """budget.hours, and a network sized to the compute of those hours."""
    fitted.set("budget", "hours", hours, f"--hours {hours:g}")
    if flops_per_s is None:
        raise ValueError(unmeasured(fitted.machine))
    from hexzd.nn.net import TRAIN_FLOPS_PER_SAMPLE

    sims, reuse = config.selfplay.sims, config.train.reuse
    total = hours * 3600 * flops_per_s * (1 + TRAIN_FLOPS_PER_SAMPLE * reuse / sims)  # self-play and training
    n = config.game.board_size
    blocks, channels = sized_shape(n, total)
    why = (
        f"{hours:g} h at {flops_per_s / 1e12:.3g} TFLOP/s of self-play (and training: {total / 1e15:.3g} PFLOP): "
        f"parameters x (compute / {REFERENCE_FLOP / 1e15:g} PFLOP) ** {SIZE_EXPONENT} over the board's auto shape"
    )
    fitted.set("model", "blocks", blocks, why)
    fitted.set("model", "channels", channels, why)


def unmeasured(machine: Machine) -> str:
    return f"--hours sizes the network by the network's rate on {machine.source}, which is not measured"


def sized_shape(n: int, flop: float) -> tuple[int | str, int | str]:
    """(blocks, channels) for `flop` of compute on an n x n board; "auto" where the auto shape holds."""
    auto = scaled_shape(n)
    growth = max(1.0, flop / REFERENCE_FLOP) ** SIZE_EXPONENT  # parameters ~ blocks * channels ** 2
    channels = 16 * round(auto["channels"] * math.sqrt(growth) / 16)
    blocks = auto["blocks"]
    if channels > MAX_CHANNELS:  # wider no more: the rest of the growth in depth
        blocks = min(64, round(blocks * (channels / MAX_CHANNELS) ** 2))
        channels = MAX_CHANNELS
    return (
        "auto" if blocks == auto["blocks"] else blocks,
        "auto" if channels == auto["channels"] else channels,
    )
