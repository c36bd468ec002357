"""The TensorRT engine cache keeps to a size: pruning, on fake engine files (no GPU needed)."""

import fcntl
import os
import time

import pytest

from hexzd.nn.backends import engine_cache
from hexzd.nn.backends.engine_cache import cached, prune

MB = 1_000_000


def fake_engine(directory, name: str, size: int, age: float):
    path = directory / name
    path.write_bytes(b"e" * size)
    os.utime(path, (time.time() - age, time.time() - age))
    return path


def test_the_engines_used_longest_ago_go_until_the_rest_fit(tmp_path):
    engines = [fake_engine(tmp_path, f"digest{k}-n9-b{k}.ep", MB, age=1000 - k) for k in range(10)]
    for path in engines:
        path.with_name(path.name + ".lock").touch()
    deleted = prune(tmp_path, 4.5 * MB, keep=engines[0])  # the oldest is the one just built: it stays
    assert sorted(deleted) == sorted(engines[1:7])
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted(
        [e.name for e in engines[:1] + engines[7:]] + [e.name + ".lock" for e in engines[:1] + engines[7:]]
    )


def test_a_held_lock_and_a_live_builders_temporary_file_stay(tmp_path):
    fake_engine(tmp_path, "new.ep", MB, age=0)
    held = tmp_path / "gone.ep.lock"
    stale = fake_engine(tmp_path, ".old.ep.abc.tmp.ep", MB, age=2 * engine_cache.STALE_SECONDS)
    live = fake_engine(tmp_path, ".new2.ep.abc.tmp.ep", MB, age=10)
    (tmp_path / "other.ep.lock").touch()
    with open(held, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # a builder at work on gone.ep
        prune(tmp_path, 10 * MB)
        assert held.exists()
    assert not stale.exists() and live.exists()
    assert not (tmp_path / "other.ep.lock").exists()


def test_cached_prunes_after_a_build_and_a_load_marks_an_engine_used(tmp_path, monkeypatch):
    monkeypatch.setenv("HEXZD_TRT_CACHE_MB", "2.5")
    old = [fake_engine(tmp_path, f"old{k}.ep", MB, age=100 + k) for k in range(3)]  # old0 newest

    def save(thing, path):
        path.write_bytes(thing)

    assert cached(tmp_path / "old2.ep", lambda: pytest.fail("built"), save, lambda p: p.read_bytes()) == b"e" * MB
    built = cached(tmp_path / "fresh.ep", lambda: b"f" * MB, save, lambda p: p.read_bytes())
    assert built == b"f" * MB
    assert sorted(p.name for p in tmp_path.glob("*.ep")) == ["fresh.ep", "old2.ep"]  # old2 was used just now
    assert not old[0].exists() and not old[1].exists()


def test_an_engine_pruned_while_a_process_looked_is_built_again(tmp_path):
    path = tmp_path / "x.ep"
    path.write_bytes(b"old")

    def load(p):
        raise FileNotFoundError(p)  # another process pruned it between the look and the load

    assert cached(path, lambda: b"new", lambda thing, p: p.write_bytes(thing), load) == b"new"
    assert path.read_bytes() == b"new"
