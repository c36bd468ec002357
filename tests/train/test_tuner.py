"""The tuner against a simulated accelerator, CPU inference and trainer; the NVML meter with a fake pynvml."""

import math
import random
import sys
import types

import pytest

from hexzd.config import TuneConfig
from hexzd.train.tuner import GpuMeter, Telemetry, Tuner

INTERVAL = 30.0
TICK = 7.0  # the daemon's tick; deliberately not a divisor of the interval


def run(tuner, telemetry, seconds, start=0.0, tick=TICK):
    """Drive the real tuner with telemetry(sims, batch) each tick; returns [(now, decision)]."""
    log = []
    now = start
    while now <= start + seconds:
        sims, batch = tuner.sims, tuner.batch
        for d in tuner.observe(telemetry(sims, batch), now):
            old = sims if d.knob == "sims" else batch
            assert d.old == old, d
            assert d.new != d.old and d.reason
            if d.knob == "sims":
                sims = d.new
            else:
                batch = d.new
            log.append((now, d))
        assert (tuner.sims, tuner.batch) == (sims, batch)
        now += tick
    return log


def assert_spaced(log, interval=INTERVAL):
    for knob in ("sims", "batch"):
        times = [at for at, d in log if d.knob == knob]
        assert all(b - a >= interval for a, b in zip(times, times[1:])), (knob, times)


# --- batch with a GPU meter -------------------------------------------------------------------


def saturating_gpu(peak=20_000.0, knee=64.0, positions=100.0, samples=None):
    """evals/s = peak * b / (b + knee), utilisation b / (b + knee); the trainer keeps sims in balance."""

    def telemetry(sims, batch):
        util = batch / (batch + knee)
        return Telemetry(positions, peak * util, samples if samples is not None else 0.9 * 4 * positions, 4.0, util)

    return telemetry


def test_gpu_batch_doubles_until_the_target_utilisation():
    tune = TuneConfig(interval=INTERVAL)
    tuner = Tuner(tune, sims=64, batch=8)
    log = run(tuner, saturating_gpu(), 60 * INTERVAL)
    batches = [d.new for _, d in log if d.knob == "batch"]
    assert batches == [16, 32, 64, 128, 256, 512]
    util = tuner.batch / (tuner.batch + 64)
    assert util >= tune.gpu_target - 0.05
    assert all(tune.batch_min <= b <= tune.batch_max for b in batches)
    assert_spaced(log)
    assert log[-1][0] < 20 * INTERVAL  # then it holds
    first = log[0][1].reason
    assert "GPU busy 11%" in first and "target" in first and "batch 8" in first and "2222 evals/s" in first


def test_sims_hold_while_a_batch_trial_is_measured():
    # Self-play makes 4x what the trainer can use, so sims should rise, but not while a batch
    # trial's evals/s are being measured: a deeper search would blur the comparison.
    tuner = Tuner(TuneConfig(interval=INTERVAL), sims=16, batch=8)
    log = run(tuner, saturating_gpu(samples=100.0), 60 * INTERVAL)
    last_batch = max(at for at, d in log if d.knob == "batch")
    sims = [at for at, d in log if d.knob == "sims"]
    assert sims and min(sims) > last_batch
    assert_spaced(log)


def test_gpu_batch_stops_at_batch_max():
    tune = TuneConfig(interval=INTERVAL, batch_max=100)
    tuner = Tuner(tune, sims=64, batch=8)
    log = run(tuner, saturating_gpu(knee=100_000.0), 60 * INTERVAL)
    batches = [d.new for _, d in log if d.knob == "batch"]
    assert batches == [16, 32, 64, 100]
    assert tuner.batch == 100
    assert_spaced(log)


