"""The floor plan of service/ (docs/architecture.md), checked from the code's own imports.

Every import points down or sideways: entry points -> api -> domain -> stores and clients -> model types and
observability. No package imports one on a higher floor, no two packages import each other (directly or round a
loop), and no module is longer than MAX_LINES.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

SERVICE = Path(__file__).resolve().parents[1] / "service"
MAX_LINES = 450
FLOORS = {
    # entry points: the app factory, the CLI, the wiring, the worker process, and the REST clients in tools/
    4: {"app", "cli", "wiring", "worker_process", "lifecycle", "tools", "__main__"},
    3: {"api"},
    2: {"search", "ingest", "documents", "jobs", "access", "snapshots"},
    1: {"store", "clients", "redis"},
    0: {"model", "observability", "settings", "__init__"},
}
FLOOR = {package: floor for floor, packages in FLOORS.items() for package in packages}


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"  # `service` itself: its __init__


def _is_module(name: str) -> bool:
    return (SERVICE / name).is_dir() or (SERVICE / f"{name}.py").is_file()


def _imports() -> dict[tuple[str, str], list[str]]:
    """(importing package, imported package) -> where."""
    edges: dict[tuple[str, str], list[str]] = defaultdict(list)
    for path in SERVICE.rglob("*.py"):
        module = ".".join(path.relative_to(SERVICE.parent).with_suffix("").parts).removesuffix(".__init__")
        package = _package(module) if "." in module else "__init__"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                targets = [node.module]
                if node.module == "service":  # `from service import x`: a module of the package, or its own attribute
                    targets = [f"service.{a.name}" if _is_module(a.name) else "service" for a in node.names]
            for target in targets:
                if target.startswith("service.") and _package(target) != package:
                    edges[(package, _package(target))].append(f"{path.relative_to(SERVICE.parent)}:{node.lineno}")
    return edges


def test_every_package_has_a_floor():
    packages = {p.name for p in SERVICE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    packages |= {p.stem for p in SERVICE.glob("*.py")}
    assert packages - FLOOR.keys() == set(), "new package: give it a floor in FLOORS and docs/architecture.md"


def test_no_import_points_up():
    upward = [
        f"{src} (floor {FLOOR[src]}) imports {dst} (floor {FLOOR[dst]}) at {where[0]}"
        for (src, dst), where in _imports().items()
        if FLOOR[dst] > FLOOR[src]
    ]
    assert upward == []


def test_no_cycle_between_packages():
    graph: dict[str, set[str]] = defaultdict(set)
    for src, dst in _imports():
        graph[src].add(dst)

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in graph[start]:
            if nxt == goal or (nxt not in seen and (seen.add(nxt) or reaches(nxt, goal, seen))):
                return True
        return False

    cycles = sorted(p for p in list(graph) if reaches(p, p, set()))
    assert cycles == [], f"packages on an import loop: {cycles}"


def test_no_module_is_too_long():
    long = {
        str(p.relative_to(SERVICE.parent)): n
        for p in SERVICE.rglob("*.py")
        if (n := p.read_text(encoding="utf-8").count("\n")) > MAX_LINES
    }
    assert long == {}
