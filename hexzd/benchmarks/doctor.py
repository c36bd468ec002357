"""`hexzd doctor`: one command that checks a machine, a lent GPU above all, in about 8 minutes.

The steps, each but the first a `hexzd` or pytest command in a child process
with its own time budget (SIGINT at the budget less GRACE seconds, SIGKILL at
the budget), so that a step that hangs or fails is recorded (command, return
code, the last lines of its stderr) and the next one still runs:

    environment     torch, CUDA and its devices, torch_tensorrt, NVML (in this process)
    tests           the GPU tests: tests/nn/test_inference.py, test_net.py, test_selfplay.py
    bench-net       `hexzd bench net --json`: network evaluations/s on every backend
    bench-selfplay  `hexzd bench selfplay --json`: self-play evaluations/s on every backend
    daemon          `hexzd start --headless --for M` on a fresh state file, then read back:
                    games and evaluations, the backend self-play chose, GPU utilisation in
                    the first and the last minute (the tuner's work in between), the
                    tuner's decisions, warnings and errors

Every step's full output is kept in the output directory (STEP.out, STEP.err).
"""

import json
import os
import re
import shlex
import sys
import tempfile
import time
from pathlib import Path

from hexzd import processes

STEPS = ("environment", "tests", "bench-net", "bench-selfplay", "daemon")
# Seconds per child step; the daemon gets its minutes plus DAEMON_MARGIN. With the
# default 3 minutes: 90 + 60 + 90 + 180 + 45 = 465 s, under 8 minutes with the environment.
BUDGETS = {"tests": 90.0, "bench-net": 60.0, "bench-selfplay": 90.0}
DAEMON_MARGIN = 45.0  # the daemon's start (auto backend timing, workers) and clean stop
GRACE = 10.0  # between SIGINT and SIGKILL, inside the budget
TAIL = 12  # lines of stderr kept for a failed step
GPU_TESTS = ("tests/nn/test_inference.py", "tests/nn/test_net.py", "tests/train/test_selfplay.py")
BACKEND_EVENTS = ("inference backend", "now uses model")  # what says which backend self-play runs
METER_EVENTS = ("GPU meter",)  # why there is no utilisation, or that the meter stopped
GPU_BACKENDS = ("cuda", "tensorrt")


class NoGpu(RuntimeError):
    """`--gpu` on a machine where torch sees no CUDA device."""


def run(
    size: int = 9,
    minutes: float = 3.0,
    out: str | None = None,
    gpu: bool = False,
    skip=(),
    budgets: dict | None = None,
    selfplay_bench: str = "selfplay",
    echo=print,
) -> dict:
    """Runs the steps not in `skip`; the summary (see `text`). Raises NoGpu for `gpu` without CUDA."""
    where = Path(out) if out else Path(tempfile.mkdtemp(prefix="hexzd-doctor-"))
    where.mkdir(parents=True, exist_ok=True)
    budget = {**BUDGETS, "daemon": minutes * 60 + DAEMON_MARGIN, **(budgets or {})}
    planned = [s for s in STEPS if s not in skip]
    echo(
        f"hexzd doctor: {', '.join(planned)}; at most {sum(budget[s] for s in planned if s in budget):.0f} s "
        f"of child steps; output in {where}"
    )
    steps: dict[str, dict] = {}
    for name in STEPS:
        if name in skip:
            steps[name] = {"status": "skipped", "why": "asked to skip it"}
            continue
        echo(f"{name}: running" + (f" (budget {budget[name]:.0f} s)" if name in budget else ""))
        started = time.monotonic()
        try:
            if name == "environment":
                result = environment()
                if gpu and not result["cuda_available"]:
                    raise NoGpu(
                        f"--gpu: torch {result['torch']} sees no CUDA device (torch.cuda.is_available() is False"
                        f"{'; ' + result['cuda_error'] if result.get('cuda_error') else ''}"
                        f"; built for CUDA {result['cuda_version']})"
                    )
            elif name == "tests":
                result = tests(where, budget[name])
            elif name == "bench-net":
                result = bench_net(where, size, budget[name])
            elif name == "bench-selfplay":
                result = bench_selfplay(where, size, budget[name], selfplay_bench)
            else:
                result = daemon(where, size, minutes, budget[name], gpu)
        except NoGpu:
            raise
        except Exception as e:  # a bug or a broken install: recorded, and the next step runs
            result = {"status": "failed", "error": f"{type(e).__name__}: {e}"}
        result["seconds"] = round(time.monotonic() - started, 1)
        steps[name] = result
        echo(f"{name}: {result['status']} in {result['seconds']:.0f} s" + _why(result))
    return summarise(steps, size, minutes, where, gpu)


