"""The daemon's config.toml while it runs (hexzd.daemon.reconfigure): a file that is missing,
empty, unreadable or not UTF-8 is a refused edit, never a file of defaults; the watch goes on.

The unit tests drive a ConfigFile on a stand-in daemon that keeps what it is told; the
e2e test moves a real daemon's config.toml away and back."""

import asyncio
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
from daemon_run import QUICK, DaemonRun, config_text

from hexzd.daemon import reconfigure
from hexzd.daemon.reconfigure import ConfigFile
from hexzd.daemon.rundir import RunDir
from hexzd.train.tuner import Tuner


class Daemon:
    """What a ConfigFile uses of hexzd.daemon.core.Daemon, keeping what it is told."""

    def __init__(self, path):
        self.config_path = path
        self.pending = SimpleNamespace(messages=[])
        self.history: list[tuple[str, bool, str | None]] = []  # config_history: text, accepted, error
        self.events: list[tuple[str, str]] = []
        self.written: list[dict] = []  # config.json, as the workers read it
        self.run_dir = SimpleNamespace(write_config=self.written.append)
        self.store = self
        self.config_file = ConfigFile(self)
        self.config = self.config_file.load()
        self.tuner = Tuner(self.config.tune, self.config.selfplay.sims, self.config.selfplay.batch)

    def out(self, line: str) -> None:
        pass

    async def _transaction(self, writes) -> None:
        await writes()

    async def add_config(self, at: float, text: str, accepted: bool, error: str | None) -> None:
        self.history.append((text, accepted, error))

    async def _event(self, level: str, source: str, message: str) -> None:
        self.events.append((level, message))

    async def _publish(self, update) -> None:
        pass

    def _cannot_write(self, error: Exception) -> None:
        raise error


def edited(sims: int) -> str:
    return config_text({"[selfplay]": [f"sims = {sims}"], "[tune]": ["enabled = false"]})


