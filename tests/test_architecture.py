"""The rules of ARCHITECTURE.md, checked from the code itself so they stay true.

- Dependencies run one way: each part of the package may import only the parts listed for it in
  `ALLOWED` (itself included); imports inside functions count as much as those at the top.
- No import cycles between modules.
- No module over `MAX_CODE_LINES` lines of code (blank lines, comments and docstrings aside).
- typer and rich are imported only under `crome/cli/`; nothing imports `crome.cli` but the two
  `__main__` entry points, which are run (`python -m crome`, `python -m crome.train`), never imported.
"""

from __future__ import annotations

import ast
import io
import tokenize
from collections import defaultdict
from pathlib import Path

from paths import REPO

PACKAGE = REPO / "crome"
MAX_CODE_LINES = 400

# Part of the package -> the parts it may import. A part is the longest prefix listed here.
ALLOWED: dict[str, set[str]] = {
    "crome": set(),  # the root package: __version__ only
    "crome.schemas": set(),
    "crome.text": set(),
    "crome.outputs": set(),  # output folders: ownership marker, atomic exports (a leaf: run, hub and train write folders)
    "crome.prompts": {"crome.schemas"},
    "crome.builder.sources": {"crome.schemas", "crome.text"},
    "crome.builder.store": {"crome.schemas"},
    "crome.builder.oracles": {"crome.schemas", "crome.text"},
    "crome.builder.stages": {"crome.schemas", "crome.text", "crome.prompts", "crome.builder.oracles"},
    "crome.builder.run": {
        "crome.schemas", "crome.text", "crome.outputs", "crome.prompts", "crome.builder.sources", "crome.builder.store",
        "crome.builder.oracles", "crome.builder.stages",
    },
    # hub -> stages: the audit runs the shortcut finder the build's neutralise stage uses (stages/shortcut_find.py);
    # run already imports stages and hub imports run, so the arrow adds no cycle.
    "crome.builder.hub": {
        "crome.schemas", "crome.text", "crome.outputs", "crome.builder.sources", "crome.builder.store", "crome.builder.run",
        "crome.builder.stages",
    },
    "crome.train": {"crome.schemas", "crome.text", "crome.outputs", "crome.builder.sources"},
    "crome.cli": {"*"},
}
# Run as scripts, never imported: they may start the CLI.
ENTRY_POINTS = {"crome.__main__", "crome.train.__main__"}
UI_LIBRARIES = ("typer", "rich", "click")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def part_of(name: str) -> str:
    best = "crome"
    for part in ALLOWED:
        if (name == part or name.startswith(part + ".")) and len(part) > len(best):
            best = part
    return best


def imports(path: Path, name: str) -> set[str]:
    """Every module name imported anywhere in the file (absolute, relative resolved)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            # `from crome.builder import sources` imports the module crome.builder.sources
            found.update(f"{base}.{a.name}" for a in node.names)
    return found


def internal_graph() -> dict[str, set[str]]:
    mods = modules()
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        deps = set()
        for imp in imports(path, name):
            if imp in mods and imp != name:
                deps.add(imp)
        graph[name] = deps
    return graph


def code_lines(path: Path) -> int:
    """Lines holding code: not blank, not only a comment, not part of a docstring."""
    source = path.read_text()
    doc_lines: set[int] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                doc_lines.update(range(first.lineno, first.end_lineno + 1))
    lines: set[int] = set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER):
            continue
        lines.update(range(tok.start[0], tok.end[0] + 1))
    return len(lines - doc_lines)


def test_every_module_belongs_to_a_known_part() -> None:
    # crome/builder/__init__.py only makes the folder a package; any module in it would be a stray.
    unknown = [n for n in modules() if part_of(n) == "crome" and n not in ("crome", "crome.__main__", "crome.builder")]
    assert not unknown, f"modules outside the parts ARCHITECTURE.md names: {unknown}"


def test_dependencies_run_one_way() -> None:
    bad = []
    for name, deps in internal_graph().items():
        if name in ENTRY_POINTS:
            continue
        mine = part_of(name)
        allowed = ALLOWED[mine]
        for dep in deps:
            theirs = part_of(dep)
            if theirs == mine or "*" in allowed or theirs in allowed or dep == "crome":
                continue
            bad.append(f"{name} imports {dep} ({mine} may import only {sorted(allowed) or 'itself'})")
    assert not bad, "\n".join(sorted(bad))


def test_no_import_cycles() -> None:
    graph = internal_graph()
    # Tarjan's strongly connected components; a component of more than one module is a cycle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    # A package's __init__ re-exporting its own modules is not a cycle worth reporting when
    # those modules do not import the package back; Tarjan finds only real cycles anyway.
    assert not cycles, f"import cycles: {cycles}"


def test_modules_stay_small() -> None:
    big = {n: code_lines(p) for n, p in modules().items()}
    over = {n: c for n, c in big.items() if c > MAX_CODE_LINES}
    assert not over, f"modules over {MAX_CODE_LINES} lines of code: {over}"


def test_only_the_cli_imports_typer_or_rich() -> None:
    bad = []
    for name, path in modules().items():
        if part_of(name) == "crome.cli":
            continue
        for imp in imports(path, name):
            if imp.split(".")[0] in UI_LIBRARIES:
                bad.append(f"{name} imports {imp}")
    assert not bad, "\n".join(bad)


def test_nothing_imports_the_cli() -> None:
    importers = defaultdict(list)
    for name, deps in internal_graph().items():
        for dep in deps:
            if part_of(dep) == "crome.cli" and part_of(name) != "crome.cli" and name not in ENTRY_POINTS:
                importers[dep].append(name)
    assert not importers, dict(importers)


def test_the_checker_sees_imports_inside_functions(tmp_path: Path) -> None:
    """A lazy import is still a dependency: the checker must not miss it."""
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from crome.cli import app\n    import rich.console\n")
    assert {"crome.cli", "crome.cli.app", "rich.console"} <= imports(f, "crome.x.m")
    g = tmp_path / "n.py"
    g.write_text('"""Doc\n\nmore."""\n\n# comment\nx = 1\n\n\ndef f():\n    """One."""\n    return x\n')
    assert code_lines(g) == 3


def test_ray_is_imported_only_inside_the_executor_and_only_when_it_runs() -> None:
    # Ray is an optional extra (crome[ray]): importing crome, or running any other command, must not need it.
    where = []
    for name, path in modules().items():
        tree = ast.parse(path.read_text())
        top = {id(n) for n in tree.body}
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if any(n == "ray" or n.startswith("ray.") for n in names):
                where.append((name, id(node) in top))
    assert where and all(name == "crome.builder.run.executor" and not at_top for name, at_top in where), where
