"""The control client: one request to the daemon's ROUTER socket, its status back.

`hexzd status|stop|pause|resume|reload` and the dashboard both ask through `ask`.
"""

from pathlib import Path

import zmq

from hexzd.daemon import messages as m
from hexzd.daemon.rundir import RunDir


class DaemonError(RuntimeError):
    """The daemon answered, and refused the request."""


def ask(db, command: str, timeout: float = 1.0) -> dict | None:
    """The daemon's status after `command` (status, pause, resume, stop, reload); None when no daemon answers."""
    endpoint = RunDir.of(db).control
    if not Path(endpoint.removeprefix("ipc://")).exists():
        return None  # no daemon has run here, or it has exited and removed its socket
    context = zmq.Context()
    socket = context.socket(zmq.REQ)
    socket.setsockopt(zmq.LINGER, 0)
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
