"""The package's layering, read from the source: no import cycles (neither among the
imports that run when a module is imported nor among all imports, those inside
functions included), a core that never reaches up into training, tasks, plots, runs,
sweeps or the command line, a run layer and sweeps that never import the command line,
and no file that points at documents outside the repository."""
import ast
import re
import subprocess
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parent.parent
# module name -> file; backends/ installs as rgraph.backends (pyproject's package-dir)
SOURCES = {"rgraph": ROOT / "rgraph", "rgraph.backends": ROOT / "backends"}

# the compiler: DSL and IR, ops, kernels, analysis, differentiation, code generation
CORE = ("graph", "ops", "scalars", "kernel", "layout", "schedule", "analysis", "autodiff",
        "codegen", "losses", "backends")
# what is built on top of it and must stay out of it
UPPER = ("training", "tasks", "plots", "run", "sweeps", "cli", "demo")


def modules(sources=SOURCES) -> dict:
    """Every module of the package: dotted name -> path."""
    found = {}
    for package, folder in sources.items():
        for path in sorted(folder.rglob("*.py")):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join([package, *parts])] = path
    return found


MODULES = modules()


def _in_package(name, table):
    return table[name].name == "__init__.py"


def _resolve(importer, node, table):
    """The modules of the package (``table``) that one import statement names."""
    if isinstance(node, ast.Import):
        targets = [alias.name for alias in node.names]
    else:
        if node.level:
            base = importer.split(".")
            base = base[:len(base) - node.level + (1 if _in_package(importer, table) else 0)]
            if node.module:
                base += node.module.split(".")
            base = ".".join(base)
        else:
            base = node.module
        # from a package import a submodule, or a name defined in the package
        targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in table else base
                   for a in node.names]
    out = []
    for t in targets:
        while t and t not in table:            # rgraph.x.name -> rgraph.x
            t = t.rpartition(".")[0]
        if t:
            out.append(t)
    return out


def _is_type_checking(node):
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imports(name, module_level_only, table=MODULES):
    """The package modules ``name`` imports: those run when it is imported
    (module_level_only: statements outside functions), or every import anywhere in the
    file; ``if TYPE_CHECKING`` blocks never run, so never count."""
    tree = ast.parse(table[name].read_text(), str(table[name]))
    found = set()

    def visit(node):
        for child in ast.iter_child_nodes(node):
            if _is_type_checking(child) or module_level_only and \
                    isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                found.update(_resolve(name, child, table))
            visit(child)
    visit(tree)
    return found - {name}


def import_graph(module_level_only=True, table=MODULES):
    """Imports (module-level only, or all of them), plus the packages Python initializes
    on the way: importing rgraph.training.loop runs rgraph/training/__init__.py first
    (except for modules inside that package, which their package is already
    initializing, and for the root package, which every import passes through)."""
    g = nx.DiGraph()
    g.add_nodes_from(table)
    for name in table:
        for target in imports(name, module_level_only, table):
            g.add_edge(name, target)
            parts = target.split(".")
            for i in range(2, len(parts)):
                parent = ".".join(parts[:i])
                if parent in table and not (name == parent or name.startswith(parent + ".")):
                    g.add_edge(name, parent)
    return g


def test_the_module_list_is_the_package():
    for name in ("rgraph", "rgraph.api", "rgraph.graph", "rgraph.training.trainer",
                 "rgraph.tasks.base", "rgraph.estimators.names", "rgraph.backends"):
        assert name in MODULES, name


def cycles(g) -> list:
    """One cycle, written out, per strongly connected group of modules."""
    found = []
    for scc in nx.strongly_connected_components(g):
        if len(scc) > 1 or any(g.has_edge(m, m) for m in scc):
            cycle = nx.find_cycle(g.subgraph(scc))
            found.append(" -> ".join([a for a, _ in cycle] + [cycle[0][0]]))
    return found


def test_no_import_cycles():
    found = cycles(import_graph())
    assert not found, "import cycles (module-level imports):\n  " + "\n  ".join(found)


def test_no_import_cycles_counting_every_import():
    """A cycle through an import inside a function is a cycle too: the modules cannot be
    understood, tested or moved one without the other."""
    found = cycles(import_graph(module_level_only=False))
    assert not found, "import cycles (every import, functions included):\n  " + \
        "\n  ".join(found)


