"""`hexzd doctor` on this machine: every step reported, a failing step does not stop the others."""

import json
import sys
import time

import pytest
import torch
from click.testing import CliRunner

from hexzd.benchmarks import doctor
from hexzd.cli import main

pytestmark = pytest.mark.e2e  # daemons and processes: `pytest -m e2e`


@pytest.fixture(scope="module")
def checked(tmp_path_factory):
    """A doctor run without the slow steps, its self-play benchmark one this hexzd does not have."""
    out = tmp_path_factory.mktemp("doctor")
    args = ["doctor", "--minutes", "0.3", "--size", "3", "--json", "--out", str(out)]
    result = CliRunner().invoke(main, [*args, "--skip", "tests,bench-net", "--selfplay-bench", "no-such-bench"])
    return result, out


@pytest.mark.timeout(120)
def test_each_step_has_a_status_and_a_failed_step_does_not_stop_the_rest(checked):
    result, out = checked
    assert result.exit_code == 1, result.output  # a step failed
    summary = json.loads(result.stdout)
    steps = summary["steps"]
    assert list(steps) == list(doctor.STEPS) and not summary["ok"]
    assert {name: s["status"] for name, s in steps.items()} == {
        "environment": "ok",
        "tests": "skipped",
        "bench-net": "skipped",
        "bench-selfplay": "failed",
        "daemon": "ok",
    }
    env = steps["environment"]
    assert env["torch"] == torch.__version__ and env["cuda_available"] == torch.cuda.is_available()
    assert {"devices", "torch_tensorrt", "pynvml", "nvml_driver"} <= set(env)

    failed = steps["bench-selfplay"]
    assert failed["command"] == "python -m hexzd bench no-such-bench --size 3 --json"
    assert failed["returncode"] == 2 and "unknown benchmark" in failed["error"]
    assert any("no-such-bench" in line for line in failed["stderr_tail"])
    assert summary["errors"] == [f"bench-selfplay: {failed['error']}"]

    run = steps["daemon"]  # ran after the failure, and read back from its state file
    assert run["games"] > 0 and run["wall_seconds"] > 10 and (out / "doctor-3x3.sqlite").exists()
    assert (out / "daemon.out").read_text() and run["errors"] == []
    if run["gpu_util_first_minute"] is None:
        assert "GPU meter" in run["gpu_meter"]  # the daemon said why it has no utilisation
    progress = result.stderr.splitlines()  # what a watcher sees while it runs
    assert progress[0].startswith("hexzd doctor: environment, bench-selfplay, daemon; at most ")
    assert {"environment: running", "daemon: running (budget 63 s)"} <= set(progress)


def test_the_summary_reads_as_one_block(checked):
    summary = json.loads(checked[0].stdout)
    lines = doctor.text(summary).splitlines()
    for name in doctor.STEPS:
        [line] = [x for x in lines if x.strip().startswith(name + " ")]
        assert summary["steps"][name]["status"] in line
    for start in ("backend chosen: ", "evals/s: bench net best ", "GPU utilisation first minute -> last minute: "):
        assert any(x.startswith(start) for x in lines), start
    assert "errors: 1" in lines and lines[-1] == "doctor: FAILED"
    assert any("no-such-bench" in x and "returned 2" in x for x in lines)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_gpu_without_cuda_fails_at_once(tmp_path):
    started = time.monotonic()
    result = CliRunner().invoke(main, ["doctor", "--gpu", "--minutes", "0.1", "--size", "3", "--out", str(tmp_path)])
    assert result.exit_code == 1 and "--gpu: torch" in result.output and "sees no CUDA device" in result.output
    assert time.monotonic() - started < 30 and not list(tmp_path.glob("*.out")), "no step ran after the check"


def test_the_tests_step_counts_passes_failures_and_skips(tmp_path, monkeypatch):
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_a.py").write_text(
        "import pytest\n"
        "def test_ok(): pass\n"
        "def test_bad(): assert False\n"
        "@pytest.mark.skip(reason='no GPU')\n"
        "def test_gpu(): pass\n"
    )
    monkeypatch.setattr(doctor, "repo_root", lambda: tmp_path)
    monkeypatch.setattr(doctor, "GPU_TESTS", ("tests/test_a.py",))
    step = doctor.tests(tmp_path, budget=60)
    assert step["status"] == "failed" and step["returncode"] == 1
    assert step["counts"] == {"failed": 1, "passed": 1, "skipped": 1} and step["error"] == "1 failed, 0 errors"
    assert step["failed_tests"] == ["tests/test_a.py::test_bad"] and (tmp_path / "tests.out").exists()

    monkeypatch.setattr(doctor, "repo_root", lambda: None)
    assert doctor.tests(tmp_path, budget=60) == {
        "status": "skipped",
        "why": "tests not found (installed without the repo)",
    }


@pytest.mark.parametrize("ignores_sigint", [False, True])
def test_a_step_past_its_budget_is_stopped_and_reported(tmp_path, ignores_sigint):
    code = "import signal, time\n" + ("signal.signal(signal.SIGINT, signal.SIG_IGN)\n" if ignores_sigint else "")
    started = time.monotonic()
    done = doctor.child([sys.executable, "-c", code + "time.sleep(60)"], budget=3, log=tmp_path / "slow")
    assert time.monotonic() - started < 10 and done["timed_out"]
    step = doctor._outcome(done)
    assert step["status"] == "failed" and step["error"] == "timed out after its budget of 3 s"
    assert step["command"].startswith("python -c ")


def test_pytest_lines_backends_and_minutes_are_read():
    assert doctor.pytest_counts("....\n2 failed, 40 passed, 3 skipped, 1 error in 12.31s\n") == {
        "failed": 2,
        "passed": 40,
        "skipped": 3,
        "error": 1,
    }
    assert doctor.pytest_counts("===== 7 passed, 1 warning in 0.50s =====") == {"passed": 7, "warning": 1}
    assert doctor.pytest_counts("collecting ...\nInterrupted") == {}
    assert doctor.backend_of("self-play now uses model 3 (cuda bf16: fastest of 4)") == "cuda bf16"
    assert doctor.backend_of("inference backend tensorrt fp16: 2.1x cuda") == "tensorrt fp16"
    assert doctor.backend_of("self-play now uses model 3 (asked for)") is None
    samples = [(100.0 + 10 * k, 0.2 if k < 6 else 0.9) for k in range(30)]  # 5 minutes, one sample per 10 s
    first, last = doctor.first_and_last_minute(samples, start=95.0)
    assert first == pytest.approx(0.2) and last == pytest.approx(0.9)
    assert doctor.first_and_last_minute([], start=None) == (None, None)
