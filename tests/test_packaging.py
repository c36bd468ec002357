"""The install ships every package: pyproject.toml lists them by hand (native/ and tui/ map into hexzd)."""

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def package_name(init: Path) -> str:
    relative = init.parent.relative_to(ROOT / "hexzd")
    return ".".join(("hexzd", *relative.parts))


def test_every_package_of_the_tree_is_installed():
    setup = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = {package_name(init) for init in (ROOT / "hexzd").rglob("__init__.py")}
    assert set(setup["packages"]) == found | {"hexzd.native", "hexzd.tui"}
    assert setup["package-dir"] == {"hexzd": "hexzd", "hexzd.native": "native", "hexzd.tui": "tui"}
