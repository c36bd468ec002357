"""Other users of the machine are kept out: the run directory, its sockets, the TCP port.

The daemon's sockets are bound here in-process (Daemon._bind), with no workers
and no state file: fast tests of what a neighbour could do to a daemon.
"""

import asyncio
import os
import shutil
import socket
import stat
import tempfile
import threading
from pathlib import Path

import msgpack
import pytest
import zmq
import zmq.asyncio
from states import snapshot_made, trained_snapshot

from hexzd.config import Config
from hexzd.daemon import keys
from hexzd.daemon import messages as m
from hexzd.daemon.control import ask
from hexzd.daemon.core import Daemon
from hexzd.daemon.rundir import CONTROL_LIMIT, RunDir, UnsafeRunDir, message_limit

curve = pytest.mark.skipif(not zmq.has("curve"), reason="this ZeroMQ has no CURVE support (zmq.has('curve'))")


@pytest.fixture
def short_dir():
    """A directory with a short path: ipc socket paths are limited to ~100 characters."""
    path = Path(tempfile.mkdtemp(prefix="hz", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def key_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("HEXZD_KEYS", str(tmp_path / "keys"))
    return tmp_path / "keys"


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


# -- the run directory ---------------------------------------------------------------------


def test_the_run_directory_is_made_private_and_refused_when_others_can_write_it(short_dir):
    run = RunDir.of(short_dir / "run.sqlite")
    run.lock().close()
    assert mode(run.path) == 0o700
    for loose in (0o770, 0o757, 0o777):
        os.chmod(run.path, loose)
        with pytest.raises(UnsafeRunDir, match="can be written by group or others"):
            run.lock()
    os.chmod(run.path, 0o755)  # an earlier hexzd's, made with umask 022: still taken
    run.lock().close()


def test_a_run_directory_of_another_user_is_refused(short_dir, monkeypatch):
    run = RunDir.of(short_dir / "run.sqlite")
    run.make()
    monkeypatch.setattr(os, "getuid", lambda: os.stat(run.path).st_uid + 1)
    with pytest.raises(UnsafeRunDir, match="belongs to another user"):
        run.lock()


def test_a_worker_refuses_a_config_json_that_others_could_have_written(short_dir):
    """config.json names ratings.engines' command lines, which the duel worker runs."""
    run = RunDir.of(short_dir / "run.sqlite").make()
    config = Config(ratings={"engines": {"mohex": "/usr/bin/mohex"}}, game={"swap": False})
    run.write_config(config.model_dump())
    assert run.read_config()["ratings"]["engines"] == {"mohex": "/usr/bin/mohex"}
    assert mode(run.path / "config.json") == 0o600
    os.chmod(run.path, 0o777)
    with pytest.raises(UnsafeRunDir, match="the run directory .* can be written by group or others"):
        run.read_config()
    os.chmod(run.path, 0o700)
    os.chmod(run.path / "config.json", 0o666)
    with pytest.raises(UnsafeRunDir, match="the config file .* can be written by group or others"):
        run.read_config()


# -- the sockets --------------------------------------------------------------------------


class Bound:
    """A daemon's three sockets, bound in this process on an event loop in a thread."""

    def __init__(self, short_dir: Path, config: Config):
        self.daemon = Daemon(short_dir / "config.toml", short_dir / "run.sqlite")
        self.daemon.config = config
        self.daemon.run_dir.make()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def call(self, coroutine, timeout=10):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def bind(self) -> None:
        async def bind():
            self.daemon.context = zmq.asyncio.Context()
            self.daemon._bind()

        self.call(bind())

    def serve_control(self) -> None:
        """Answers control requests with a status of its own (no workers, no state file)."""
        self.daemon.control.status = lambda: {"state": "running"}

        async def start():
            self.task = asyncio.create_task(self.daemon.control.run())

        self.call(start())

    def close(self) -> None:
        async def close():
            for task in asyncio.all_tasks() - {asyncio.current_task()}:
                task.cancel()
            if getattr(self.daemon, "context", None) is not None:
                self.daemon.context.destroy(linger=0)

        self.call(close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture
def bound(short_dir):
    made = []

    def make(config: Config | None = None) -> Bound:
        made.append(Bound(short_dir, config or Config()))
        return made[-1]

    yield make
    for b in made:
        b.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_socket_files_are_the_users_alone(bound):
    b = bound()
    b.bind()
    for endpoint in (b.daemon.run_dir.results, b.daemon.run_dir.updates, b.daemon.run_dir.control):
        assert mode(endpoint.removeprefix("ipc://")) == 0o600, endpoint


def push(endpoint: str, frame: bytes) -> None:
    context = zmq.Context()
    sender = context.socket(zmq.PUSH)
    sender.setsockopt(zmq.LINGER, 5000)
    sender.connect(endpoint)
    sender.send(frame)
    sender.close()
    context.term()


def test_an_oversized_result_is_dropped_and_the_daemon_goes_on(bound):
    """A frame past the limit (here a valid event with a 20 MB message) drops its sender's
    connection unread; the next sender's result still comes in."""
    b = bound()
    b.bind()
    limit = message_limit(b.daemon.config)
    assert 16 << 20 < limit < 20_000_000  # the default network's snapshots, with room
    huge = m.encode(m.Event(level="info", source="neighbour", message="x" * 20_000_000))
    small = m.encode(m.Event(level="info", source="worker", message="hello"))
    push(b.daemon.run_dir.results, huge)
    push(b.daemon.run_dir.results, small)

    async def received() -> list[bytes]:
        frames = []
        while await b.daemon.ingest.pull.poll(2000):
            frames.append(await b.daemon.ingest.pull.recv())
        return frames

    frames = b.call(received())
    assert [m.decode(f).source for f in frames] == ["worker"]


def test_a_snapshot_of_the_largest_network_fits_the_limit():
    """The limit is computed without torch: it must hold the real snapshot message."""
    pytest.importorskip("torch")
    config = Config(game={"board_size": 13}, model={"blocks": 6, "channels": 64})
    frame = m.encode(snapshot_made(*trained_snapshot(13, 6, 64)))
    assert len(frame) < message_limit(config) - (16 << 20)  # it fits without the margin


def request(endpoint: str, frame: bytes, timeout_ms=1500, setup=None) -> bytes | None:
    context = zmq.Context()
    client = context.socket(zmq.REQ)
    client.setsockopt(zmq.LINGER, 0)
    if setup:
        setup(client)
    client.connect(endpoint)
    try:
        client.send(frame)
        return client.recv() if client.poll(timeout_ms) else None
    finally:
        client.close()
        context.term()


def test_an_oversized_control_request_is_dropped_and_the_daemon_still_answers(bound):
    b = bound()
    b.bind()
    b.serve_control()
    status = m.encode(m.Request(command="status"))
    big = msgpack.packb({"v": m.VERSION, "kind": "request", "command": "status", "pad": "x" * (2 * CONTROL_LIMIT)})
    assert request(b.daemon.run_dir.control, big) is None
    assert m.decode(request(b.daemon.run_dir.control, status)).ok


# -- the TCP port --------------------------------------------------------------------------


@curve
def test_a_tcp_port_without_keys_is_refused_naming_the_command(bound, key_dir):
    b = bound(Config(daemon={"tcp_port": free_port()}))
    with pytest.raises(keys.KeysMissing, match="hexzd keys"):
        b.bind()


@curve
def test_the_tcp_port_answers_the_client_key_alone(bound, key_dir):
    keys.make()
    for path in [key_dir, *key_dir.iterdir()]:
        assert mode(path) == (0o700 if path.is_dir() else 0o600), path
    port = free_port()
    b = bound(Config(daemon={"tcp_port": port}))
    b.bind()
    b.serve_control()
    status = m.encode(m.Request(command="status"))
    endpoint = f"tcp://127.0.0.1:{port}"

    def stranger(client):  # a CURVE client with the daemon's public key, but a key pair of its own
        public, secret = zmq.curve_keypair()
        client.curve_publickey, client.curve_secretkey = public, secret
        client.curve_serverkey = keys.daemon_public()

    assert request(endpoint, status) is None  # no CURVE: no answer
    assert request(endpoint, status, setup=stranger) is None
    assert ask(None, "status", timeout=5, port=port) == {"state": "running"}
    assert m.decode(request(b.daemon.run_dir.control, status)).ok  # the ipc socket needs no keys


@curve
def test_hexzd_keys_makes_the_pairs_and_status_over_tcp_names_it(key_dir):
    from click.testing import CliRunner

    from hexzd.cli import main

    refused = CliRunner().invoke(main, ["status", "--port", str(free_port())])
    assert refused.exit_code == 1 and "make them with `hexzd keys`" in refused.output
    made = CliRunner().invoke(main, ["keys"])
    assert made.exit_code == 0 and str(key_dir) in made.output
    assert sorted(p.name for p in key_dir.iterdir()) == [
        "client.key",
        "client.key_secret",
        "daemon.key",
        "daemon.key_secret",
    ]
    secret = (key_dir / "daemon.key_secret").read_bytes()
    assert CliRunner().invoke(main, ["keys"]).exit_code == 0
    assert (key_dir / "daemon.key_secret").read_bytes() == secret  # kept, unless --force
    os.chmod(key_dir / "client.key_secret", 0o644)
    with pytest.raises(keys.KeysMissing, match="open to others"):
        keys.load("client")


def test_hexzd_start_refuses_a_run_directory_others_can_write_in_one_line(short_dir):
    from click.testing import CliRunner

    from hexzd.cli import main

    run = RunDir.of(short_dir / "run.sqlite")
    run.path.mkdir()
    os.chmod(run.path, 0o777)
    db = str(short_dir / "run.sqlite")
    result = CliRunner().invoke(main, ["start", "--headless", "--db", db, "--config", str(short_dir / "c.toml")])
    assert result.exit_code == 1, result.output
    assert "can be written by group or others" in result.output and "Traceback" not in result.output


@curve
def test_hexzd_start_with_a_tcp_port_and_no_keys_names_the_command(short_dir, key_dir):
    from click.testing import CliRunner

    from hexzd.cli import main
    from hexzd.config import default_toml

    config = short_dir / "c.toml"
    config.write_text(default_toml().replace("tcp_port = 0 ", f"tcp_port = {free_port()} ", 1))
    db = str(short_dir / "run.sqlite")
    result = CliRunner().invoke(main, ["start", "--headless", "--db", db, "--config", str(config), "--for", "5s"])
    assert result.exit_code == 1, result.output
    assert "make them with `hexzd keys`" in result.output
    assert not Path(db).exists()  # refused before the state file is made