def test_gpu_batch_holds_near_the_target_with_noisy_measurements():
    rng = random.Random(7)
    ideal = saturating_gpu()

    def noisy(sims, batch):
        t = ideal(sims, batch)
        return Telemetry(
            t.positions_per_s,
            t.evals_per_s * rng.uniform(0.97, 1.03),
            t.samples_per_s,
            t.reuse,
            min(1.0, t.gpu_util * rng.uniform(0.97, 1.03)),
        )

    tune = TuneConfig(interval=INTERVAL)
    tuner = Tuner(tune, sims=64, batch=8)
    log = run(tuner, noisy, 2000 * INTERVAL)
    assert tuner.batch in (256, 512)
    assert len([d for _, d in log if d.knob == "batch"]) <= 12
    assert_spaced(log)


def cpu_bound(sims, batch):
    """An accelerator that is never the bottleneck: util stays low, evals/s saturate at batch 64."""
    return Telemetry(100.0, 100.0 * min(batch, 64), 360.0, 4.0, 0.3)


def test_gpu_doubling_that_does_not_raise_throughput_is_reverted_and_raising_stops():
    tune = TuneConfig(interval=INTERVAL)
    tuner = Tuner(tune, sims=64, batch=16)
    log = run(tuner, cpu_bound, 600 * INTERVAL)
    batch = [(at, d) for at, d in log if d.knob == "batch"]
    assert [(d.old, d.new) for _, d in batch[:4]] == [(16, 32), (32, 64), (64, 128), (128, 64)]
    revert = batch[3][1].reason
    assert "batch 128 gave 6400 evals/s vs 6400 at batch 64" in revert and "+0.0%" in revert
    assert "no raise for 10 intervals (300 s)" in revert
    # The next raise waits 10 intervals, then each failure doubles the hold.
    gaps = [b[0] - a[0] for a, b in zip(batch[3::2], batch[5::2])]
    assert gaps and gaps[0] >= 10 * INTERVAL
    assert all(later > earlier for earlier, later in zip(gaps, gaps[1:]))
    assert tuner.batch == 64 or batch[-1][1].new == 128  # a probe may be in flight at the end
    assert_spaced(log)


def test_gpu_busy_batch_is_not_shrunk():
    tuner = Tuner(TuneConfig(interval=INTERVAL), sims=64, batch=256)
    log = run(tuner, lambda s, b: Telemetry(100.0, 5000.0, 360.0, 4.0, 0.99), 100 * INTERVAL)
    assert log == []
    assert tuner.batch == 256


def test_no_batch_decision_before_the_first_network():
    tuner = Tuner(TuneConfig(interval=INTERVAL), sims=64, batch=8)
    log = run(tuner, lambda s, b: Telemetry(100.0, 0.0, 360.0, 4.0, 0.05), 100 * INTERVAL)
    assert log == []


# --- batch without a GPU meter: hill-climbing ---------------------------------------------------


def peaked_cpu(best=64, peak=3000.0):
    """evals/s rise up to batch `best`, then fall (cache misses, search stalls)."""

    def telemetry(sims, batch):
        x = math.log2(batch / best)
        return Telemetry(100.0, peak * math.exp(-0.3 * x * x), 360.0, 4.0, None)

    return telemetry


@pytest.mark.parametrize("start", [8, 1024])
def test_cpu_hill_climb_finds_the_peak_and_settles(start):
    tune = TuneConfig(interval=INTERVAL)
    tuner = Tuner(tune, sims=64, batch=start)
    log = run(tuner, peaked_cpu(), 2000 * INTERVAL)
    assert 32 <= tuner.batch <= 128
    batch = [(at, d) for at, d in log if d.knob == "batch"]
    assert len(batch) <= 30  # a fixed 10-interval hold would give ~360 probes
    assert all(tune.batch_min <= d.new <= tune.batch_max for _, d in batch)
    # It spends the last half of the run at the peak, apart from rare one-interval probes.
    assert sum(1 for at, d in batch if at > 1000 * INTERVAL) <= 8
    assert_spaced(log)
    assert "no GPU meter" in batch[0][1].reason and f"batch {start}" in batch[0][1].reason
    assert batch[0][0] < 2 * INTERVAL  # from batch_max it tries halving at once


