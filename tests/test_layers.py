"""The package's folders are the pipeline: each stage imports only the stages below it (docs/design.md).

Every import of the package, at module level or inside a function, is read with ``ast`` and checked
against ``MAY_IMPORT``; imports between files must not form a cycle; no file is much over 400 lines.
The checks are tried on small hand-written packages first, so a checker that sees nothing fails.
"""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "hlora_mer"

# The stage of a module is its first folder under hlora_mer/; the modules at the top are the ground.
GROUND = "ground"
ROOT = "root"  # hlora_mer/__init__.py and __main__.py
STAGE_OF_TOP_MODULE = {"errors": GROUND, "files": GROUND, "config": GROUND, "run_folder": GROUND}

# Who may import whom (besides itself). The ground is errors, files, config and run_folder: no torch.
MAY_IMPORT: dict[str, set[str]] = {
    GROUND: set(),
    "data": {GROUND},
    "preprocess": {GROUND, "data"},
    "models": {GROUND, "data"},
    "viz": {GROUND, "data", "preprocess"},  # drawing from arrays and tables; preprocess: the clip cache
    "evaluation": {GROUND, "data", "preprocess", "viz"},  # reads predictions, never a model
    "training": {GROUND, "data", "preprocess", "models", "evaluation"},
    "inference": {GROUND, "data", "preprocess", "models", "training", "evaluation", "viz"},
    "synthme": {GROUND, "data", "models"},
    "cli": {GROUND, "data", "preprocess", "models", "viz", "evaluation", "training", "inference", "synthme"},
}
STAGES = {*MAY_IMPORT, ROOT}
MAY_IMPORT[ROOT] = STAGES - {ROOT}  # the root's public names are imported lazily from every stage
for _stage in MAY_IMPORT:
    MAY_IMPORT[_stage].add(ROOT)  # `from hlora_mer import __version__`

# Modules the ground must not import at module level (the ground loads without them).
HEAVY = {"torch", "transformers", "peft", "matplotlib", "av", "dlib", "mediapipe", "ray", "onnx", "onnxruntime"}

MAX_LINES = 420  # "about 400"

# While the regroup is under way the layout checks may fail; must end False.
REGROUP_IN_PROGRESS = True
in_progress = pytest.mark.xfail(REGROUP_IN_PROGRESS, reason="the regroup is under way", strict=False)


def module_name(path: Path, package: Path) -> str:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def stage_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1 or parts[1] in {"__main__"}:
        return ROOT
    return STAGE_OF_TOP_MODULE.get(parts[1], parts[1])


