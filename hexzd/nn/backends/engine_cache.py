"""The TensorRT engines' disk cache: where it is, what names a snapshot's weights, and build-once files."""

import fcntl
import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from torch import nn

__all__ = ["cached", "tensorrt_cache_dir", "weights_digest"]


def tensorrt_cache_dir() -> Path:
    return Path(os.environ.get("HEXZD_TRT_CACHE", Path.home() / ".cache" / "hexzd" / "tensorrt"))


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
    lock file stays (removing it would let a late process lock a file that
    no longer has a name); a builder that dies leaves at most a temporary
    file, and its lock goes with it.
    """
    path = Path(path)
    if path.exists():
        return load(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if path.exists():  # built while this process waited
            return load(path)
        thing = build()
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp" + path.suffix)
        os.close(fd)
        try:
            save(thing, Path(temp))
            os.replace(temp, path)
        finally:
            if os.path.exists(temp):
                os.unlink(temp)
        return thing