def test_cpu_hill_climb_finds_an_optimum_below_the_start():
    tuner = Tuner(TuneConfig(interval=INTERVAL), sims=64, batch=128)
    log = run(tuner, peaked_cpu(best=16), 200 * INTERVAL)
    moves = [(d.old, d.new) for _, d in log]
    assert moves[:2] == [(128, 256), (256, 128)]  # doubling fails first
    assert (128, 64) in moves and (32, 16) in moves
    assert tuner.batch in (16, 32) or log[-1][1].new in (8, 32)


# --- sims: data generation against training ---------------------------------------------------


def selfplay_and_trainer(work=48_000.0, capacity=6_000.0, reuse=4.0, waiting=True):
    """positions/s = work / sims; the trainer trains at most `capacity` samples/s, paced by reuse.

    It waits for data whenever reuse * positions/s falls short of its capacity,
    and says so unless `waiting` is False (an older trainer that reports nothing).
    """

    def telemetry(sims, batch):
        positions = work / sims
        samples = min(capacity, reuse * positions)
        return Telemetry(positions, 1000.0, samples, reuse, 0.9, 1 - samples / capacity if waiting else None)

    return telemetry


def ratio(tele, sims):
    t = tele(sims, 0)
    return t.samples_per_s / (t.reuse * t.positions_per_s)


@pytest.mark.parametrize("start", [16, 20, 400])
def test_sims_settle_where_the_trainer_uses_most_of_the_data_and_rarely_waits(start):
    tele = selfplay_and_trainer()  # ratio = sims / 32 below 32; waiting = 1 - 32 / sims above
    tune = TuneConfig(interval=INTERVAL)
    tuner = Tuner(tune, sims=start, batch=64)
    log = run(tuner, tele, 300 * INTERVAL)
    assert ratio(tele, tuner.sims) >= 0.8 and tele(tuner.sims, 0).trainer_waiting < 0.1
    assert log and log[-1][0] < 100 * INTERVAL  # settled, then held for 200 intervals
    assert all(tune.sims_min <= d.new <= tune.sims_max for _, d in log)
    assert_spaced(log)


@pytest.mark.parametrize("start", [16, 20, 400])
def test_sims_settle_on_the_ratio_alone_when_the_trainer_does_not_say_it_waits(start):
    tele = selfplay_and_trainer(waiting=False)
    tune = TuneConfig(interval=INTERVAL)
    tuner = Tuner(tune, sims=start, batch=64)
    log = run(tuner, tele, 300 * INTERVAL)
    assert 0.8 <= ratio(tele, tuner.sims) <= 0.95
    assert log and log[-1][0] < 100 * INTERVAL
    assert all(tune.sims_min <= d.new <= tune.sims_max for _, d in log)
    assert_spaced(log)


def test_sims_reason_has_the_numbers():
    tuner = Tuner(TuneConfig(interval=INTERVAL), sims=16, batch=64)
    log = run(tuner, selfplay_and_trainer(), 2 * INTERVAL)
    ((at, d),) = log
    assert (d.knob, d.old, d.new) == ("sims", 16, 20)
    assert d.reason.startswith("trainer uses 0.50 of the data at reuse 4 (6000 samples/s vs 3000 positions/s)")
    assert "more search per move" in d.reason


@pytest.mark.parametrize("capacity, bound", [(1e9, 16), (10.0, 800)])
def test_sims_stop_at_their_bounds(capacity, bound):
    tune = TuneConfig(interval=INTERVAL)
    tuner = Tuner(tune, sims=64, batch=64)
    log = run(tuner, selfplay_and_trainer(capacity=capacity), 300 * INTERVAL)
    assert tuner.sims == bound
    assert all(tune.sims_min <= d.new <= tune.sims_max for _, d in log)
    if bound == 16:
        assert "it waits for data 100% of the time" in log[0][1].reason