def imported_modules(path: Path, package: Path) -> list[tuple[str, int, bool]]:
    """(module, line, at module level) for every import of the package in one file."""
    name = module_name(path, package)
    top = package.name
    tree = ast.parse(path.read_text(), filename=str(path))
    module_level = {id(node) for node in tree.body}
    for node in tree.body:  # imports under a module-level `if TYPE_CHECKING:` or `try:` count as module level
        if isinstance(node, (ast.If, ast.Try)):
            module_level |= {id(n) for n in ast.walk(node)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.split(".")[0] != top:
                continue
            for alias in node.names:  # `from hlora_mer.x import y` where y is a module names y
                sub = f"{mod}.{alias.name}"
                as_module = (package.parent / sub.replace(".", "/")).with_suffix(".py").exists() or (
                    package.parent / sub.replace(".", "/") / "__init__.py"
                ).exists()
                found.append((sub if as_module else mod, node.lineno, id(node) in module_level))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == top:
                    found.append((alias.name, node.lineno, id(node) in module_level))
    return found


def heavy_imports(path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text())
    out = []
    for node in tree.body:
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [node.module]
        out += [(n, node.lineno) for n in names if n.split(".")[0] in HEAVY]
    return out


def upward_imports(package: Path) -> list[str]:
    bad = []
    for path in sorted(package.rglob("*.py")):
        importer = module_name(path, package)
        mine = stage_of(importer)
        for mod, line, _ in imported_modules(path, package):
            theirs = stage_of(mod)
            if theirs != mine and theirs not in MAY_IMPORT[mine]:
                bad.append(f"{path.relative_to(package.parent)}:{line}: {importer} ({mine}) imports {mod} ({theirs})")
    return bad


def import_graph(package: Path) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in sorted(package.rglob("*.py")):
        importer = module_name(path, package)
        graph.setdefault(importer, set())
        for mod, _, _ in imported_modules(path, package):
            if mod != importer and not importer.startswith(mod + "."):  # a module's own package __init__
                graph[importer].add(mod)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one file (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def long_files(package: Path) -> list[str]:
    return [
        f"{p.relative_to(package.parent)} ({n} lines)"
        for p in sorted(package.rglob("*.py"))
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    ]


@in_progress
def test_every_stage_imports_only_the_stages_below_it():
    bad = upward_imports(PACKAGE)
    assert not bad, "imports against the direction of the pipeline (tests/test_layers.py MAY_IMPORT):\n" + "\n".join(
        bad
    )


@in_progress
def test_no_import_cycle_between_files():
    assert not cycles(import_graph(PACKAGE))


def test_the_ground_loads_without_torch():
    ground = [p for p in sorted(PACKAGE.rglob("*.py")) if stage_of(module_name(p, PACKAGE)) == GROUND]
    assert {module_name(p, PACKAGE) for p in ground} >= {"hlora_mer.errors", "hlora_mer.files", "hlora_mer.config"}
    bad = [f"{p.name}:{line}: {mod}" for p in ground for mod, line in heavy_imports(p)]
    assert not bad


@in_progress
def test_no_file_is_much_over_400_lines():
    assert not long_files(PACKAGE)


def test_every_folder_has_a_stage_in_the_table():
    folders = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert folders <= set(MAY_IMPORT) | {"config"}


# The checks themselves, on packages written here: each must see what it guards.


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "hlora_mer"
    for rel, text in {"__init__.py": "", **files}.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def test_the_checker_sees_an_upward_import_inside_a_function(tmp_path):
    root = _package(
        tmp_path,
        {
            "errors.py": "",
            "models/__init__.py": "",
            "models/net.py": "from hlora_mer.errors import X\n",
            "evaluation/__init__.py": "",
            "evaluation/report.py": "def f():\n    from hlora_mer.models import net\n",
            "data/__init__.py": "",
            "data/table.py": "import hlora_mer.preprocess.run\n",
            "preprocess/__init__.py": "",
            "preprocess/run.py": "from . import cache\nfrom ..data.table import T\n",
            "preprocess/cache.py": "",
        },
    )
    bad = upward_imports(root)
    assert len(bad) == 2
    assert "hlora_mer.data.table (data) imports hlora_mer.preprocess.run (preprocess)" in bad[0]
    assert "hlora_mer.evaluation.report (evaluation) imports hlora_mer.models.net (models)" in bad[1]


def test_the_checker_sees_a_cycle_through_a_lazy_import(tmp_path):
    root = _package(
        tmp_path,
        {
            "viz/__init__.py": "",
            "viz/a.py": "from hlora_mer.viz.b import g\n",
            "viz/b.py": "def g():\n    from hlora_mer.viz import a\n",
            "viz/c.py": "from hlora_mer.viz.a import f\n",
        },
    )
    assert cycles(import_graph(root)) == [["hlora_mer.viz.a", "hlora_mer.viz.b"]]


def test_the_checker_sees_torch_in_the_ground_and_a_long_file(tmp_path):
    root = _package(tmp_path, {"files.py": "import os\nimport torch.nn\n" + "x = 1\n" * MAX_LINES})
    assert heavy_imports(root / "files.py") == [("torch.nn", 2)]
    assert long_files(root) == [f"hlora_mer/files.py ({MAX_LINES + 2} lines)"]


@pytest.mark.parametrize(
    ("module", "stage"),
    [
        ("hlora_mer", ROOT),
        ("hlora_mer.__main__", ROOT),
        ("hlora_mer.run_folder", GROUND),
        ("hlora_mer.config.model", GROUND),
        ("hlora_mer.data.annotations.labels", "data"),
    ],
)
def test_stage_of_a_module(module, stage):
    assert stage_of(module) == stage
