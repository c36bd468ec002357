"""Every test, and every test module's shared fixtures, run with HOME in a fresh temporary
folder: the daemons they start keep their reference ladder games in ~/.cache/hexzd
(`[ratings] ladder_file`), and one test's run must not start from another's, nor from the
user's. (One HOME for the whole session once let the default-config daemon test's ladder
games reach the report test's run, whose wait for a rated snapshot went from 37 s to 142 s.)"""

import os
import tempfile

import pytest

os.environ["HOME"] = tempfile.mkdtemp(prefix="hexzd-home-")  # for what runs before any fixture


def _fresh_home(factory):
    home, os.environ["HOME"] = os.environ["HOME"], str(factory.mktemp("home"))
    yield
    os.environ["HOME"] = home


def pytest_collection_modifyitems(config, items):
    """Slow tests run only when -m names them (`pytest -m slow`), so that `pytest`,
    `pytest -m "not e2e"` and `pytest -m e2e` all leave them out."""
    if "slow" in (config.option.markexpr or ""):
        return
    slow = [item for item in items if item.get_closest_marker("slow")]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if not item.get_closest_marker("slow")]


@pytest.fixture(autouse=True, scope="module")
def module_home(tmp_path_factory):
    """A module's shared fixtures (a daemon started once for the module) start in a HOME of their own."""
    yield from _fresh_home(tmp_path_factory)


@pytest.fixture(autouse=True)
def fresh_home(tmp_path_factory):
    yield from _fresh_home(tmp_path_factory)