def test_sims_hold_while_the_trainer_works_through_a_backlog():
    """After the rollout phase the trainer has more data than it needs and never waits.

    Self-play makes 1,000 positions/s while the trainer, flat out on the stored
    backlog, trains 6,000 samples/s at reuse 4: a ratio of 1.5 that would read as
    "starved", yet it waits 0 % of the time. Sims must hold until it waits.
    """
    tuner = Tuner(TuneConfig(interval=INTERVAL), sims=64, batch=64)
    backlog = lambda s, b: Telemetry(1000.0, 1000.0, 6000.0, 4.0, 0.9, 0.0)  # noqa: E731
    assert run(tuner, backlog, 100 * INTERVAL) == []
    drained = lambda s, b: Telemetry(1000.0, 1000.0, 4000.0, 4.0, 0.9, 1 / 3)  # noqa: E731
    log = run(tuner, drained, 3 * INTERVAL, start=101 * INTERVAL)
    assert [(d.old, d.new) for _, d in log][:1] == [(64, 51)]
    assert "it waits for data" in log[0][1].reason


def test_no_sims_signal_before_self_play_or_training():
    tuner = Tuner(TuneConfig(interval=INTERVAL), sims=64, batch=64)
    assert run(tuner, lambda s, b: Telemetry(500.0, 1000.0, 0.0, 4.0, 0.9), 100 * INTERVAL) == []
    assert run(tuner, lambda s, b: Telemetry(0.0, 0.0, 0.0, 4.0, 0.9), 100 * INTERVAL, start=101 * INTERVAL) == []


def test_first_training_step_restarts_the_measurement():
    # The trainer starts mid-window; the spans before its first step must not dilute the ratio.
    tuner = Tuner(TuneConfig(interval=INTERVAL), sims=28, batch=64)
    tele = selfplay_and_trainer()

    def late_trainer(sims, batch):
        t = tele(sims, batch)
        return t if late_trainer.now >= 20 else Telemetry(t.positions_per_s, 1000.0, 0.0, 4.0, 0.9)

    decisions = []
    for now in range(0, 200, 5):
        late_trainer.now = now
        decisions += tuner.observe(late_trainer(tuner.sims, tuner.batch), float(now))
    assert decisions == []  # ratio 28/32 = 0.875 once training runs


# --- config edits and the switch -----------------------------------------------------------


def test_configure_applies_a_users_sims_at_once_and_clamps_it():
    tune = TuneConfig(interval=INTERVAL)
    tele = selfplay_and_trainer()
    tuner = Tuner(tune, sims=16, batch=64)
    run(tuner, tele, 20 * INTERVAL)
    tuned = tuner.sims
    assert tuned != 16
    tuner.configure(tune, sims=16, batch=64)  # an unrelated edit: the file's sims did not change
    assert tuner.sims == tuned
    tuner.configure(tune, sims=100, batch=64)  # the user's edit
    assert tuner.sims == 100
    assert tuner.observe(tele(100, 64), 21 * INTERVAL) == []  # its first span straddles the edit
    tuner.configure(tune.model_copy(update={"sims_max": 50}), sims=100, batch=64)
    assert tuner.sims == 50
    (clamp,) = tuner.observe(tele(50, 64), 22 * INTERVAL)
    assert (clamp.knob, clamp.old, clamp.new) == ("sims", 100, 50)
    assert "[16, 50]" in clamp.reason and "100" in clamp.reason
    tuner.configure(tune, sims=2000, batch=2)
    assert (tuner.sims, tuner.batch) == (800, 8)
    clamps = tuner.observe(tele(800, 8), 23 * INTERVAL)
    assert {(d.knob, d.old, d.new) for d in clamps} == {("sims", 2000, 800), ("batch", 2, 8)}


