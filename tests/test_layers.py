"""The package's wings import in one direction only (docs/architecture.md draws them).

Every module under ``imlscan/`` is parsed, with the imports inside functions counted too (a lazy
import hides a cycle, it does not remove it). Three rules:

- no import cycle between modules;
- ``imlscan.cli`` is imported only from inside ``imlscan/cli/`` (the library never reaches up to
  the command line: it reports through callbacks);
- a module imports only its own wing or the wings below it, in this order, top to bottom:
  ``cli -> train, calibrate -> eval -> scanning -> weights -> models -> data, imageio, device -> leaves``
  (leaves: errors, fsutil, defaults, jpegtables, safetext, inputgate, _version).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "imlscan"

# wing -> rank; a module may import wings of a lower rank, and its own wing.
RANKS = {
    "leaves": 0,
    "data": 1,
    "imageio": 1,
    "device": 1,
    "models": 2,
    "weights": 3,
    "scanning": 4,
    "eval": 5,
    "train": 6,
    "calibrate": 6,
    "cli": 7,
    "facade": 8,
}
LEAVES = {"errors", "fsutil", "defaults", "jpegtables", "safetext", "inputgate", "_version"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def wing(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1 or parts[1] == "__main__":
        return "facade"
    head = parts[1]
    if head in LEAVES:
        return "leaves"
    if head not in RANKS:
        raise AssertionError(f"{module}: not in any wing; add it to RANKS and to docs/architecture.md")
    return head


def imports_of(module: str, path: Path, known: set[str]) -> set[str]:
    """The imlscan modules that ``module`` imports, resolved to modules (not names inside them)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            targets = [f"{origin}.{a.name}" if f"{origin}.{a.name}" in known else origin for a in node.names]
        else:
            continue
        for target in targets:
            if target == "imlscan" or target.startswith("imlscan."):
                while target not in known:
                    target = target.rpartition(".")[0]
                if target != module:
                    found.add(target)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {m: imports_of(m, p, set(mods)) for m, p in mods.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        stack.pop()
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def violations(edges: dict[str, set[str]]) -> list[str]:
    found = []
    for module, targets in sorted(edges.items()):
        src = wing(module)
        for target in sorted(targets):
            dst = wing(target)
            if dst == "cli" and src not in ("cli", "facade"):
                found.append(f"{module} imports {target}: the command line is imported only inside imlscan/cli/")
            elif dst == "facade" and src != "facade":
                found.append(f"{module} imports {target}: import the module itself, not the package facade")
            elif src != dst and RANKS[dst] >= RANKS[src]:
                found.append(f"{module} ({src}) imports {target} ({dst}): against the wing order")
    return found


def test_no_import_cycle():
    assert find_cycle(graph()) is None, f"import cycle: {' -> '.join(find_cycle(graph()))}"


def test_imports_follow_the_wing_order_and_only_cli_imports_cli():
    assert violations(graph()) == []


def test_every_module_belongs_to_a_wing():
    for module in modules():
        assert wing(module) in RANKS


def test_the_checks_catch_what_they_are_meant_to_catch():
    """The rules themselves, on a made-up graph: each kind of fault is reported."""
    edges = {
        "imlscan.models.registry": {"imlscan.scanning.predict"},  # upward
        "imlscan.scanning.batch": {"imlscan.cli.app"},  # library -> CLI
        "imlscan.train.trainer": {"imlscan.calibrate"},  # sideways between wings of one rank
        "imlscan.eval.metrics": {"imlscan"},  # through the facade
        "imlscan.scanning.predict": {"imlscan.weights.store", "imlscan.scanning.result"},  # fine
    }
    found = violations(edges)
    assert len(found) == 4 and not any(f.startswith("imlscan.scanning.predict") for f in found)
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("source", ["def f():\n    from imlscan.cli.app import err_console\n"])
def test_lazy_imports_inside_functions_are_counted(tmp_path, source):
    path = ROOT / "scanning" / "batch.py"  # a real module name, parsed from a made-up source
    fake = tmp_path / "batch.py"
    fake.write_text(source)
    known = set(modules())
    found = imports_of("imlscan.scanning.batch", fake, known)
    assert found == {"imlscan.cli.app"} and path.exists()
