"""Control, the daemon's side: its ROUTER socket, where the CLI and the dashboard ask.

Each request (status, pause, resume, stop, reload; hexzd.daemon.control sends
them) is answered with the daemon's status: its state, counters, CPU shares,
devices, the tuner's settings, the game in progress and the workers.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

import numpy as np
import zmq

from hexzd.daemon import keys
from hexzd.daemon import messages as m
from hexzd.daemon.rundir import CONTROL_LIMIT, limit
from hexzd.train.tuner import GpuMeter

if TYPE_CHECKING:
    from hexzd.daemon.core import Daemon


class Control:
    """Answers the control requests, one at a time, in the order they come."""

    def __init__(self, daemon: Daemon):
        self.daemon = daemon

    def check_keys(self) -> None:
        """KeysMissing, naming the command that makes them, where `[daemon] tcp_port` has no keys."""
        if self.daemon.config.daemon.tcp_port:
            keys.load("daemon")
            keys.load("client")

    def bind(self, context) -> None:
        """The ipc socket (0600); with `[daemon] tcp_port`, also 127.0.0.1:port, CURVE only
        (hexzd.daemon.keys): options hold for the endpoints bound after them."""
        port, run_dir = self.daemon.config.daemon.tcp_port, self.daemon.run_dir
        pair = keys.load("daemon") if port else None  # no keys: refused before anything is bound
        client = keys.load("client").public if port else b""
        self.router = context.socket(zmq.ROUTER)
        limit(self.router, CONTROL_LIMIT)
        self.router.bind(run_dir.control)
        run_dir.private(run_dir.control)
        if pair is not None:
            from zmq.auth.asyncio import AsyncioAuthenticator

            self.authenticator = AsyncioAuthenticator(context)
            self.authenticator.start()
            self.authenticator.configure_curve_callback("hexzd", keys.OnlyTheClientKey(client))
            keys.serve(self.router, pair)
            self.router.bind(f"tcp://127.0.0.1:{port}")

    async def run(self) -> None:
        while True:
            frames = await self.router.recv_multipart()
            identity, body = frames[0], frames[-1]
            try:
                request = m.decode(body)
                if not isinstance(request, m.Request):
                    raise m.BadMessage(f"expected a request, got {m.KIND_OF[type(request)]}")
                reply = await self.answer(request)
            except m.BadMessage as e:
                reply = m.Reply(ok=False, error=str(e))
            await self.router.send_multipart([identity, *frames[1:-1], m.encode(reply)])

    async def answer(self, request: m.Request) -> m.Reply:
        daemon = self.daemon
        if request.command in ("pause", "resume"):
            daemon.paused = request.command == "pause"
            await daemon._publish(m.Pause(paused=daemon.halted()))
            await daemon._event("info", "daemon", f"{request.command}d by a client")
        elif request.command == "stop":
            daemon.stop("stop requested by a client")
        elif request.command == "reload":
            await daemon.config_file.reload()
        return m.Reply(ok=True, status=self.status())

    def status(self) -> dict:
        daemon = self.daemon
        workers = daemon.supervisor.status()
        return {
            "pid": os.getpid(),
            "db": str(daemon.db),
            "config": str(daemon.config_path),
            "state": _state(daemon),
            "stop_reason": daemon.stop_reason if daemon.stopping.is_set() else None,
            "uptime": time.monotonic() - daemon.started,
            "best": daemon.best,
            "counters": dict(daemon.counters),
            "duel": daemon.scheduler.line,
            "cpu": {
                "cores": daemon.cpu.cores,
                "eval_share": daemon.cpu.overall("duel"),
                "workers": dict(daemon.cpu.total),
                "recent": dict(daemon.cpu_recent),
            },
            "load": list(os.getloadavg()),
            "devices": daemon.meter.devices() if daemon.meter else [],
            "no_devices": GpuMeter.why_not,
            "tuner": self._tuner(),
            "live": self._live(workers),
            "config_error": daemon.config_file.error,
            "workers": workers,
            "cluster": self._cluster(),
            "stalls": daemon.stalls.status(),  # the event loop's (hexzd.daemon.stalls): why an answer was slow
        }

    def _cluster(self) -> dict | None:
        """The Ray cluster's nodes as the cluster worker last told ([cluster] address); None without one."""
        nodes = self.daemon.nodes
        if not self.daemon.config.cluster.address or nodes is None:
            return None
        return nodes.model_dump()

    def _tuner(self) -> dict:
        t, tuner = self.daemon.config.tune, self.daemon.tuner
        return {
            "enabled": t.enabled,
            "sims": tuner.sims,
            "batch": tuner.batch,
            "groups": self.daemon.config.selfplay.groups,
            "sims_bounds": [t.sims_min, t.sims_max],
            "batch_bounds": [t.batch_min, t.batch_max],
        }

    def _live(self, workers: dict) -> dict | None:
        """The first running self-play worker's game in progress (visits as floats: `status --json` prints it)."""
        running = {name for name, w in workers.items() if w["alive"]}
        live = self.daemon.live
        for worker in sorted(live):
            if worker in running:
                shown = live[worker].model_dump()
                shown["visits"] = np.frombuffer(shown["visits"], "<f4").round(4).tolist()
                return shown
        return None


def _state(daemon) -> str:
    """running, paused (by a client), disk full (self-play waits for room), or stopping."""
    if daemon.stopping.is_set():
        return "stopping"
    return "disk full" if daemon.disk_full else "paused" if daemon.paused else "running"
