"""The CURVE keys of the TCP control port: `hexzd keys` makes them, the daemon and its clients read them.

`[daemon] tcp_port` opens the daemon's control socket on 127.0.0.1, where any
user of the machine could reach it; so it speaks only ZeroMQ CURVE: the daemon
proves itself with its key pair, and answers only a client holding the client
key pair (ZAP checks the client's public key). The keys live in one folder,
`~/.config/hexzd/keys` (or $HEXZD_KEYS), 0700, each file 0600:
    daemon.key, daemon.key_secret   the daemon's pair (ZeroMQ certificate files)
    client.key, client.key_secret   the pair `hexzd status --port` and the dashboard use
A daemon asked for tcp_port without them refuses to start, and names the command.
"""

import os
import stat
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth

PAIRS = ("daemon", "client")
MAKE = "hexzd keys"


class KeysMissing(RuntimeError):
    """The keys are not there, or others can read them."""


def keys_dir() -> Path:
    return Path(os.environ.get("HEXZD_KEYS") or Path.home() / ".config" / "hexzd" / "keys")


def has_curve() -> bool:
    return bool(zmq.has("curve"))


def make(force: bool = False) -> Path:
    """Makes both key pairs (kept, unless `force`) in keys_dir(), 0700 and 0600; returns the folder."""
    if not has_curve():
        raise KeysMissing("this ZeroMQ has no CURVE support (zmq.has('curve') is false): a TCP port cannot be secured")
    where = keys_dir()
    where.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(where, 0o700)
    old = os.umask(0o077)
    try:
        for name in PAIRS:
            if force or not (where / f"{name}.key_secret").exists():
                zmq.auth.create_certificates(where, name)
    finally:
        os.umask(old)
    for name in PAIRS:
        for suffix in (".key", ".key_secret"):
            os.chmod(where / f"{name}{suffix}", 0o600)
    return where


@dataclass(frozen=True)
class Pair:
    public: bytes
    secret: bytes


def load(name: str) -> Pair:
    """A key pair ('daemon' or 'client'), or KeysMissing naming the command that makes it."""
    where = keys_dir()
    path = where / f"{name}.key_secret"
    if not has_curve():
        raise KeysMissing("this ZeroMQ has no CURVE support (zmq.has('curve') is false): tcp_port cannot be used")
    if not path.exists():
        raise KeysMissing(f"[daemon] tcp_port needs CURVE keys, and {path} is missing: make them with `{MAKE}`")
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO) or path.stat().st_uid != os.getuid():
        raise KeysMissing(
            f"{path} is open to others (mode {stat.S_IMODE(mode):o}): `chmod 600 {path}`, or `{MAKE} --force`"
        )
    public, secret = zmq.auth.load_certificate(path)
    if secret is None:
        raise KeysMissing(f"{path} holds no secret key: remake the keys with `{MAKE} --force`")
    return Pair(public, secret)


def daemon_public() -> bytes:
    """The daemon's public key, which a client checks the daemon by."""
    path = keys_dir() / "daemon.key"
    if not path.exists():
        raise KeysMissing(f"{path} is missing: make the keys with `{MAKE}`")
    return zmq.auth.load_certificate(path)[0]


def serve(socket: zmq.Socket, daemon: Pair) -> None:
    """Makes `socket` a CURVE server with the daemon's pair; set before its TCP bind."""
    socket.curve_secretkey = daemon.secret
    socket.curve_publickey = daemon.public
    socket.curve_server = True
    socket.zap_domain = b"hexzd"


def connect_as_client(socket: zmq.Socket, daemon_public: bytes, client: Pair) -> None:
    """Makes `socket` a CURVE client of the daemon whose public key is `daemon_public`."""
    socket.curve_secretkey = client.secret
    socket.curve_publickey = client.public
    socket.curve_serverkey = daemon_public


class OnlyTheClientKey:
    """ZAP's answer: a client is let in when it holds the client key pair."""

    def __init__(self, client_public: bytes):
        self.client_public = client_public

    def callback(self, domain: str, key: bytes) -> bool:
        return key == self.client_public
