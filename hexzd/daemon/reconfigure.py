"""config.toml, followed: read at the start, watched, and applied when it changes.

A valid edit is applied within seconds: recorded in the state file, handed to
the tuner, and announced to the workers (written to the run directory and
published). A bad one, or one that changes a key fixed for the run, is
refused with its key and line, and the daemon runs on with the last good
config. Every version read, applied or not, is kept in `config_history`.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from typing import TYPE_CHECKING

from hexzd.config import Config, default_toml, fixed_changes, line_of, notices, parse, refusal, stored
from hexzd.daemon import messages as m
from hexzd.daemon.supervisor import chosen_gpus

if TYPE_CHECKING:
    from hexzd.daemon.core import Daemon


class ConfigFile:
    """The daemon's config.toml: its text as last read, and why the last edit was refused."""

    def __init__(self, daemon: Daemon):
        self.daemon, self.path = daemon, daemon.config_path
        self.text = ""
        self.error: str | None = None  # why the file's current edit is refused; None while it is in force
        self.reloading = asyncio.Lock()  # the watcher and a client's `reload` must not apply one edit twice

    def load(self) -> Config:
        """The config to start with; a missing file is created with the defaults."""
        if not self.path.exists():
            self.path.write_text(default_toml())
            self.daemon.out(f"wrote the default config to {self.path}")
        self.text = self.path.read_text()
        config = parse(self.text, self.path)
        self._tell_renamed(self.text)
        return config

    def _tell_renamed(self, text: str) -> None:
        """A warning event for each old key name the file uses (flushed with the next write)."""
        for notice in notices(text, self.path):
            self.daemon.pending.messages.append(m.Event(level="warning", source="config", message=notice))

    def gpus(self) -> list[str]:
        """device.gpus as CUDA_VISIBLE_DEVICES entries, or a refusal that names the key and line."""
        try:
            return chosen_gpus(self.daemon.config.device.gpus)
        except ValueError as e:
            loc = ("device", "gpus")
            raise refusal(self.path, line_of(self.text, loc), loc, str(e)) from None

    async def check_fixed(self) -> None:
        """A state file keeps the fixed keys it was made with."""
        daemon = self.daemon
        made_with = await daemon.store.made_with()
        if made_with is None:
            await daemon.store.set_made_with(daemon.config.model_dump_json())
            return
        error = fixed_changes(stored(made_with), daemon.config, self.text, self.path)
        if error:
            raise RuntimeError(f"{error} (the state file {daemon.db} was made with it)")

    async def record(self, text: str, accepted: bool, error: str | None) -> None:
        await self.daemon._transaction(lambda: self.daemon.store.add_config(time.time(), text, accepted, error))

    async def watch(self) -> None:
        """Re-reads config.toml when it changes (checked every second)."""
        while True:
            await asyncio.sleep(1.0)
            await self.reload()

    async def reload(self) -> None:
        """Applies config.toml if it changed since the last look (or refuses it, saying why)."""
        async with self.reloading:
            try:
                text = self.path.read_text()
            except OSError as e:
                text = f"# unreadable: {e}"
            if text != self.text:
                try:
                    await self._apply(text)
                    self.text = text
                except sqlite3.Error as e:  # cannot record it now: try again in a second
                    self.daemon._cannot_write(e)

    async def _apply(self, text: str) -> None:
        daemon = self.daemon
        try:
            config = parse(text, self.path)
            error = fixed_changes(daemon.config, config, text, self.path)
        except ValueError as e:
            config, error = None, str(e)
        await self.record(text, error is None, error)
        if error:
            self.error = error
            await daemon._event("error", "config", f"edit refused, still running on the last good config: {error}")
            return
        daemon.config, self.error = config, None
        self._tell_renamed(text)
        daemon.tuner.configure(config.tune, config.selfplay.sims, config.selfplay.batch)
        await self.announce()
        await daemon._event("info", "config", f"applied the edit to {self.path}")

    def in_force(self) -> Config:
        """The file's config with the tuner's simulations and batch size: what workers run."""
        config, tuner = self.daemon.config, self.daemon.tuner
        selfplay = config.selfplay.model_copy(update={"sims": tuner.sims, "batch": tuner.batch})
        return config.model_copy(update={"selfplay": selfplay})

    async def announce(self) -> None:
        """Tells the workers the config in force: in the run directory, and published."""
        config = self.in_force().model_dump()
        self.daemon.run_dir.write_config(config)
        await self.daemon._publish(m.ConfigUpdate(config=config))