def test_configure_resets_the_batch_hold():
    tune = TuneConfig(interval=INTERVAL)
    tuner = Tuner(tune, sims=64, batch=32)
    log = run(tuner, cpu_bound, 10 * INTERVAL)
    assert [(d.old, d.new) for _, d in log] == [(32, 64), (64, 128), (128, 64)]  # holding for 10 intervals
    assert run(tuner, cpu_bound, 3 * INTERVAL, start=10 * INTERVAL + TICK) == []
    tuner.configure(tune, sims=64, batch=16)
    log = run(tuner, cpu_bound, 5 * INTERVAL, start=16 * INTERVAL)
    assert [(d.old, d.new) for _, d in log][:1] == [(16, 32)]


def test_disabled_tuner_decides_nothing_and_keeps_the_files_values():
    tune = TuneConfig(interval=INTERVAL, enabled=False)
    tuner = Tuner(tune, sims=2000, batch=8)
    assert run(tuner, saturating_gpu(), 100 * INTERVAL) == []
    assert run(tuner, selfplay_and_trainer(), 100 * INTERVAL, start=101 * INTERVAL) == []
    assert (tuner.sims, tuner.batch) == (2000, 8)
    tuner.configure(tune.model_copy(update={"enabled": True}), sims=2000, batch=8)
    assert tuner.sims == 800
    (clamp,) = tuner.observe(saturating_gpu()(800, 8), 202 * INTERVAL)
    assert (clamp.knob, clamp.old, clamp.new) == ("sims", 2000, 800)
    assert run(tuner, saturating_gpu(), 10 * INTERVAL, start=203 * INTERVAL)


def test_initial_values_outside_the_bounds_are_clamped_and_reported():
    tuner = Tuner(TuneConfig(interval=INTERVAL), sims=4, batch=4096)
    assert (tuner.sims, tuner.batch) == (16, 1024)
    first = tuner.observe(Telemetry(0.0, 0.0, 0.0, 4.0, None), 0.0)
    assert {(d.knob, d.old, d.new) for d in first} == {("sims", 4, 16), ("batch", 4096, 1024)}
    assert tuner.observe(Telemetry(0.0, 0.0, 0.0, 4.0, None), 1.0) == []


# --- the GPU meter -----------------------------------------------------------------------------


