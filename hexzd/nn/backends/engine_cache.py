"""The TensorRT engines' disk cache: where it is, what names a snapshot's weights, build-once
files, and its size limit.

Each new snapshot brings new engines (one per batch bucket), so the cache is
kept to a size: after each build, the engines used longest ago go until the
rest fit in tensorrt_cache_limit() bytes ($HEXZD_TRT_CACHE_MB, default
DEFAULT_LIMIT_MB). Loading an engine marks it used (its mtime).
"""

import fcntl
import hashlib
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from torch import nn

__all__ = ["cached", "prune", "tensorrt_cache_dir", "tensorrt_cache_limit", "weights_digest"]

DEFAULT_LIMIT_MB = 4096
STALE_SECONDS = 86_400.0  # a builder's temporary file this old is a dead builder's


def tensorrt_cache_dir() -> Path:
    return Path(os.environ.get("HEXZD_TRT_CACHE", Path.home() / ".cache" / "hexzd" / "tensorrt"))


def tensorrt_cache_limit() -> int:
    """Bytes the engine cache may hold: $HEXZD_TRT_CACHE_MB megabytes, else DEFAULT_LIMIT_MB."""
    return int(float(os.environ.get("HEXZD_TRT_CACHE_MB") or DEFAULT_LIMIT_MB) * 1_000_000)


def prune(directory: Path, max_bytes: int, keep: Path | None = None) -> list[Path]:
    """Deletes the engines used longest ago (by mtime) until the rest fit in `max_bytes`,
    never `keep` (the one just built); also a dead builder's temporary files, and the lock
    files of engines gone that no builder holds. Returns the engines deleted.

    A process loading an engine as it goes still reads it (its open file outlives the
    name); one that finds it gone builds it again (`cached`)."""
    engines, now = [], time.time()
    for path in Path(directory).iterdir():
        try:
            info = path.stat()
        except FileNotFoundError:
            continue
        if path.name.startswith("."):  # a builder's temporary file
            if now - info.st_mtime > STALE_SECONDS:
                path.unlink(missing_ok=True)
        elif not path.name.endswith(".lock") and path.is_file():
            engines.append((info.st_mtime, info.st_size, path))
    engines.sort(key=lambda e: (e[2] == keep, e[0]), reverse=True)  # the one just built first, then by use
    total, deleted = 0, []
    for _, size, path in engines:
        total += size
        if total > max_bytes and path != keep:
            path.unlink(missing_ok=True)
            deleted.append(path)
            total -= size
    for lock in Path(directory).glob("*.lock"):
        if not lock.with_name(lock.name.removesuffix(".lock")).exists():
            _drop_unheld(lock)
    return deleted


def _drop_unheld(lock: Path) -> None:
    """Removes a lock file that no process holds (a builder that waits on it then builds twice, no worse)."""
    try:
        with open(lock, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            lock.unlink(missing_ok=True)
    except (BlockingIOError, FileNotFoundError):
        pass


def weights_digest(model: nn.Module) -> str:
    """A name for a snapshot's weights, for the engine cache."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


T = TypeVar("T")


def cached(path: Path, build: Callable[[], T], save: Callable[[T, Path], None], load: Callable[[Path], T]) -> T:
    """load(path) when the file exists; otherwise build() it once, however many processes ask.

    The file appears only whole: save(thing, temp) writes a temporary file
    in the same directory, which os.replace then renames to `path` (atomic
    on one file system), so a reader never loads half a file and needs no
    lock. Builders take an exclusive flock on `path` + ".lock" and look for
    the file again once they hold it: of processes that miss the cache
    together, the first builds and the others wait, then load its file. The
    lock file stays while its engine does (removing it would let a late
    process lock a file that no longer has a name: two builds, no worse); a
    builder that dies leaves at most a temporary file, and its lock goes
    with it. After a build, `prune` keeps the cache within its size.
    """
    path = Path(path)
    found = _load_if_there(path, load)
    if found is not None:
        return found[0]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        found = _load_if_there(path, load)  # built while this process waited
        if found is not None:
            return found[0]
        thing = build()
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp" + path.suffix)
        os.close(fd)
        try:
            save(thing, Path(temp))
            os.replace(temp, path)
        finally:
            if os.path.exists(temp):
                os.unlink(temp)
    prune(path.parent, tensorrt_cache_limit(), keep=path)
    return thing


def _load_if_there(path: Path, load: Callable[[Path], T]) -> tuple[T] | None:
    """(load(path),) and the file marked used, or None when there is none (or it was just pruned)."""
    try:
        os.utime(path)
        return (load(path),)
    except FileNotFoundError:
        return None
