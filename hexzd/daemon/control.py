"""The control client: one request to the daemon's ROUTER socket, its status back.

`hexzd status|stop|pause|resume|reload` and the dashboard both ask through `ask`:
over the run directory's ipc socket, or with `port` over the daemon's TCP
control port (`[daemon] tcp_port`), as a CURVE client with the keys of
`hexzd keys` (hexzd.daemon.keys).
"""

from pathlib import Path

import zmq

from hexzd.daemon import keys
from hexzd.daemon import messages as m
from hexzd.daemon.rundir import REPLY_LIMIT, RunDir, limit


class DaemonError(RuntimeError):
    """The daemon answered, and refused the request."""


def ask(db, command: str, timeout: float = 1.0, port: int | None = None) -> dict | None:
    """The daemon's status after `command` (status, pause, resume, stop, reload); None when no
    daemon answers. With `port`, over TCP on 127.0.0.1 with the CURVE keys (KeysMissing without them)."""
    if port:
        endpoint = f"tcp://127.0.0.1:{port}"
        client, daemon_public = keys.load("client"), keys.daemon_public()
    else:
        endpoint = RunDir.of(db).control
        if not Path(endpoint.removeprefix("ipc://")).exists():
            return None  # no daemon has run here, or it has exited and removed its socket
    context = zmq.Context()
    socket = context.socket(zmq.REQ)
    socket.setsockopt(zmq.LINGER, 0)
    limit(socket, REPLY_LIMIT)
    if port:
        keys.connect_as_client(socket, daemon_public, client)
    try:
        socket.connect(endpoint)
        socket.send(m.encode(m.Request(command=command)))
        if not socket.poll(int(timeout * 1000)):
            return None  # a stale socket file: the daemon was killed
        reply = m.decode(socket.recv())
    finally:
        socket.close()
        context.term()
    if not reply.ok:
        raise DaemonError(reply.error)
    return reply.status
