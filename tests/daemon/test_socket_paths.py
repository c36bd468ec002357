"""The run directory's socket paths against the kernel's limit on a UNIX socket's path.

The reference is the kernel itself, through real ZeroMQ sockets: a path of
IPC_PATH_MAX bytes binds, one byte more does not, and the limit counts bytes,
not characters. A state file whose sockets would not fit is refused in one
line by `hexzd start` (before anything is made) and by the control commands.
"""

import os
from pathlib import Path

import pytest
import zmq
from click.testing import CliRunner

from hexzd import store
from hexzd.cli import main
from hexzd.daemon.rundir import IPC_PATH_MAX, RunDir, SocketPathTooLong


def folder_of_length(base: Path, size: int) -> Path:
    """A folder under `base` whose path, with "/x.ipc" after it, is `size` bytes (made)."""
    base = Path(os.path.realpath(base))
    room = size - len(os.fsencode(base)) - len("/x.ipc")  # bytes of the "/name" parts to add
    assert room >= 2, f"{base} is too long a temporary folder for this test"
    count = -(-room // 201)  # names of at most 200 bytes
    names = room - count
    folder = base.joinpath(*("d" * (names // count + (i < names % count)) for i in range(count)))
    folder.mkdir(parents=True)
    assert len(os.fsencode(folder / "x.ipc")) == size
    return folder


def binds(path: Path) -> bool:
    context = zmq.Context()
    socket = context.socket(zmq.PULL)
    socket.setsockopt(zmq.LINGER, 0)
    try:
        socket.bind(f"ipc://{path}")
        return True
    except zmq.ZMQError:
        return False
    finally:
        socket.close()
        context.term()


def test_the_limit_is_the_kernels(tmp_path):
    fits = folder_of_length(tmp_path / "a", IPC_PATH_MAX) / "x.ipc"
    over = folder_of_length(tmp_path / "b", IPC_PATH_MAX + 1) / "x.ipc"
    assert binds(fits) and not binds(over)


def test_the_limit_counts_bytes_not_characters(tmp_path):
    """A socket path of at most 100 characters but IPC_PATH_MAX + 1 bytes (a folder named in
    three-byte characters): the kernel refuses it, and so does the run directory, which used to
    count characters (up to 100)."""
    shortest = len(os.fsencode(os.path.realpath(tmp_path))) + len("/d")
    wide = (IPC_PATH_MAX + 1 - len("//control.ipc") - shortest) // 3  # characters of the wide name
    if wide < 4:
        pytest.skip(f"{tmp_path} is too long a temporary folder for this test")
    folder = folder_of_length(tmp_path, IPC_PATH_MAX + 1 - len("//control.ipc") - 3 * wide + len("/x.ipc"))
    run = RunDir(folder / ("日" * wide))
    run.path.mkdir()
    path = run.path / "control.ipc"
    assert len(str(path)) <= 100 and len(os.fsencode(path)) == IPC_PATH_MAX + 1
    assert not binds(path)
    with pytest.raises(SocketPathTooLong, match=f"is {IPC_PATH_MAX + 1} bytes, over the {IPC_PATH_MAX} a UNIX"):
        run.endpoint("control")
    shorter = RunDir(folder / ("日" * (wide - 1)))  # three bytes less: within the limit
    shorter.path.mkdir()
    assert binds(shorter.path / "control.ipc") and shorter.endpoint("control")


def deep_state_file(tmp_path: Path) -> Path:
    """A state file whose results.ipc is IPC_PATH_MAX + 1 bytes: `run.sqlite.d/results.ipc`."""
    folder = folder_of_length(tmp_path, IPC_PATH_MAX + 1 - len("/run.sqlite.d/results.ipc") + len("/x.ipc"))
    db = folder / "run.sqlite"
    assert len(os.fsencode(RunDir.of(db).path / "results.ipc")) == IPC_PATH_MAX + 1
    return db


def test_hexzd_start_refuses_a_state_file_too_deep_for_its_sockets_before_making_anything(tmp_path):
    db = deep_state_file(tmp_path)
    result = CliRunner().invoke(main, ["start", "--headless", "--db", str(db), "--config", str(db.parent / "c.toml")])
    assert (result.exit_code, result.output.count("\n")) == (1, 1), result.output
    assert result.output.startswith(f"hexzd: {db}: the socket path {RunDir.of(db).path / 'results.ipc'} is ")
    assert result.output.endswith(
        f"over the {IPC_PATH_MAX} a UNIX socket's path may have: put the state file in a folder with a shorter path\n"
    )
    assert list(db.parent.iterdir()) == []  # no state file, config or run directory


@pytest.mark.parametrize("command", ["status", "stop", "attach"])
def test_the_control_commands_refuse_it_in_one_line(tmp_path, command):
    db = deep_state_file(tmp_path)
    store.prepare(db)  # a state file: what is wrong is its folder's depth
    result = CliRunner().invoke(main, [command, "--db", str(db)])
    assert (result.exit_code, result.output.count("\n")) == (1, 1), result.output
    assert result.output.startswith(f"hexzd: {db}: the socket path ")