def test_the_strict_cycle_check_sees_imports_inside_functions(tmp_path):
    """On a toy package: ``a`` imports ``b`` at module level, ``b`` imports ``a`` inside
    a function (a cycle only the strict graph sees) and ``c`` inside ``if
    TYPE_CHECKING`` (no cycle for either graph)."""
    pkg = tmp_path / "toy"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from . import b, c\n")
    (pkg / "b.py").write_text("def f():\n    from .a import g\n    return g\n")
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\n"
                              "if TYPE_CHECKING:\n    from .a import g\n")
    table = modules({"toy": pkg})
    assert cycles(import_graph(module_level_only=False, table=table)) == \
        ["toy.a -> toy.b -> toy.a"]
    assert cycles(import_graph(module_level_only=True, table=table)) == []
    # the package's own graph has edges only the strict one sees: lazy imports
    strict, lazy = import_graph(module_level_only=False), import_graph()
    assert strict.has_edge("rgraph.variance", "rgraph.sweeps.engine")
    assert not lazy.has_edge("rgraph.variance", "rgraph.sweeps.engine")


def test_the_cycle_check_can_fail():
    """The graph sees the API reach the trainer, so an import back would close a cycle,
    and a cycle is reported by name."""
    assert nx.has_path(import_graph(), "rgraph.api", "rgraph.training.trainer")
    toy = nx.DiGraph([("rgraph.api", "rgraph.training"), ("rgraph.training", "rgraph.api"),
                      ("rgraph.graph", "rgraph.graph")])
    assert sorted(cycles(toy)) == ["rgraph.api -> rgraph.training -> rgraph.api",
                                   "rgraph.graph -> rgraph.graph"]


def _layer(name, layer):
    return any(name == f"rgraph.{m}" or name.startswith(f"rgraph.{m}.") for m in layer)


def test_the_core_never_imports_training_tasks_plots_runs_sweeps_or_the_cli():
    core = [m for m in MODULES if _layer(m, CORE)]
    assert {"rgraph.graph", "rgraph.autodiff", "rgraph.codegen", "rgraph.backends"} <= \
        set(core)
    bad = [f"{m} imports {t}" for m in sorted(core)
           for t in sorted(imports(m, module_level_only=False)) if _layer(t, UPPER)]
    assert not bad, "the core reaches up (any import, functions included):\n  " + \
        "\n  ".join(bad)


def test_the_run_layer_and_the_sweeps_never_import_the_command_line():
    """``rgraph train`` and ``rgraph sweep`` are built on the run layer and the sweeps,
    which ``rg.sweep`` uses without any command line."""
    below = [m for m in MODULES if _layer(m, ("run", "sweeps"))]
    assert {"rgraph.run.config", "rgraph.sweeps.engine", "rgraph.sweeps.driver"} <= \
        set(below)
    bad = [f"{m} imports {t}" for m in sorted(below)
           for t in sorted(imports(m, module_level_only=False))
           if _layer(t, ("cli",)) or t == "rgraph"]
    assert not bad, "the run layer or the sweeps import the command line or the root " \
        "package (any import):\n  " + "\n  ".join(bad)


# documents that live beside the repository, not in it; shared/data is data (the text
# files data_dir() falls back to), not documentation
OUTSIDE_DOCS = re.compile(r"\b(DESIGN|NUMBA_NOTES|REVIEW|ESTIMATORS|PEERS|STYLE)\.md\b"
                          r"|shared/(?!data\b)")


def test_no_file_points_at_documents_outside_the_repository():
    try:
        listed = subprocess.run(["git", "ls-files", "--cached", "--others",
                                 "--exclude-standard"], cwd=ROOT, capture_output=True,
                                text=True, check=True).stdout.split("\n")
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    me = Path(__file__).resolve()
    bad = []
    for rel in filter(None, listed):
        path = ROOT / rel
        if path.resolve() == me or not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue                                     # not text
        for i, line in enumerate(text.splitlines(), 1):
            if OUTSIDE_DOCS.search(line):
                bad.append(f"{rel}:{i}: {line.strip()}")
    assert not bad, "references to documents outside the repository:\n  " + "\n  ".join(bad)
