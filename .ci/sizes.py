"""The house's size rules, checked in CI: no function over 60 lines outside the
numba kernels (native/), no class in hexzd/daemon/ with over 25 methods.
Small pieces are what a reader can hold in their head; the kernels are exempt
because numba wants their hot loops whole."""

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MOST_LINES = 60
MOST_METHODS = 25
FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)


def too_big(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    where = path.relative_to(ROOT)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, FUNCTIONS) and node.end_lineno - node.lineno + 1 > MOST_LINES:
            found.append(f"{where}:{node.lineno}: {node.name} is {node.end_lineno - node.lineno + 1} lines")
        if isinstance(node, ast.ClassDef) and where.parts[:2] == ("hexzd", "daemon"):
            methods = sum(isinstance(item, FUNCTIONS) for item in node.body)
            if methods > MOST_METHODS:
                found.append(f"{where}:{node.lineno}: class {node.name} has {methods} methods")
    return found


def main() -> int:
    paths = [p for folder in ("hexzd", "tui") for p in sorted((ROOT / folder).rglob("*.py"))]
    found = [line for path in paths for line in too_big(path)]
    for line in found:
        print(line)
    print(f"sizes: {len(found)} over the limits ({MOST_LINES} lines a function, {MOST_METHODS} methods a daemon class)")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
