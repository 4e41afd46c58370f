"""The package's modules import one another without cycles (issue 15): a module-level import
graph that is a DAG is what lets a reader take the files in order."""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

import csna

ROOT = Path(csna.__file__).parent


def _module(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _imports(path: Path, name: str, modules: set[str]) -> set[str]:
    """Modules of csna that ``path`` imports when it is imported: module-level statements,
    not ``if TYPE_CHECKING:`` blocks, not imports inside functions."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    stack = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.If, ast.Try)):
            stack.extend(node.body + node.orelse + getattr(node, "finalbody", []))
            for h in getattr(node, "handlers", []):
                stack.extend(h.body)
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.add(mod)
            found.update(f"{mod}.{a.name}" for a in node.names)  # `from . import losses`
    return {m for m in found if m in modules and m != name}


def test_the_module_import_graph_has_no_cycles():
    files = {_module(p): p for p in ROOT.rglob("*.py")}
    graph = nx.DiGraph()
    for name, path in files.items():
        graph.add_node(name)
        for dep in _imports(path, name, set(files)):
            # a package's __init__ importing its own submodules is not a cycle of concepts
            if not dep.startswith(name + ".") or path.name != "__init__.py":
                graph.add_edge(name, dep)
    cycles = list(nx.simple_cycles(graph))
    assert not cycles, f"import cycles: {cycles[:5]}"


def test_the_cycle_finder_sees_a_cycle(tmp_path):
    """The check above can fail: two modules importing each other are found."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "a.py").write_text("from . import b\n")
    (pkg / "b.py").write_text("from .a import x\n")
    mods = {"pkg.a", "pkg.b"}
    assert _imports(pkg / "a.py", "pkg.a", mods) == {"pkg.b"}
    assert _imports(pkg / "b.py", "pkg.b", mods) == {"pkg.a"}


def test_the_package_loads_its_public_names_on_first_use():
    """``import csna`` (what the CLI and every spawned ensemble worker pay) does not import the
    estimator and its scipy/DR/prediction stack; the public names still resolve to the real
    objects, and an unknown name is an AttributeError."""
    import subprocess
    import sys

    code = "\n".join([
        "import sys, csna",
        "assert 'csna.estimator' not in sys.modules, 'eager'",
        "from csna.estimator import CSNAEstimator",
        "from csna.config import load_config",
        "assert csna.CSNAEstimator is CSNAEstimator and csna.load_config is load_config",
        "assert 'CSNAModel' in dir(csna)",
        "try:\n    csna.nothing_here\nexcept AttributeError:\n    pass\nelse:\n    raise SystemExit('no error')",
    ])
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
