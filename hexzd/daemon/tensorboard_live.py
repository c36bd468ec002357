"""`[logging] tensorboard`: the run's curves as TensorBoard event files while it runs.

A supervised loop (hexzd.daemon.supervisor.Loops) hands the state file's new
rows to an Exporter (hexzd.store.tensorboard_export) every
`daemon.progress_seconds`, the metrics' own pace, in a thread, so that the
daemon's loop never waits on the files. The stop exports the last commit's
rows too. The key is live: set or changed, the next round writes its folder
anew from the state file and appends from there; emptied, the export stops.
A relative folder is taken from config.toml's folder.

A round that fails (a folder that cannot be written, say) is a warning
event, once until the reason changes, and the next round starts the folder
anew: an Exporter that failed is never used again, which is what keeps a
point from being lost or written twice (hexzd.store.tensorboard_export).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING

from hexzd.store import StateFileError
from hexzd.store.tensorboard_export import Exporter, ExportError

if TYPE_CHECKING:
    from hexzd.daemon.core import Daemon

FAILURES = (ExportError, OSError, sqlite3.Error, StateFileError)  # told as a warning; anything else fails the loop


class LiveExport:
    """The daemon's Exporter, if `[logging] tensorboard` names a folder, and the round in flight."""

    def __init__(self, daemon: Daemon):
        self.daemon = daemon
        self.exporter: Exporter | None = None
        self.round: asyncio.Future | None = None  # the export running in its thread
        self.told: str | None = None  # the last failure told, so that a lasting one is told once

    def folder(self) -> Path | None:
        """The configured folder, relative ones from config.toml's; None when the key is empty."""
        where = self.daemon.config.logging.tensorboard
        return self.daemon.config_path.parent / Path(where).expanduser() if where else None

    async def run(self) -> None:
        while True:
            await self.once()
            await asyncio.sleep(self.daemon.config.daemon.progress_seconds)

    async def once(self) -> None:
        """One round: the new rows into the configured folder (a new one written anew)."""
        folder = self.folder()
        if self.exporter is not None and self.exporter.folder != folder:
            await self.close()
        if folder is None:
            return
        try:
            if self.exporter is None:
                self.exporter = Exporter(self.daemon.db, folder)
            await self._export(self.exporter)
            self.told = None
        except FAILURES as e:
            await self._drop()
            message = f"cannot write TensorBoard event files in {folder}: {e}; trying again each tick"
            if message != self.told:
                self.told = message
                await self.daemon._event("warning", "tensorboard", message)
        except BaseException:  # cancelled at the stop, or a failure the loop's supervisor tells
            if self.round is None or self.round.done():
                await self._drop()  # a round cut short: the next Exporter starts the folder anew
            raise

    async def _export(self, exporter: Exporter) -> None:
        """exporter.export() in a thread; the thread runs on if this is cancelled (close() waits for it)."""
        self.round = asyncio.ensure_future(asyncio.to_thread(exporter.export))
        await asyncio.shield(self.round)

    async def _drop(self) -> None:
        """Lets the Exporter go: the next round makes a new one, which writes the folder anew."""
        exporter, self.exporter = self.exporter, None
        if exporter is not None:
            with contextlib.suppress(Exception):  # a file that cannot even be closed is deleted by the next
                await asyncio.to_thread(exporter.close)

    async def close(self) -> None:
        """The last rows written and the files closed: at the stop, or when the folder changes.
        A failure is printed, never raised: at the stop, it is the daemon's last step."""
        if self.round is not None and not self.round.done():
            await asyncio.wait([self.round])  # the round a cancellation left running in its thread
            self.round.exception()  # taken: the Exporter knows it failed
        exporter, self.exporter = self.exporter, None
        if exporter is None:
            return
        for last in ((lambda: None) if exporter.failed else exporter.export, exporter.close):
            try:
                await asyncio.to_thread(last)
            except Exception as e:
                self.daemon.out(f"warning: tensorboard: the last rows could not be written to {exporter.folder}: {e!r}")