@pytest.fixture
def daemon(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text(edited(24))
    return Daemon(path)


def reload(daemon: Daemon) -> None:
    asyncio.run(daemon.config_file.reload())


def not_utf8(path):
    path.write_bytes(edited(20).replace("[game]", "# r\xe9glages\n[game]", 1).encode("latin-1"))


BREAKS = {
    # how the file is broken, and what its refusal says
    "missing": (lambda path: path.unlink(), "config.toml: no such file"),
    "empty": (lambda path: path.write_text(""), "config.toml: empty, it sets no key"),
    "comments only": (lambda path: path.write_text("# nothing yet\n\n"), "config.toml: empty, it sets no key"),
    "not UTF-8": (not_utf8, "config.toml:4: not UTF-8 (byte 0xe9): save the file as UTF-8"),
    "a folder": (lambda path: path.unlink() or path.mkdir(), "config.toml: cannot be read: Is a directory"),
}


@pytest.mark.parametrize("name", BREAKS)
def test_a_missing_empty_unreadable_or_non_utf8_file_is_refused_and_the_last_good_config_kept(daemon, name):
    breaks, said = BREAKS[name]
    path, file = daemon.config_path, daemon.config_file
    breaks(path)
    reload(daemon)
    assert daemon.config.selfplay.sims == 24  # not the default 32
    assert daemon.written == []  # the workers were told nothing
    text, accepted, error = daemon.history[-1]
    assert not accepted and error and said in error
    assert file.error == error
    assert daemon.events[-1][0] == "error" and said in daemon.events[-1][1]
    reload(daemon)  # the same broken file is refused once, not every second
    assert len(daemon.history) == 1
    if path.is_dir():
        path.rmdir()
    path.write_text(edited(28))  # back, and valid: applied
    reload(daemon)
    assert daemon.config.selfplay.sims == 28 and daemon.history[-1][1:] == (True, None)
    assert file.error is None and daemon.written[-1]["selfplay"]["sims"] == 28


def test_an_editors_delete_then_rename_is_refused_for_a_moment_then_applied(daemon):
    path = daemon.config_path
    saved = edited(40)
    path.unlink()
    reload(daemon)  # the look between the delete and the rename
    path.with_suffix(".tmp").write_text(saved)
    os.replace(path.with_suffix(".tmp"), path)
    reload(daemon)
    assert [accepted for _, accepted, _ in daemon.history] == [False, True]
    assert daemon.config.selfplay.sims == 40 and daemon.config_file.error is None


def test_a_look_that_fails_is_told_once_and_the_watch_goes_on(daemon, monkeypatch):
    monkeypatch.setattr(reconfigure, "WATCH_EVERY", 0.01)
    looks = []

    async def failing():
        looks.append(1)
        if len(looks) <= 3:
            raise OSError(28, "No space left on device")
        await ConfigFile.reload(daemon.config_file)

    monkeypatch.setattr(daemon.config_file, "reload", failing)
    daemon.config_path.write_text(edited(36))

    async def watch_a_while():
        watch = asyncio.create_task(daemon.config_file.watch())
        while len(looks) < 6 and not watch.done():
            await asyncio.sleep(0.01)
        watch.cancel()
        return watch

    watch = asyncio.run(watch_a_while())
    assert watch.cancelled()  # it was still watching, not dead of the first failure
    assert daemon.config.selfplay.sims == 36  # the edit after the failures applied
    told = [message for level, message in daemon.events if level == "error"]
    assert len(told) == 1 and "No space left on device" in told[0]


@pytest.mark.parametrize(
    "breaks,said",
    [
        (not_utf8, "config.toml:4: not UTF-8 (byte 0xe9)"),
        (lambda p: p.symlink_to(p.name), "config.toml: no such file, and the defaults cannot be written: Too many"),
    ],
    ids=["not UTF-8", "a link to itself"],
)
def test_hexzd_start_on_a_file_it_cannot_read_says_so_in_one_line(tmp_path, breaks, said):
    path = tmp_path / "config.toml"
    breaks(path)
    command = [sys.executable, "-m", "hexzd", "start", "--headless", "--config", str(path)]
    result = subprocess.run(
        [*command, "--db", str(tmp_path / "run.sqlite")], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1
    assert result.stderr.startswith("Error: ") and said in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.e2e
@pytest.mark.timeout(240)
def test_config_toml_moved_away_keeps_the_run_going_and_applies_when_back(tmp_path):
    run = DaemonRun(tmp_path, edits=QUICK).start()
    try:
        good = run.config.read_text()
        run.wait_for(lambda: run.count("games") > 0, 60, "self-play")
        run.config.rename(tmp_path / "config.toml.away")
        run.wait_for(lambda: run.count("config_history", "accepted = 0") == 1, 15, "the refusal of the missing file")
        assert "no such file" in run.query("SELECT error FROM config_history ORDER BY id DESC LIMIT 1")[0][0]
        status = run.hexzd("status")
        assert "config refused" in status.stdout and "no such file" in status.stdout
        games = run.count("games")
        run.wait_for(lambda: run.count("games") > games, 30, "self-play to go on")
        assert RunDir.of(run.db).read_config()["train"]["min_positions"] == 300  # QUICK's, not the default
        run.config.write_text(good.replace("sims = 32", "sims = 24", 1))
        run.wait_for(lambda: run.count("games", "sims = 24") > 0, 60, "games with the restored file's sims")
        assert run.query("SELECT accepted FROM config_history ORDER BY id DESC LIMIT 1") == [(1,)]
        assert "config refused" not in run.hexzd("status").stdout
        workers = json.loads(run.hexzd("status", "--json").stdout)["workers"]
        assert all(w["restarts"] == 0 for w in workers.values())
        assert run.stop() == 0
    finally:
        run.cleanup()


def several_mistakes() -> tuple[str, list[tuple[str, str]]]:
    """A config.toml with four mistakes of three kinds, and each one's (key, message) as told."""
    text = config_text({"[selfplay]": ["sims = 0"], "[tune]": ["sims_min = 900"], "[train]": ["window = 0"]})
    text = text.replace("batch = 32 ", "batch = 32\ngames = 16 ", 1)  # set under its old name too
    return text, [
        ("selfplay.games", "now selfplay.batch, which this file sets too: remove one"),
        ("selfplay.sims", "Input should be greater than or equal to 1"),
        ("tune.sims_min", "should be at most sims_max (800), not 900"),
        ("train.window", "Value error, should be from 1 to 10000000"),
    ]


def told(path, text: str, mistakes: list[tuple[str, str]]) -> set[str]:
    """Each mistake as `file:line: key: message`, its line found in the text by its section and key."""
    lines, where = text.splitlines(), {}
    section = ""
    for number, line in enumerate(lines, 1):
        if line.startswith("["):
            section = line[1 : line.index("]")]
        elif "=" in line:
            where.setdefault(f"{section}.{line.split('=')[0].strip()}", number)
    return {f"{path}:{where[key]}: {key}: {message}" for key, message in mistakes}


def test_a_live_edit_with_several_mistakes_is_refused_with_every_one(daemon):
    text, mistakes = several_mistakes()
    daemon.config_path.write_text(text)
    reload(daemon)
    _, accepted, error = daemon.history[-1]
    assert not accepted and set(error.splitlines()) == told(daemon.config_path, text, mistakes)


def test_hexzd_start_tells_every_mistake_of_a_config_at_once_each_on_its_line(tmp_path):
    """It used to tell the key set under two names alone, and the others one start later."""
    text, mistakes = several_mistakes()
    path = tmp_path / "config.toml"
    path.write_text(text)
    command = [sys.executable, "-m", "hexzd", "start", "--headless", "--config", str(path)]
    result = subprocess.run(
        [*command, "--db", str(tmp_path / "run.sqlite")], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith("Error: ")
    assert set(result.stderr.removeprefix("Error: ").splitlines()) == told(path, text, mistakes)