def _why(step: dict) -> str:
    return f": {step['error']}" if step.get("error") else ""


# -- the steps ---------------------------------------------------------------------


def environment() -> dict:
    """What this machine offers, each probe guarded: a missing piece is reported, not raised."""
    import torch

    env: dict = {
        "status": "ok",
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "cuda_version": torch.version.cuda,
        "cpus": os.cpu_count(),
    }
    try:
        env["cuda_available"] = bool(torch.cuda.is_available())
        env["devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except Exception as e:
        env["cuda_available"], env["devices"], env["cuda_error"] = False, [], f"{type(e).__name__}: {e}"
    try:
        import torch_tensorrt

        env["torch_tensorrt"] = torch_tensorrt.__version__
    except Exception as e:  # ImportError, or a build that does not match torch
        env["torch_tensorrt"] = None
        env["torch_tensorrt_error"] = f"{type(e).__name__}: {e}"
    try:
        import pynvml
    except ImportError:
        env["pynvml"], env["nvml_driver"] = False, None
        env["nvml_error"] = "the pynvml module is not installed (pip install 'hexzd[cuda]')"
    else:
        env["pynvml"] = True
        try:
            pynvml.nvmlInit()
            try:
                driver = pynvml.nvmlSystemGetDriverVersion()
                env["nvml_driver"] = driver.decode() if isinstance(driver, bytes) else driver
            finally:
                pynvml.nvmlShutdown()
        except Exception as e:  # no driver, no GPU
            env["nvml_driver"], env["nvml_error"] = None, f"{type(e).__name__}: {e}"
    return env


def repo_root() -> Path | None:
    """The repository this hexzd runs from, where it has its tests; None for an installed package."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / "tests").is_dir() else None


def tests(where: Path, budget: float) -> dict:
    root = repo_root()
    if root is None or not all((root / t).exists() for t in GPU_TESTS):
        return {"status": "skipped", "why": "tests not found (installed without the repo)"}
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-m", "not slow", *GPU_TESTS]
    done = child(command, budget, where / "tests", cwd=root)
    counts = pytest_counts(done["stdout"])
    step = {**_outcome(done), "counts": counts}
    failed = [line.split()[1] for line in done["stdout"].splitlines() if line.startswith(("FAILED ", "ERROR "))]
    if failed:
        step["failed_tests"] = failed
    if step["status"] == "ok" and not counts:
        step.update(status="failed", error="no pytest summary line")
    elif not done["timed_out"] and (counts.get("failed") or counts.get("error")):
        step["error"] = f"{counts.get('failed', 0)} failed, {counts.get('error', 0)} errors"
    return step


def pytest_counts(stdout: str) -> dict[str, int]:
    """{passed: 12, skipped: 3, ...} from pytest's last summary line, or {} without one."""
    for line in reversed(stdout.strip().splitlines()):
        found = re.findall(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed|deselected|warnings?)\b", line)
        if found and re.search(r"\bin [\d.]+s\b", line):
            counts = {word.rstrip("s") if word.startswith(("error", "warning")) else word: int(k) for k, word in found}
            return counts
    return {}


def bench_net(where: Path, size: int, budget: float) -> dict:
    command = [sys.executable, "-m", "hexzd", "bench", "net", "--size", str(size), "--seconds", "2", "--json"]
    done = child(command, budget, where / "bench-net")
    step, result = _json_outcome(done)
    if result is None:
        return step
    keys = ("hexzd", "hexzd_per_s", "baseline", "baseline_per_s", "ratio", "devices", "blocks", "channels")
    figures = {k: result[k] for k in keys if k in result}
    table = result.get("table") or []
    figures["backends"] = best_rows(table)
    figures["table"] = table
    return {**step, **figures}


def best_rows(table: list[dict]) -> dict[str, dict]:
    """The fastest row of each backend and precision: {"cuda bf16": {"batch": 1024, "evals_per_s": ...}}."""
    best: dict[str, dict] = {}
    for r in table:
        key = f"{r.get('backend', '?')} {r.get('precision', '?')}"
        if r.get("evals_per_s") is not None and r["evals_per_s"] > best.get(key, {}).get("evals_per_s", -1):
            best[key] = {"batch": r.get("batch"), "evals_per_s": r["evals_per_s"]}
    return best


def bench_selfplay(where: Path, size: int, budget: float, name: str = "selfplay") -> dict:
    command = [sys.executable, "-m", "hexzd", "bench", name, "--size", str(size), "--json"]
    done = child(command, budget, where / "bench-selfplay")
    step, result = _json_outcome(done)
    if result is None:
        if done["returncode"] == 2 and f"'{name}' is not one of" in done["stderr"]:
            step["error"] = f"this hexzd has no `bench {name}` (unknown benchmark)"
        return step
    rows = result.get("rows")
    # whatever the benchmark gives beside its rows is kept as it is
    return {**step, **{k: v for k, v in result.items() if k != "rows"}, "rows": rows if isinstance(rows, list) else []}


def daemon(where: Path, size: int, minutes: float, budget: float, gpu: bool = False) -> dict:
    """A real run on a fresh state file with the default config on an n x n board, then its figures."""
    import tomlkit

    from hexzd.config import default_toml

    config_path, db = where / f"doctor-{size}x{size}.toml", where / f"doctor-{size}x{size}.sqlite"
    for old in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
        old.unlink(missing_ok=True)  # a rerun into the same --out starts afresh
    config = tomlkit.parse(default_toml())
    config["game"]["board_size"] = size
    config_path.write_text(tomlkit.dumps(config))
    command = [sys.executable, "-m", "hexzd", "start", "--headless", "--config", str(config_path), "--db", str(db)]
    command += ["--for", f"{max(1, round(minutes * 60))}s"]
    done = child(command, budget, where / "daemon")
    step = {**_outcome(done), "db": str(db)}
    if not db.exists():
        step.update(status="failed", error=step.get("error") or "the daemon made no state file")
        return step
    step.update(read_run(db))
    if step["status"] == "ok" and not step["games"]:
        step.update(status="failed", error="the daemon stored no game")
    elif step["status"] == "ok" and step["errors"]:
        step.update(status="failed", error=f"{len(step['errors'])} error events in the state file")
    elif step["status"] == "ok" and gpu and step["backend"] and not step["backend"].startswith(GPU_BACKENDS):
        step.update(status="failed", error=f"--gpu, yet self-play runs on {step['backend']}")
    return step


def read_run(db: Path) -> dict:
    """A finished run's figures, read-only."""
    from hexzd import store
    from hexzd.store import reads

    with store.read_only(db) as c:
        counters = store.counters(c)
        best = store.best_model(c)
        span = reads.run_span(c)
        metrics = reads.metric_history(c, ["gpu_util", "evals_per_s"])
        tuning = reads.tuning_history(c)
        notes = reads.events_where(c, levels=("warning", "error"), containing=BACKEND_EVENTS + METER_EVENTS)
    gpu = [(m["at"], m["value"]) for m in metrics if m["name"] == "gpu_util"]
    rates = [(m["at"], m["value"]) for m in metrics if m["name"] == "evals_per_s"]
    backend_lines = [e["message"] for e in notes if any(t in e["message"] for t in BACKEND_EVENTS)]
    meter = [e["message"] for e in notes if any(t in e["message"] for t in METER_EVENTS)]
    wall = counters.get("wall_seconds", 0.0)
    first, last = first_and_last_minute(gpu, span["start"])
    return {
        "games": int(counters.get("games", 0)),
        "positions": int(counters.get("positions", 0)),
        "evals": int(counters.get("evals", 0)),
        "train_steps": int(counters.get("train_step", 0)),
        "best_model": best,
        "wall_seconds": round(wall, 1),
        "evals_per_s": counters.get("evals", 0.0) / wall if wall > 0 else None,
        "evals_per_s_last_minute": first_and_last_minute(rates, span["start"])[1],
        "backend": backend_of(backend_lines[-1]) if backend_lines else None,
        "backend_events": backend_lines,
        "gpu_util_first_minute": first,
        "gpu_util_last_minute": last,
        "gpu_samples": len(gpu),
        "gpu_meter": meter[-1] if meter else None,
        "tuning": [{k: d[k] for k in ("at", "knob", "old", "new", "reason")} for d in tuning],
        "warnings": [f"{e['source']}: {e['message']}" for e in notes if e["level"] == "warning"],
        "errors": [f"{e['source']}: {e['message']}" for e in notes if e["level"] == "error"],
    }


def backend_of(message: str) -> str | None:
    """'cuda bf16' from "self-play now uses model 3 (cuda bf16: fastest ...)"; None where it names none."""
    found = re.search(r"\b(?:eager|cpu|cuda|mps|tensorrt) (?:fp32|fp16|bf16|int8)\b", message)
    return found.group(0) if found else None


def first_and_last_minute(samples: list[tuple[float, float]], start: float | None) -> tuple:
    """Mean of the samples in the run's first minute and in its last (from the last sample back);
    (None, None) without samples. On a run of under two minutes the two overlap."""
    if not samples:
        return None, None
    start = samples[0][0] if start is None else min(start, samples[0][0])
    end = samples[-1][0]
    first = [v for at, v in samples if at <= start + 60]
    last = [v for at, v in samples if at >= end - 60]
    mean = lambda xs: sum(xs) / len(xs) if xs else None  # noqa: E731
    return mean(first), mean(last)


# -- children ------------------------------------------------------------------------


def child(command: list[str], budget: float, log: Path, cwd: Path | None = None) -> dict:
    """Runs a command in a session of its own for at most `budget` seconds: SIGINT at
    budget - GRACE, SIGKILL at the budget. Its stdout and stderr are kept in LOG.out and LOG.err."""
    out, err = log.with_suffix(".out"), log.with_suffix(".err")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with out.open("w") as stdout, err.open("w") as stderr:
        code, timed_out = processes.run(command, budget, GRACE, stdout=stdout, stderr=stderr, cwd=cwd, env=env)
    return {
        "command": shlex.join(_short(a) for a in command),
        "returncode": code,
        "timed_out": timed_out,
        "budget": budget,
        "stdout": out.read_text(errors="replace"),
        "stderr": err.read_text(errors="replace"),
    }


def _short(arg: str) -> str:
    return "python" if arg == sys.executable else arg


def _outcome(done: dict) -> dict:
    """ok, or failed with the command, its return code and the last lines of its stderr."""
    step = {"status": "ok", "command": done["command"], "returncode": done["returncode"]}
    if done["timed_out"]:
        step.update(status="failed", error=f"timed out after its budget of {done['budget']:.0f} s")
    elif done["returncode"] != 0:
        step.update(status="failed", error=f"exit code {done['returncode']}")
    if step["status"] == "failed":
        step["stderr_tail"] = done["stderr"].strip().splitlines()[-TAIL:]
    return step


def _json_outcome(done: dict) -> tuple[dict, dict | None]:
    """(the step's outcome, the JSON object its `--json` command printed last); None,
    and the step failed, where the command failed or printed none."""
    step = _outcome(done)
    if step["status"] != "ok":
        return step, None
    try:
        return step, last_json(done["stdout"])
    except ValueError as e:
        return {**step, "status": "failed", "error": str(e)}, None


def last_json(stdout: str) -> dict:
    """The JSON object a `--json` command printed last."""
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                break
    raise ValueError("no JSON object on stdout")


# -- the summary ---------------------------------------------------------------------


def summarise(steps: dict, size: int, minutes: float, where: Path, gpu: bool) -> dict:
    net, selfplay, run_ = steps.get("bench-net", {}), steps.get("bench-selfplay", {}), steps.get("daemon", {})
    errors = [f"{name}: {s['error']}" for name, s in steps.items() if s.get("status") == "failed" and s.get("error")]
    errors += [f"daemon event: {e}" for e in run_.get("errors", [])]
    if run_.get("backend_events"):
        backend = f"{run_.get('backend') or run_['backend_events'][-1]} (self-play in the daemon run)"
    elif net.get("hexzd"):
        rollouts = "; the daemon run promoted no model and played random rollouts" if "games" in run_ else ""
        backend = f"{net['hexzd']} (fastest in bench net{rollouts})"
    elif "games" in run_:
        backend = "random rollouts (the daemon run promoted no model)"
    else:
        backend = None
    return {
        "ok": not any(s.get("status") == "failed" for s in steps.values()),
        "gpu": gpu,
        "size": size,
        "minutes": minutes,
        "out": str(where),
        "steps": steps,
        "backend": backend,
        "evals_per_s": {
            "bench_net_best": net.get("hexzd_per_s"),
            "bench_selfplay": [
                {k: r.get(k) for k in ("backend", "precision", "blocks", "channels", "batch", "evals_per_s")}
                for r in selfplay.get("rows") or []
                if isinstance(r, dict)
            ],
            "daemon": run_.get("evals_per_s") if run_.get("best_model") else None,
        },
        "gpu_util": {
            "first_minute": run_.get("gpu_util_first_minute"),
            "last_minute": run_.get("gpu_util_last_minute"),
        },
        "errors": errors,
    }


def text(summary: dict) -> str:
    """The summary as one block of lines."""
    steps = summary["steps"]
    lines = [f"hexzd doctor: {summary['size']}x{summary['size']}, output in {summary['out']}"]
    for name in STEPS:
        s = steps.get(name, {"status": "skipped"})
        figures = _step_line(name, s) if s["status"] != "skipped" else s.get("why", "")
        seconds = f" {s['seconds']:5.0f} s" if "seconds" in s else " " * 7
        lines.append(f"  {name:<15}{s['status']:<8}{seconds}  {figures}".rstrip())
    rates = summary["evals_per_s"]
    selfplay = ", ".join(_selfplay_row(r) for r in rates["bench_selfplay"])
    run_ = steps.get("daemon", {})
    rollouts = " (random rollouts: no model promoted)" if "games" in run_ and not run_["best_model"] else ""
    lines += [
        f"backend chosen: {summary['backend'] or '-'}",
        f"evals/s: bench net best {_rate(rates['bench_net_best'])}; bench selfplay {selfplay or '-'}; "
        f"daemon {_rate(rates['daemon'])}{rollouts}",
        f"GPU utilisation first minute -> last minute: {_gpu_line(summary, steps.get('daemon', {}))}",
        "errors: " + ("none" if not summary["errors"] else f"{len(summary['errors'])}"),
    ]
    lines += [f"  {e}" for e in summary["errors"]]
    lines += [f"  tests: {t} failed" for t in steps.get("tests", {}).get("failed_tests", [])]
    for name, s in steps.items():
        if s.get("status") == "failed" and (s.get("command") or s.get("stderr_tail")):
            lines.append(f"  {name}: `{s.get('command')}` returned {s.get('returncode')}")
            lines += [f"    | {line}" for line in s.get("stderr_tail", [])]
    lines.append("doctor: all steps passed" if summary["ok"] else "doctor: FAILED")
    return "\n".join(lines)


def _step_line(name: str, s: dict) -> str:
    if name == "environment":
        if "torch" not in s:
            return s.get("error", "")
        devices = ", ".join(s.get("devices") or []) or "no CUDA device"
        trt = s.get("torch_tensorrt") or "no torch_tensorrt"
        nvml = f"NVML driver {s['nvml_driver']}" if s.get("nvml_driver") else "no NVML"
        return f"torch {s['torch']} (CUDA {s.get('cuda_version')}), {devices}; {trt}; {nvml}"
    if name == "tests":
        counts = s.get("counts") or {}
        return ", ".join(f"{k} {v}" for k, v in counts.items()) or s.get("error", "")
    if name == "bench-net" and "hexzd" in s:
        ratio = f"{s['ratio']:.2f}x" if isinstance(s.get("ratio"), int | float) else "?"
        per_backend = ", ".join(f"{k} {_rate(v['evals_per_s'])}" for k, v in s.get("backends", {}).items())
        return (
            f"best {s['hexzd']}: {_rate(s.get('hexzd_per_s'))}, {ratio} {s.get('baseline')} "
            f"({_rate(s.get('baseline_per_s'))}); per backend: {per_backend}"
        )
    if name == "bench-selfplay" and s["status"] == "ok":
        rows = "; ".join(_selfplay_row(r) for r in s.get("rows") or [] if isinstance(r, dict)) or "no rows"
        zero, threads, hops = s.get("zero_cost_per_core"), s.get("threads") or {}, s.get("hop_us") or {}
        line = rows + (f"; search alone {_rate(zero)} sims/s a core" if zero is not None else "")
        if isinstance(threads.get("serial"), int | float):
            line += f", {threads['serial']:.0%} of it holding the GIL"
        if {"thread", "process"} <= hops.keys():  # the service's design, measured on this machine
            thread, process = hops["thread"]["cpu_us"], hops["process"]["cpu_us"]
            line += f"; a request's hop {thread:,.0f} us CPU (to a process: {process:,.0f})"
        return line
    if name == "daemon" and "games" in s:
        evals = f"{s['evals']:,} evals ({_rate(s['evals_per_s'])}/s)" if s["best_model"] else "random rollouts"
        best = f"best model {s['best_model']}" if s["best_model"] else "no promotion"
        return (
            f"{s['games']:,} games, {evals}, {best}, "
            f"{s['train_steps']:,} train steps, {len(s['tuning'])} tuner decisions, "
            f"{len(s['warnings'])} warnings, {len(s['errors'])} errors"
        )
    return s.get("error", "")


def _selfplay_row(r: dict) -> str:
    shape = f" {r['blocks']}x{r['channels']}" if r.get("blocks") and r.get("channels") else ""
    share = r.get("of_synthetic")
    share = f" ({share:.0%} of synthetic)" if isinstance(share, int | float) else ""
    return (
        f"{r.get('backend')} {r.get('precision')}{shape} batch {r.get('batch')}: {_rate(r.get('evals_per_s'))}{share}"
    )


def _gpu_line(summary: dict, daemon: dict) -> str:
    first, last = summary["gpu_util"]["first_minute"], summary["gpu_util"]["last_minute"]
    if first is None:
        return daemon.get("gpu_meter") or ("no daemon run" if "games" not in daemon else "no GPU samples")
    decisions = len(daemon.get("tuning", []))
    return f"{first:.0%} -> {last:.0%} ({daemon.get('gpu_samples', 0)} samples, {decisions} tuner decisions)"


def _rate(x) -> str:
    if not isinstance(x, int | float):
        return "-"
    for scale, unit in ((1e6, "M"), (1e3, "k")):
        if x >= scale:
            return f"{x / scale:.1f}{unit}"
    return f"{x:.0f}"
