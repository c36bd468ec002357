"""The documentation: reference pages in step with the code, everything described, a short README."""

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def reference():
    """docs/reference.py, the script that writes the reference pages (it lives outside the package)."""
    spec = importlib.util.spec_from_file_location("docs_reference", ROOT / "docs" / "reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_reference_pages_say_what_the_code_says(reference):
    report = reference.differences()
    assert not report, "\n\n".join(report) + "\n\nrun `python docs/reference.py` and commit the pages"


def test_the_check_exits_1_with_a_diff_when_a_page_drifts(reference, tmp_path, monkeypatch, capsys):
    for path, text in reference.pages().items():
        (tmp_path / path.name).write_text(text)
    monkeypatch.setattr(reference, "OUT", tmp_path)
    assert reference.main(["--check"]) == 0
    stale = tmp_path / "config.md"
    stale.write_text(stale.read_text().replace("| live |", "| fixed |", 1))
    capsys.readouterr()
    assert reference.main(["--check"]) == 1
    out = capsys.readouterr()
    assert "config.md" in out.out and "-| " in out.out and "+| " in out.out
    assert "out of date" in out.err


def test_every_config_key_command_and_column_has_a_description(reference):
    assert reference.missing_descriptions() == []


def test_a_column_without_a_comment_is_found(reference):
    description, columns = reference.table_comments(
        "CREATE TABLE t (  -- a table\n"
        "    a INTEGER,  -- the first\n"
        "               -- and more of it\n"
        "    b TEXT CHECK (b IN ('x, y', 'z')),\n"
        "    c REAL,  -- the third\n"
        "    UNIQUE (a, b)  -- not a column\n"
        ", d REAL /* added later */)"
    )
    assert description == "a table"
    assert columns == {"a": "the first and more of it", "c": "the third", "d": "added later"}


def test_the_state_reference_lists_every_table_and_column_of_a_fresh_file(reference):
    schema = reference.state_schema()
    names = {t["name"]: [c["name"] for c in t["columns"]] for t in schema["tables"]}
    assert {"models", "games", "duels", "duel_games", "ratings", "meta"} <= set(names)
    assert "kept_from" in names["duels"] and "cpu_seconds" in names["models"]  # columns added by migrations
    assert {"rating_status", "pareto_front"} <= {v["name"] for v in schema["views"]}
    page = (ROOT / "docs" / "reference" / "state.md").read_text()
    for table, columns in names.items():
        assert f"`{table}`" in page
        assert all(f"| `{column}` |" in page for column in columns)


def test_the_readme_is_at_most_200_lines():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines: move the detail to docs/"


def test_the_readme_links_to_files_that_exist():
    text = (ROOT / "README.md").read_text()
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    local = [t for t in targets if not re.match(r"[a-z]+:", t)]
    assert local, "the README links to its docs"
    assert [t for t in local if not (ROOT / t).exists()] == []


def test_every_page_of_the_docs_is_in_the_site_nav():
    yaml = pytest.importorskip("yaml")
    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"]

    def pages(entry):
        if isinstance(entry, str):
            yield entry
        elif isinstance(entry, list):
            for item in entry:
                yield from pages(item)
        elif isinstance(entry, dict):
            for value in entry.values():
                yield from pages(value)

    listed = set(pages(nav))
    docs = ROOT / "docs"
    found = {str(p.relative_to(docs)) for p in docs.rglob("*.md")}
    assert found == listed


def named_modules(text: str) -> set[str]:
    """The source files (`hexzd/nn/net.py`) and modules (`hexzd.nn.loader`) that a page names in code spans."""
    files = set(re.findall(r"`((?:hexzd|native|tui|tests)/[\w/]+\.py)`", text))
    dotted = set(re.findall(r"`(hexzd(?:\.\w+)+)", text))
    return files | dotted


def exists(name: str) -> bool:
    """A file of the tree, or a dotted name: its longest module prefix a file or package of the
    tree, and the name after it (a function, a class: `hexzd.nn.net.planes`) a word of that module."""
    if name.endswith(".py"):
        return (ROOT / name).is_file()
    places = {"hexzd.native": "native", "hexzd.tui": "tui", "hexzd": "hexzd"}
    parts = name.split(".")
    for end in range(len(parts), 1, -1):
        module = ".".join(parts[:end])
        prefix = next(p for p in places if module == p or module.startswith(p + "."))
        path = ROOT / places[prefix] / Path(*module[len(prefix) :].strip(".").split("."))
        source = path.with_suffix(".py") if path.with_suffix(".py").is_file() else path / "__init__.py"
        if source.is_file():
            return end == len(parts) or re.search(rf"\b{parts[end]}\b", source.read_text()) is not None
    return False


def test_the_docs_name_only_modules_that_exist():
    pages = [ROOT / "README.md", *(p for p in (ROOT / "docs").rglob("*.md") if "reference" not in p.parts)]
    gone = {f"{page.relative_to(ROOT)}: {name}" for page in pages for name in named_modules(page.read_text())}
    gone = {entry for entry in gone if not exists(entry.split(": ", 1)[1])}
    assert gone == set(), "a module moved: update these pages"
