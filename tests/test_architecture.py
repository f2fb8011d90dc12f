"""Architecture gates (issue 12): size, complexity and maintainability of every module
in server/, and no import cycles. Each test names all of its offenders at once.

The same limits run as tools in scripts/test.sh: xenon (complexity) and lint-imports
(the import contracts in pyproject.toml, cycles included).
"""

from __future__ import annotations

from pathlib import Path

import grimp
from radon.complexity import cc_rank, cc_visit, sorted_results
from radon.metrics import mi_rank, mi_visit

SERVER = Path(__file__).resolve().parent.parent / "server"

# Cyclomatic complexity above 20 is radon grade D ("more than moderate risk"): such a
# function has more paths than its tests can plausibly cover. Split it into helpers.
MAX_COMPLEXITY = 20
# Maintainability index (radon's, 0-100) below 10 is radon grade C, "extremely low".
# The bar is not grade A (20): MI also falls with plain length (Halstead volume and
# lines), so a long module of simple declarations (the settings) would fail an A bar
# without being hard to maintain; MAX_LINES bounds length on its own.
MIN_MAINTAINABILITY = 10.0
# A module longer than this does more than one thing: split it along a seam.
MAX_LINES = 550


def _modules() -> list[tuple[str, str]]:
    return [
        (str(p.relative_to(SERVER.parent)), p.read_text(encoding="utf-8"))
        for p in sorted(SERVER.rglob("*.py"))
    ]


def test_no_function_above_complexity_limit() -> None:
    offenders = [
        f"{name}:{block.lineno} {block.fullname} has complexity {block.complexity} "
        f"(grade {cc_rank(block.complexity)})"
        for name, code in _modules()
        for block in sorted_results(cc_visit(code))
        if block.complexity > MAX_COMPLEXITY
    ]
    assert not offenders, (
        f"cyclomatic complexity above {MAX_COMPLEXITY} (radon grade D or worse); "
        "split these into well-named helpers:\n  " + "\n  ".join(offenders)
    )


def test_every_module_is_maintainable() -> None:
    offenders = []
    for name, code in _modules():
        mi = mi_visit(code, multi=True)  # as `radon mi`: docstrings count as comments
        if mi < MIN_MAINTAINABILITY:
            offenders.append(f"{name}: maintainability index {mi:.1f} (grade {mi_rank(mi)})")
    assert not offenders, f"maintainability index below {MIN_MAINTAINABILITY:g}:\n  " + "\n  ".join(
        offenders
    )


def test_no_module_over_line_limit() -> None:
    offenders = [
        f"{name}: {n} lines"
        for name, code in _modules()
        if (n := len(code.splitlines())) > MAX_LINES
    ]
    assert not offenders, (
        f"modules over {MAX_LINES} lines; split them along a seam:\n  " + "\n  ".join(offenders)
    )


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """The import graph's strongly connected components of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's algorithm; the graph is shallow (~150 modules)
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.find_modules_directly_imported_by(v):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for m in sorted(graph.modules):
        if m not in index:
            visit(m)
    return found


def test_no_import_cycles() -> None:
    # Imports under TYPE_CHECKING count: a type-only cycle still ties the modules
    # together (neither can be understood, tested or moved without the other).
    graph = grimp.build_graph("server", cache_dir=None)
    loops: set[tuple[str, ...]] = set()
    for component in _cycles(graph):
        # every import inside a component closes a loop: name the shortest one through it
        for a in component:
            for b in graph.find_modules_directly_imported_by(a):
                chain = (
                    graph.find_shortest_chain(importer=b, imported=a) if b in component else None
                )
                if chain:
                    loop = (a, *chain)
                    start = loop.index(min(loop))  # one rotation, so each loop shows once
                    loops.add(loop[start:-1] + loop[:start] + (loop[start],))
    shown = sorted(loops, key=lambda loop: (len(loop), loop))
    assert not shown, "import cycles in server/ (each line one loop of imports):\n  " + (
        "\n  ".join(" -> ".join(loop) for loop in shown)
    )
