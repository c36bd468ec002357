"""config.toml, followed: read at the start, watched, and applied when it changes.

A valid edit is applied within seconds: recorded in the state file, handed to
the tuner, and announced to the workers (written to the run directory and
published). A bad one, or one that changes a key fixed for the run, is
refused with its key and line, and the daemon runs on with the last good
config. So is a file that is missing, unreadable, not UTF-8 or empty: moved
away, or caught halfway through an editor's save, it is not a file of
defaults; the daemon applies it once it is back. Every version read,
applied or not, is kept in `config_history`.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from typing import TYPE_CHECKING

from hexzd.config import Config, default_toml, fixed_changes, line_of, notices, parse, read, refusal, stored, tuned
from hexzd.daemon import messages as m
from hexzd.daemon.supervisor import chosen_gpus

if TYPE_CHECKING:
    from hexzd.daemon.core import Daemon

WATCH_EVERY = 1.0  # seconds between looks at config.toml


class ConfigFile:
    """The daemon's config.toml: its text as last read, and why the last edit was refused."""

    def __init__(self, daemon: Daemon):
        self.daemon, self.path = daemon, daemon.config_path
        self.text = ""  # the text of the config in force
        self.seen: tuple[str, str | None] = ("", None)  # the file as last looked at: its text, why it cannot be read
        self.error: str | None = None  # why the file's current edit is refused; None while it is in force
        self.reloading = asyncio.Lock()  # the watcher and a client's `reload` must not apply one edit twice

    def load(self) -> Config:
        """The config to start with; a missing file is created with the defaults.

        Raises ValueError, one line a problem, for a file that cannot be read or is not valid."""
        if not self.path.exists():
            try:
                self.path.write_text(default_toml())
            except OSError as e:
                raise ValueError(
                    f"{self.path}: no such file, and the defaults cannot be written: {e.strerror}"
                ) from None
            self.daemon.out(f"wrote the default config to {self.path}")
        self.text = read(self.path)
        self.seen = (self.text, None)
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
        """Re-reads config.toml when it changes (checked every WATCH_EVERY seconds).

        A look that fails is told as an error event (once until it changes), and the
        watch goes on: a watcher that died would leave every later edit unread."""
        told = None
        while True:
            await asyncio.sleep(WATCH_EVERY)
            try:
                await self.reload()
                told = None
            except Exception as e:
                if repr(e) != told:
                    told = repr(e)
                    await self.daemon._event("error", "config", f"cannot look at {self.path}: {e!r}; looking again")

    def look(self) -> tuple[str, str | None]:
        """The file's text, and why it cannot be applied as it stands (None if it may be tried)."""
        try:
            text = read(self.path)
        except ValueError as e:
            return "", str(e)
        if not any(line.split("#", 1)[0].strip() for line in text.splitlines()):
            return text, f"{self.path}: empty, it sets no key (set any key to run on the defaults)"
        return text, None

    async def reload(self) -> None:
        """Applies config.toml if it changed since the last look (or refuses it, saying why)."""
        async with self.reloading:
            seen = self.look()
            if seen != self.seen:
                try:
                    await self._apply(*seen)
                    self.seen = seen
                except sqlite3.Error as e:  # cannot record it now: try again in a second
                    self.daemon._cannot_write(e)

    async def _apply(self, text: str, error: str | None) -> None:
        daemon = self.daemon
        config = None
        if error is None:
            try:
                config = parse(text, self.path)
                error = fixed_changes(daemon.config, config, text, self.path)
            except ValueError as e:
                error = str(e)
        await self.record(text, error is None, error)
        if error or config is None:
            self.error = error
            await daemon._event("error", "config", f"edit refused, still running on the last good config: {error}")
            return
        daemon.config, self.text, self.error = config, text, None
        self._tell_renamed(text)
        daemon.tuner.configure(config.tune, config.selfplay.sims, config.selfplay.batch)
        await self.announce()
        await daemon._event("info", "config", f"applied the edit to {self.path}")

    def in_force(self) -> Config:
        """The file's config with the tuner's simulations and batch size: what workers run,
        validated as a whole, as each worker validates it again."""
        return tuned(self.daemon.config, self.daemon.tuner.sims, self.daemon.tuner.batch)

    async def announce(self) -> None:
        """Tells the workers the config in force: in the run directory, and published."""
        config = self.in_force().model_dump()
        self.daemon.run_dir.write_config(config)
        await self.daemon._publish(m.ConfigUpdate(config=config))
