"""`hexzd doctor --suggest`: a config.toml fitted to this machine, read back by the config loader
and compared with the default config key by key, read by tomllib."""

import os
import tomllib

import pytest
import torch
from click.testing import CliRunner

from hexzd.benchmarks.suggest import REFERENCE_FLOP, SERIAL_SHARE, SIZE_EXPONENT, sized_shape
from hexzd.cli import main
from hexzd.config import Config, default_toml, load
from hexzd.nn.net import NetSpec, count_params

pytestmark = pytest.mark.e2e  # the doctor measures this machine (about 10 s)

DOCTOR = "# hexzd doctor: "


def suggest(*args: str):
    return CliRunner().invoke(main, ["doctor", "--suggest", *args])


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    """The doctor's file for this machine, 4x4 (not the default board), and what it printed."""
    path = tmp_path_factory.mktemp("suggest") / "config.toml"
    result = suggest(str(path), "--size", "4", "--seconds", "0.5")  # a quarter of the measuring time
    assert result.exit_code == 0, result.output
    return path, result


def flat(text: str) -> dict[tuple[str, str], object]:
    return {(s, k): v for s, table in tomllib.loads(text).items() for k, v in table.items()}


def explained(text: str) -> dict[tuple[str, str], str]:
    """The keys set on the line after a `# hexzd doctor:` line, each with that reason."""
    found, section, why = {}, None, None
    for line in text.splitlines():
        if line.startswith("["):
            section = line[1 : line.index("]")]
        elif line.startswith(DOCTOR):
            why = line.removeprefix(DOCTOR)
        elif why is not None:
            found[(section, line.split("=", 1)[0].strip())] = why
            why = None
    return found


def changed(text: str) -> set[tuple[str, str]]:
    mine, default = flat(text), flat(default_toml())
    assert set(mine) == set(default), "every key of the default config, no other"
    return {key for key in default if mine[key] != default[key]}


def test_it_differs_from_the_defaults_only_where_it_says_why(measured):
    path, _ = measured
    text = path.read_text()
    config = load(path)  # the one loader and validation
    assert changed(text) == set(explained(text)) and ("game", "board_size") in changed(text)
    assert config.game.board_size == 4 and explained(text)[("game", "board_size")] == "--size 4"
    # the rest is the default text: each changed key keeps its line's comment
    default = default_toml().splitlines()
    mine = [line for line in text.splitlines() if not line.startswith(DOCTOR)][-len(default) :]
    for before, after in zip(default, mine):
        assert before == after or before.split(" # ", 1)[1] == after.split(" # ", 1)[1]


def test_it_fits_the_cores_it_counted(measured):
    path, result = measured
    cores, config = len(os.sched_getaffinity(0)), load(path)
    assert f"{cores} cores" in path.read_text().splitlines()[1]
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the CPU rules do not apply")
    workers, trainer = config.selfplay.workers, config.device.trainer_threads
    # self-play and training within what evaluation leaves, unless one of each is already more
    assert workers + trainer <= max(2, cores * (1 - config.evaluation.cpu_share))
    # the batch is the tuner's on a CPU: the file keeps the default's line
    assert ("selfplay", "batch") not in changed(path.read_text()) and config.selfplay.threads == 1
    assert config.selfplay.batch == Config().selfplay.batch
    assert "positions/s" in result.stderr and "samples/s a thread" in result.stderr


def test_it_refuses_to_overwrite_a_file_without_force(measured, tmp_path):
    path, before = tmp_path / "config.toml", measured[0].read_text()
    path.write_text(before)
    result = suggest(str(path))
    assert result.exit_code == 1 and result.output == f"hexzd: {path} exists: --force to overwrite it\n"
    assert path.read_text() == before
    assert suggest(str(path), "--force", "--for-gpu", "h100").exit_code == 0 and path.read_text() != before


def test_for_an_h100_the_threads_follow_amdahl(tmp_path):
    path = tmp_path / "h100.toml"
    result = suggest(str(path), "--for-gpu", "h100")
    assert result.exit_code == 0, result.output
    c, text = load(path), path.read_text()
    assert "for an H100 machine (16 cores, one H100)" in text.splitlines()[0]
    threads, workers = c.selfplay.threads, c.selfplay.workers
    efficiency = 1 / (SERIAL_SHARE + (1 - SERIAL_SHARE) / threads) / threads  # Amdahl, one process
    assert efficiency >= 0.8 and workers * threads <= 16 * (1 - c.evaluation.cpu_share) - 1
    assert c.selfplay.groups == 2 * threads and c.selfplay.batch == 512
    assert changed(text) == set(explained(text)) == {("selfplay", k) for k in ("workers", "threads", "groups", "batch")}


def test_bad_requests_are_told_in_one_line(tmp_path):
    result = suggest(str(tmp_path / "x.toml"), "--for-gpu", "h200")
    assert result.exit_code == 2 and "no profile 'h200'; known: h100" in result.output
    result = CliRunner().invoke(main, ["doctor", "--hours", "2"])
    assert result.exit_code == 2 and "--hours goes with --suggest" in result.output
    result = suggest(str(tmp_path / "x.toml"), "--for-gpu", "h100", "--hours", "8")
    assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
    assert "the network's rate on an H100 machine (16 cores, one H100), which is not measured" in result.output
    assert not (tmp_path / "x.toml").exists()


def test_bench_strength_takes_the_suggested_file(measured, tmp_path):
    """Its --config is validated first; then the empty --out has nothing to rejudge (no training here)."""
    path, _ = measured
    args = ["bench", "strength", "--size", "5", "--config", str(path), "--rejudge", "--out", str(tmp_path)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1 and "nothing to rejudge" in result.output
    (tmp_path / "bad.toml").write_text(path.read_text().replace("board_size = 4", "board_size = 99"))
    result = CliRunner().invoke(main, [*args[:5], str(tmp_path / "bad.toml"), *args[6:]])
    assert result.exit_code == 1 and "game.board_size: " in result.output


@pytest.mark.parametrize("n", [5, 7, 9])
def test_a_budget_grows_the_parameters_as_a_power_of_compute(n):
    auto = Config.model_validate({"game": {"board_size": n}}).model
    assert sized_shape(n, REFERENCE_FLOP / 10) == ("auto", "auto")  # never smaller than the board's own
    for times in (16, 256):
        blocks, channels = sized_shape(n, REFERENCE_FLOP * times)
        shape = NetSpec(n, auto.blocks if blocks == "auto" else blocks, channels)
        ratio = count_params(shape.build()) / count_params(NetSpec(n, auto.blocks, auto.channels).build())
        assert ratio == pytest.approx(times**SIZE_EXPONENT, rel=0.35), (n, times, blocks, channels)
