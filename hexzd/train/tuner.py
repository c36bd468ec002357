"""The auto-tuner: moves `selfplay.sims` and `selfplay.batch` within `[tune]`'s bounds.

Pure logic: no sockets, no state file. The daemon builds one `Tuner`, calls
`observe(telemetry, now)` on every tick, applies each returned `Decision` to the
self-play workers and records it in the `tuning(at, knob, old, new, reason)`
table. A config edit goes through `configure()`.

Measurement
-----------
Each `observe()` call reports rates over the span since the previous call. The
tuner keeps a time-weighted mean of those spans in a *window*, and it decides
only when the window is at least `tune.interval` seconds long and lies entirely
after the last change, so that a rate measured with the old settings never
judges the new ones. The window restarts after every change of either knob,
after every `configure()` (an edit of, say, `selfplay.workers` changes every
rate too), when the first network appears (`evals_per_s` becomes positive) and
when the trainer takes its first step (`samples_per_s` becomes positive): a
window that mixes "before" and "after" would mislead both rules. It also
restarts after each check that changed nothing, so a decision always rests on
the latest interval. The first observation after a start or an edit only sets
the clock. Hence each knob changes at most once per `tune.interval`.

Throughput is what the workers' inference services evaluated in the span,
not what finished games had spent: a game credits its evaluations only when
it ends, so the interval after a change would under-count. A new batch size
does not discard games: self-play plays the old groups out beside the new
ones, and while any do (`settling`) the window keeps restarting, so that a
trial is judged on an interval of the new shape alone.

sims: balance data generation against training
----------------------------------------------
The trainer is paced to train on each self-play position `train.reuse` times on
average. `ratio = samples_per_s / (reuse * positions_per_s)` is the share of
the self-play output it can use at that target:

- ratio < 0.8: self-play makes more positions than the trainer can use. The
  surplus is wasted compute, so spend it on a deeper search: sims x 1.25. More
  simulations per move give sharper policy targets and fewer, better positions.
- ratio > 0.95 and the trainer waited for data at least 10 % of the span
  (`trainer_waiting`, which the trainer reports): it is starved. Fewer sims
  (/ 1.25) feed it faster; a GPU that waits for self-play is wasted.
  A trainer that trains faster than self-play produces yet never waits is
  working through a backlog (typically the flood of fast rollout games before
  the first network): the ratio says nothing about the balance to come, so
  hold. `trainer_waiting` None (not reported) skips this check.
- in between: hold.

A span without self-play (`positions_per_s == 0`) or without training
(`samples_per_s == 0`: the trainer has not reached `train.min_positions` yet,
or is paused) says nothing about the balance: hold.

The steps are multiplicative. A move that reverses the previous one shrinks the
step to its square root (1.25, 1.118, 1.057, down to 1.05), and two moves the
same way grow it back (squared, up to 1.25). The band [0.8, 0.95] spans a
factor 1.19, less than 1.25, so a fixed step could jump over it for ever; after
one reversal the step is smaller than the band and the ratio settles in it.
A step always moves sims by at least one, and never beyond the bounds.

batch: games per group, which is the inference batch
----------------------------------------------------
Only once a network exists (`evals_per_s > 0`): rollouts before it need no
batch. Every move of the batch is a *trial*: the evals/s measured over the
interval after the move is compared with the interval before it. A trial that
did not raise evals/s by at least 5 % is reverted at once, and the batch then
holds for 10 intervals. The hold doubles each time a trial fails again (10, 20,
40, ... up to 320 intervals) and drops back to 10 after a trial that succeeds,
so a tuner that has found its optimum probes it ever more rarely instead of
oscillating for ever, yet still notices when the machine changes.

- With a GPU meter (`gpu_util` not None): while utilisation is below
  `gpu_target - 0.05`, double the batch (up to `batch_max`): a larger batch
  keeps the accelerator busier. At or above that, hold; above
  `gpu_target + 0.05` the batch is not shrunk for utilisation alone, since
  shrinking would lower throughput and utilisation is the accelerator's
  business, not a cost. A busy GPU is the goal.
- Without a GPU meter (`gpu_util` None, e.g. CPU inference): hill-climb
  evals/s. Try doubling; keep it while evals/s rises by 5 %; on a failed trial
  revert, hold, then try halving in the same fashion (and after a failed
  halving, doubling again), so it can find an optimum below the start too.
  Reaching a bound counts as a failed trial without a change. A start at
  `batch_max` tries halving first.

While a batch trial is pending, sims hold, so that the trial's comparison is
not blurred by a change of search depth; sims move freely during the holds.

Config edits
------------
`configure(tune, sims, batch)` takes the config file's `selfplay.sims` and
`selfplay.batch`. A value that differs from the one the tuner last saw in the
file is a user's edit: it becomes the current value at once (clamped to the
bounds), and that knob's exploration state resets (trial, holds, step size).
A value unchanged in the file leaves the tuned value in place, clamped to the
new bounds. With `enabled = false` the file's values rule, unclamped, and
`observe()` returns []. Changes that `__init__` or `configure()` make by
clamping are reported as decisions by the next `observe()` call, so the daemon
records every change from one place; `tuner.sims` and `tuner.batch` hold the
clamped values at once.

GPU meter
---------
`GpuMeter.open()` returns None when it cannot measure, and leaves the reason in
`GpuMeter.why_not` (a class attribute, set on every `open()`), e.g. to log as
an event: the pynvml module (package nvidia-ml-py, the `cuda` extra) is
missing, NVML cannot start (no driver), no GPU is visible, or no visible GPU
reports utilisation (MIG instances do not).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from hexzd.config import TuneConfig

RATIO_LOW = 0.8  # below: the trainer cannot use all the data; more sims
RATIO_HIGH = 0.95  # above, with the trainer waiting for data: fewer sims
WAITING_MIN = 0.1  # the share of time a trainer must wait for data to count as starved
SIMS_STEP = 1.25  # the largest factor one sims decision moves by
SIMS_STEP_MIN = 1.05  # the smallest, after repeated reversals
GPU_BAND = 0.05  # utilisation within gpu_target -/+ this counts as on target
MIN_GAIN = 0.05  # a batch trial must raise evals/s by this share to be kept
HOLD_INTERVALS = 10  # intervals without batch trials after a failed one
MAX_BACKOFF = 32  # the hold doubles per further failure, up to this factor


@dataclass(frozen=True)
class Telemetry:
    positions_per_s: float  # self-play positions produced per second over the last span
    evals_per_s: float  # self-play network evaluations per second (0 before the first network exists)
    samples_per_s: float  # positions the trainer trained on per second (steps/s * batch_size)
    reuse: float  # the train.reuse target
    gpu_util: float | None  # the least busy accelerator's mean utilisation 0..1 over the span; None: no meter
    trainer_waiting: float | None = None  # share of the span the trainer waited for data; None: not reported
    settling: bool = False  # games of an older batch shape still play out: the rates mix both shapes


@dataclass(frozen=True)
class Decision:
    knob: str  # "sims" or "batch"
    old: int
    new: int
    reason: str  # one line a user understands, with the numbers that drove it


class _Window:
    """Time-weighted means of the telemetry over the spans since it started."""

    def __init__(self):
        self.seconds = 0.0
        self.positions = self.evals = self.samples = self.reuse = 0.0
        self.gpu = self.gpu_seconds = 0.0
        self.waiting = self.waiting_seconds = 0.0

    def add(self, t: Telemetry, dt: float) -> None:
        self.seconds += dt
        self.positions += t.positions_per_s * dt
        self.evals += t.evals_per_s * dt
        self.samples += t.samples_per_s * dt
        self.reuse += t.reuse * dt
        if t.gpu_util is not None:
            self.gpu += t.gpu_util * dt
            self.gpu_seconds += dt
        if t.trainer_waiting is not None:
            self.waiting += t.trainer_waiting * dt
            self.waiting_seconds += dt

    def mean(self) -> Telemetry:
        s = self.seconds
        gpu = self.gpu / self.gpu_seconds if self.gpu_seconds > 0 else None
        waiting = self.waiting / self.waiting_seconds if self.waiting_seconds > 0 else None
        return Telemetry(self.positions / s, self.evals / s, self.samples / s, self.reuse / s, gpu, waiting)


def _usable(t: Telemetry) -> bool:
    rates = (t.positions_per_s, t.evals_per_s, t.samples_per_s, t.reuse)
    if not all(math.isfinite(x) and x >= 0 for x in rates):
        return False
    return all(x is None or (math.isfinite(x) and x >= 0) for x in (t.gpu_util, t.trainer_waiting))


def _clamp(value: int, lo: int, hi: int) -> int:
    return max(lo, min(hi, value))


class Tuner:
    """Moves `sims` and `batch` within `[tune]`'s bounds; see the module docstring."""

    def __init__(self, tune: TuneConfig, sims: int, batch: int):
        self.tune = tune
        self.sims = sims
        self.batch = batch
        self._file_sims = sims  # the values the config file last said
        self._file_batch = batch
        self._queued: list[Decision] = []  # clamps, reported by the next observe()
        self._prev_now: float | None = None
        self._window = _Window()
        self._anchor: float | None = None  # when the current window started; None: at the next observe()
        self._net_seen = False
        self._train_seen = False
        self._reset_sims()
        self._reset_batch()
        if tune.enabled:
            self._clamp_both(sims, batch, "start")

    # --- config -------------------------------------------------------------

    def configure(self, tune: TuneConfig, sims: int, batch: int) -> None:
        """A config edit: new bounds, and the file's `selfplay.sims` / `selfplay.batch`."""
        was_enabled = self.tune.enabled
        self.tune = tune
        user_sims = sims != self._file_sims or not was_enabled
        user_batch = batch != self._file_batch or not was_enabled
        self._file_sims, self._file_batch = sims, batch
        self._anchor = None  # every rate may have changed: measure afresh
        self._trial = None  # its baseline was measured under the old config
        if not tune.enabled:
            self._queued = []
            self.sims, self.batch = sims, batch
            self._reset_sims()
            self._reset_batch()
            return
        if user_sims:
            self._unqueue("sims")
            self.sims = sims
            self._reset_sims()
        if user_batch:
            self._unqueue("batch")
            self.batch = batch
            self._reset_batch()
        self._clamp_both(self.sims, self.batch, "config edit")

    def _clamp_both(self, sims: int, batch: int, why: str) -> None:
        t = self.tune
        for knob, value, lo, hi, name, reset in (
            ("sims", sims, t.sims_min, t.sims_max, "sims", self._reset_sims),
            ("batch", batch, t.batch_min, t.batch_max, "games per group", self._reset_batch),
        ):
            new = _clamp(value, lo, hi)
            if new != value:
                self._queue(
                    Decision(
                        knob,
                        value,
                        new,
                        f"{why}: {name} {value} lies outside the tuner's bounds [{lo}, {hi}]: set to {new}",
                    )
                )
                setattr(self, knob, new)
                reset()

    def _queue(self, d: Decision) -> None:
        """Queue a clamp; one still queued for the same knob merges with it."""
        earlier = next((q for q in self._queued if q.knob == d.knob), None)
        if earlier is not None:
            self._queued.remove(earlier)
            d = Decision(d.knob, earlier.old, d.new, d.reason)
        if d.old != d.new:
            self._queued.append(d)

    def _unqueue(self, knob: str) -> None:
        """A user's edit supersedes a clamp not yet reported."""
        self._queued = [q for q in self._queued if q.knob != knob]

    def _reset_sims(self) -> None:
        self._sims_step = SIMS_STEP
        self._sims_dir = 0  # +1 / -1: the direction of the last move

    def _reset_batch(self) -> None:
        self._trial: tuple[int, float] | None = None  # (batch before the trial, its evals/s)
        self._fails = 0  # failed trials in a row
        self._hold_until = -math.inf
        self._dir = -1 if self.batch >= self.tune.batch_max else 1  # hill-climb direction without a GPU

    # --- decisions ----------------------------------------------------------

    def observe(self, t: Telemetry, now: float) -> list[Decision]:
        """One tick's telemetry, measured over the span since the previous call."""
        prev, self._prev_now = self._prev_now, now
        if not self.tune.enabled:
            return []
        out, self._queued = self._queued, []
        if not _usable(t):
            return out
        started = (t.evals_per_s > 0 and not self._net_seen) or (t.samples_per_s > 0 and not self._train_seen)
        self._net_seen |= t.evals_per_s > 0
        self._train_seen |= t.samples_per_s > 0
        if self._anchor is None or prev is None or started or t.settling:
            self._restart(now)  # this span may straddle a change: only start the clock
            return out
        if now <= prev:
            return out
        self._window.add(t, now - prev)
        if now - self._anchor < self.tune.interval:
            return out
        m = self._window.mean()
        decisions = []
        if (d := self._batch_rule(m, now)) is not None:
            decisions.append(d)
        if self._trial is None and (d := self._sims_rule(m)) is not None:
            decisions.append(d)
        for d in decisions:
            setattr(self, d.knob, d.new)
        self._restart(now)
        return out + decisions

    def _restart(self, now: float) -> None:
        self._window = _Window()
        self._anchor = now

    def _sims_rule(self, m: Telemetry) -> Decision | None:
        if m.positions_per_s <= 0 or m.samples_per_s <= 0 or m.reuse <= 0:
            return None  # no self-play or no training yet: no signal
        ratio = m.samples_per_s / (m.reuse * m.positions_per_s)
        if ratio < RATIO_LOW:
            direction, verdict = 1, f"under {RATIO_LOW}: more search per move"
        elif ratio > RATIO_HIGH:
            if m.trainer_waiting is not None and m.trainer_waiting < WAITING_MIN:
                return None  # busy on a backlog, not starved
            waited = "" if m.trainer_waiting is None else f" {m.trainer_waiting:.0%} of the time"
            direction, verdict = (
                -1,
                (f"over {RATIO_HIGH}, it waits for data{waited}: less search per move to feed it faster"),
            )
        else:
            return None
        step = self._sims_step
        if self._sims_dir == -direction:
            step = max(SIMS_STEP_MIN, math.sqrt(step))
        elif self._sims_dir == direction:
            step = min(SIMS_STEP, step * step)
        old = self.sims
        new = max(old + 1, round(old * step)) if direction > 0 else min(old - 1, round(old / step))
        new = _clamp(new, self.tune.sims_min, self.tune.sims_max)
        if new == old:
            return None  # at a bound
        self._sims_step, self._sims_dir = step, direction
        reason = (
            f"trainer uses {ratio:.2f} of the data at reuse {m.reuse:g} "
            f"({m.samples_per_s:.0f} samples/s vs {m.positions_per_s:.0f} positions/s): "
            f"{verdict}, sims {old} -> {new}"
        )
        return Decision("sims", old, new, reason)

    def _batch_rule(self, m: Telemetry, now: float) -> Decision | None:
        if m.evals_per_s <= 0:
            return None  # no network yet, or a span without inference
        note = ""
        if self._trial is not None:
            before, base = self._trial
            self._trial = None
            gain = m.evals_per_s / base - 1
            if gain < MIN_GAIN:
                n = self._hold(now)
                self._dir = 1 if before > self.batch else -1  # next time, try the other way
                what = "raise" if m.gpu_util is not None else "trial"
                reason = (
                    f"batch {self.batch} gave {m.evals_per_s:.0f} evals/s vs {base:.0f} at batch {before} "
                    f"({gain:+.1%}, under +{MIN_GAIN:.0%}): back to {before}, "
                    f"no {what} for {n} intervals ({n * self.tune.interval:.0f} s)"
                )
                return Decision("batch", self.batch, before, reason)
            self._fails = 0
            note = (
                f"batch {self.batch} raised evals/s {gain:+.0%} over batch {before} "
                f"({base:.0f} -> {m.evals_per_s:.0f}); "
            )
        if now < self._hold_until:
            return None
        lo, hi = self.tune.batch_min, self.tune.batch_max
        old = self.batch
        if m.gpu_util is not None:
            floor = self.tune.gpu_target - GPU_BAND
            new = _clamp(old * 2, lo, hi)
            if m.gpu_util >= floor or new <= old:
                return None  # busy enough (never shrink for utilisation), or at batch_max
            reason = (
                f"{note}GPU busy {m.gpu_util:.0%}, under the {self.tune.gpu_target:.0%} target less "
                f"{GPU_BAND * 100:.0f} points, at batch {old} ({m.evals_per_s:.0f} evals/s): "
                f"doubling the inference batch to {new}"
            )
        else:
            new = _clamp(old * 2 if self._dir > 0 else old // 2, lo, hi)
            if new == old:  # at a bound: as good as a failed trial, without a change
                self._hold(now)
                self._dir = -self._dir
                return None
            reason = (
                f"{note}no GPU meter, hill-climbing evals/s ({m.evals_per_s:.0f} at batch {old}): trying batch {new}"
            )
        self._trial = (old, m.evals_per_s)
        return Decision("batch", old, new, reason)

    def _hold(self, now: float) -> int:
        """A failed trial: no batch trials for 10 intervals, doubled per failure in a row (capped)."""
        self._fails += 1
        n = HOLD_INTERVALS * min(2 ** (self._fails - 1), MAX_BACKOFF)
        self._hold_until = now + n * self.tune.interval
        return n


class GpuMeter:
    """Utilisation of the least busy GPU this process can see, through NVML (the nvidia-ml-py package, module pynvml).

    The least busy, not the mean: every GPU's workers share one batch size, so
    the idlest GPU decides whether a larger batch pays. A mean of 95% and 45%
    reads 70% and would hide a half-idle accelerator.

    Visible means CUDA_VISIBLE_DEVICES (indices, or UUIDs and their unique
    prefixes; the list ends at its first invalid entry, as for CUDA) or, unset,
    every GPU. NVML numbers GPUs in PCI bus order, which is CUDA's order under
    CUDA_DEVICE_ORDER=PCI_BUS_ID. NVML's figure covers its last sample period
    (1/6 s to 1 s), so sample often and average with `take_mean()`.
    """

    why_not: str = ""  # why the last open() returned None; "" after one that succeeded

    def __init__(self, nvml, handles: list):
        self._nvml = nvml
        self._handles = handles
        self._sum = 0.0
        self._count = 0

    @classmethod
    def open(cls) -> GpuMeter | None:
        """A meter, or None with the reason in `GpuMeter.why_not`."""
        try:
            import pynvml
        except ImportError:
            cls.why_not = (
                "no GPU meter: the pynvml module is not installed (package nvidia-ml-py: pip install 'hexzd[cuda]')"
            )
            return None
        try:
            pynvml.nvmlInit()
        except Exception as e:  # NVMLError_LibraryNotFound, _DriverNotLoaded, ...
            cls.why_not = f"no GPU meter: NVML could not start, no NVIDIA driver? ({type(e).__name__}: {e})"
            return None
        try:
            handles = cls._visible(pynvml)
            working = []
            for h in handles:
                try:
                    pynvml.nvmlDeviceGetUtilizationRates(h)
                    working.append(h)
                except Exception:
                    pass
        except Exception as e:
            pynvml.nvmlShutdown()
            cls.why_not = f"no GPU meter: NVML could not list the GPUs ({type(e).__name__}: {e})"
            return None
        if not working:
            pynvml.nvmlShutdown()
            cls.why_not = (
                "no GPU meter: no GPU is visible"
                if not handles
                else f"no GPU meter: none of the {len(handles)} visible GPUs reports utilisation "
                "(a MIG instance does not)"
            )
            return None
        cls.why_not = ""
        return cls(pynvml, working)

    @staticmethod
    def _visible(nvml) -> list:
        count = nvml.nvmlDeviceGetCount()
        every = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
        env = os.environ.get("CUDA_VISIBLE_DEVICES")
        if env is None:
            return every
        handles = []
        for item in (s.strip() for s in env.split(",")):
            if item.isdigit() and int(item) < count:
                handles.append(every[int(item)])
                continue
            uuids = [nvml.nvmlDeviceGetUUID(h) for h in every] if item else []
            uuids = [u.decode() if isinstance(u, bytes) else u for u in uuids]
            match = [h for h, u in zip(every, uuids) if u.startswith(item)]
            if len(match) != 1:
                break  # CUDA ignores this entry and every one after it
            handles.append(match[0])
        return handles

    def sample(self) -> float:
        """Utilisation 0..1 now: the lowest over the visible GPUs that answer.

        Raises RuntimeError when none answers (a GPU lost from the bus).
        """
        values = []
        for h in self._handles:
            try:
                values.append(self._nvml.nvmlDeviceGetUtilizationRates(h).gpu / 100)
            except Exception:
                pass
        if not values:
            raise RuntimeError(f"NVML gave no utilisation for any of {len(self._handles)} GPUs")
        value = min(values)
        self._sum += value
        self._count += 1
        return value

    def devices(self) -> list[dict]:
        """Each visible GPU now: name, utilisation 0..1, memory (bytes), power (watts); None where NVML has nothing."""
        nvml, out = self._nvml, []
        for index, h in enumerate(self._handles):
            device = dict.fromkeys(("name", "util", "memory_used", "memory_total", "watts"), None) | {"index": index}
            for key, read in (
                ("name", lambda h=h: nvml.nvmlDeviceGetName(h)),
                ("util", lambda h=h: nvml.nvmlDeviceGetUtilizationRates(h).gpu / 100),
                ("memory_used", lambda h=h: nvml.nvmlDeviceGetMemoryInfo(h).used),
                ("memory_total", lambda h=h: nvml.nvmlDeviceGetMemoryInfo(h).total),
                ("watts", lambda h=h: nvml.nvmlDeviceGetPowerUsage(h) / 1000),  # NVML gives milliwatts
            ):
                try:
                    device[key] = read()
                except Exception:  # an older GPU or driver lacks some readings: shown as missing
                    pass
            if isinstance(device["name"], bytes):
                device["name"] = device["name"].decode()
            out.append(device)
        return out

    def take_mean(self) -> float | None:
        """The mean of the `sample()` readings since the last call (None if there were none)."""
        if self._count == 0:
            return None
        mean = self._sum / self._count
        self._sum, self._count = 0.0, 0
        return mean

    def close(self) -> None:
        if self._nvml is not None:
            nvml, self._nvml = self._nvml, None
            nvml.nvmlShutdown()

    def __enter__(self) -> GpuMeter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