def test_gpu_meter_without_pynvml(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import fails, installed or not
    assert GpuMeter.open() is None
    assert "pynvml" in GpuMeter.why_not and "nvidia-ml-py" in GpuMeter.why_not


class FakeNVMLError(Exception):
    pass


def fake_pynvml(utils, fail_init=False, unsupported=()):
    """A stand-in for NVML over GPUs with the given utilisation percentages."""
    nvml = types.ModuleType("pynvml")
    nvml.NVMLError = FakeNVMLError
    nvml.shutdowns = 0

    def init():
        if fail_init:
            raise FakeNVMLError("Driver Not Loaded")

    def utilization(h):
        if h in unsupported:
            raise FakeNVMLError("Not Supported")
        return types.SimpleNamespace(gpu=utils[h], memory=0)

    def shutdown():
        nvml.shutdowns += 1

    nvml.nvmlInit = init
    nvml.nvmlShutdown = shutdown
    nvml.nvmlDeviceGetCount = lambda: len(utils)
    nvml.nvmlDeviceGetHandleByIndex = lambda i: i
    nvml.nvmlDeviceGetUUID = lambda h: f"GPU-{h}aaa-{h}"
    nvml.nvmlDeviceGetUtilizationRates = utilization
    return nvml


def test_gpu_meter_through_nvml(monkeypatch):
    nvml = fake_pynvml([30, 50])
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    meter = GpuMeter.open()
    assert meter is not None and GpuMeter.why_not == ""
    assert meter.sample() == pytest.approx(0.3)  # the least busy GPU: one batch size serves both
    nvml.nvmlDeviceGetUtilizationRates = lambda h: types.SimpleNamespace(gpu=[90, 70][h])
    assert meter.sample() == pytest.approx(0.7)
    assert meter.take_mean() == pytest.approx(0.5)
    assert meter.take_mean() is None
    meter.close()
    meter.close()
    assert nvml.shutdowns == 1


def test_gpu_meter_lists_each_device_with_what_nvml_reports(monkeypatch):
    nvml = fake_pynvml([30, 50])
    nvml.nvmlDeviceGetName = lambda h: [b"NVIDIA H100 80GB HBM3", "NVIDIA A100"][h]
    nvml.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(used=(h + 1) * 2**30, total=80 * 2**30)

    def power(h):  # the second GPU's driver does not report power
        if h == 1:
            raise FakeNVMLError("Not Supported")
        return 312_500

    nvml.nvmlDeviceGetPowerUsage = power
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with GpuMeter.open() as meter:
        first, second = meter.devices()
    assert first == {
        "index": 0,
        "name": "NVIDIA H100 80GB HBM3",
        "util": 0.3,
        "memory_used": 2**30,
        "memory_total": 80 * 2**30,
        "watts": 312.5,
    }
    assert second["name"] == "NVIDIA A100" and second["util"] == 0.5 and second["watts"] is None


@pytest.mark.parametrize(
    "visible, expected", [("1", 0.5), ("0,1", 0.3), ("2,1", 0.5), ("GPU-1", 0.5), ("1,x,0", 0.5), ("0,,1", 0.3)]
)
def test_gpu_meter_sees_only_cuda_visible_devices(monkeypatch, visible, expected):
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml([30, 50, 90]))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    with GpuMeter.open() as meter:
        assert meter.sample() == pytest.approx(expected)


@pytest.mark.parametrize(
    "nvml, visible, why",
    [
        (fake_pynvml([30], fail_init=True), None, "NVML could not start"),
        (fake_pynvml([]), None, "no GPU is visible"),
        (fake_pynvml([30]), "", "no GPU is visible"),
        (fake_pynvml([30, 50], unsupported=(0, 1)), None, "MIG"),
    ],
)
def test_gpu_meter_says_why_it_cannot_measure(monkeypatch, nvml, visible, why):
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert GpuMeter.open() is None
    assert why in GpuMeter.why_not
    assert nvml.shutdowns == (0 if why == "NVML could not start" else 1)


def test_gpu_meter_skips_a_gpu_without_utilisation(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml([30, 50], unsupported=(0,)))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with GpuMeter.open() as meter:
        assert meter.sample() == pytest.approx(0.5)


def test_a_batch_trial_is_judged_only_after_the_old_games_play_out():
    """While old groups drain, throughput mixes both shapes (here it dips); the trial waits for the new shape."""
    drain = 75.0  # seconds the old groups take to finish their games, longer than an interval
    rate = {64: 3000.0, 128: 3300.0}  # batch 128 is 10 % better once alone
    tuner = Tuner(TuneConfig(interval=INTERVAL), sims=64, batch=64)
    changed, now, log = None, 0.0, []
    while now < 20 * INTERVAL:
        settling = changed is not None and now - changed < drain
        evals = 1500.0 if settling else rate.get(tuner.batch, 1000.0)
        for d in tuner.observe(Telemetry(100.0, evals, 360.0, 4.0, None, settling=settling), now):
            if d.knob == "batch":
                log.append((now, d))
                changed = now
        now += TICK
    first, second = log[0][1], log[1][1] if len(log) > 1 else None
    assert (first.old, first.new) == (64, 128)
    # Kept: the next batch decision builds on 128 (a trial of 256), not a revert to 64.
    assert second is not None and second.old == 128 and second.new == 256, [d for _, d in log]
    assert log[1][0] - log[0][0] >= drain + INTERVAL
