"""The package's shape: imports point one way, the paper's numbers are written once, docs/architecture.md is true."""
from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

import nin
from nin.experiments.paper import EXPERIMENTS
from nin.train import list_recipes, load_recipe

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src" / "nin"
INFERENCE = ["nin.inference.trained", "nin.inference.predict", "nin.inference.explain", "nin.inference.export",
             "nin.inference.weights", "nin.inference.evaluate", "nin.inference.quantize", "nin.inference.caffe",
             "nin.checkpoint", "nin.data", "nin.models"]
LAZY_IMPORTS_ALLOWED = {"cli.py"}  # one handler per command imports that command's module only when it runs


def _modules() -> dict[str, Path]:
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def _imports(path: Path, modules: dict[str, Path], top_level: bool) -> set[str]:
    """The nin modules that ``path`` imports at module level (or, with ``top_level=False``, inside functions)."""
    tree = ast.parse(path.read_text())
    level = {id(node) for node in tree.body}
    found = set()
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Import, ast.ImportFrom)) or (id(node) in level) != top_level:
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            targets = [node.module or ""] + [f"{node.module}.{alias.name}" for alias in node.names]
        found |= {t for t in targets if t in modules}
    return found


def test_inference_imports_no_training_experiments_or_benchmarks() -> None:
    """A user who loads weights to predict needs the inference modules only: a fresh interpreter that imports them
    must not load nin.train (and its tqdm loop), nin.experiments or nin.bench. (torch itself imports tqdm, so the
    check is on what nin adds.)"""
    code = ("import sys, torch; before = set(sys.modules)\n"
            f"for name in {INFERENCE!r}: __import__(name)\n"
            "added = sorted(m for m in set(sys.modules) - before if m.startswith(('nin.train', 'nin.experiments', "
            "'nin.bench', 'tqdm')))\n"
            "print(added)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out


def test_no_import_cycles_between_modules() -> None:
    modules = _modules()
    graph = {name: _imports(path, modules, top_level=True) - {name} for name, path in modules.items()}
    visiting, done, cycles = [], set(), []

    def visit(name: str) -> None:
        if name in done:
            return
        if name in visiting:
            cycles.append(visiting[visiting.index(name):] + [name])
            return
        visiting.append(name)
        for target in sorted(graph[name]):
            visit(target)
        visiting.pop()
        done.add(name)

    for name in sorted(graph):
        visit(name)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_no_function_level_imports_of_our_modules() -> None:
    """A function-level import can hide a cycle; only the CLI's per-command handlers may import lazily."""
    modules = _modules()
    hidden = {str(path.relative_to(PACKAGE)): sorted(_imports(path, modules, top_level=False))
              for path in modules.values() if path.name not in LAZY_IMPORTS_ALLOWED}
    assert {k: v for k, v in hidden.items() if v} == {}


def test_the_layers_import_downward_only() -> None:
    """layers -> models -> data -> inference -> train -> experiments: no floor imports one above it."""
    floors = ["nin.errors", "nin.utils", "nin.layers", "nin.models", "nin.data", "nin.checkpoint", "nin.inference",
              "nin.train", "nin.experiments", "nin.bench", "nin.cli"]

    def floor(name: str) -> int:
        return max(i for i, prefix in enumerate(floors) if name == prefix or name.startswith(prefix + "."))

    modules = _modules()
    upward = [(name, target) for name, path in modules.items() if name not in ("nin", "nin.__main__")
              for target in _imports(path, modules, top_level=True)
              if target != "nin" and floor(target) > floor(name)]
    assert upward == []


def test_every_recipe_carries_the_papers_number_for_its_row() -> None:
    """The paper's numbers live in nin.experiments.paper; a recipe's paper_error must be its row's number."""
    rows = {row.recipe: row.error for e in EXPERIMENTS.values() for row in e.rows if row.recipe}
    for name in list_recipes():
        recipe = load_recipe(name)
        if name in rows and recipe.paper_ref.lower().startswith(("table", "figure", "section")):
            assert recipe.paper_error == rows[name], name


def test_the_registry_quotes_the_papers_numbers() -> None:
    """A model's registry text that names a paper row quotes that row's number."""
    numbers = {row.error for e in EXPERIMENTS.values() for row in e.rows}
    for name in nin.list_models():
        quoted = re.findall(r"\((\d+\.\d+)%", nin.model_info(name).paper)
        if quoted and "Caffe" not in nin.model_info(name).paper:
            assert float(quoted[0]) in numbers, (name, nin.model_info(name).paper)


def test_docs_architecture_names_only_modules_that_exist() -> None:
    text = (REPO / "docs" / "architecture.md").read_text()
    named = set(re.findall(r"`(nin(?:\.\w+)+)`", text))
    modules = _modules()
    assert named, "docs/architecture.md names no module"
    missing = sorted(n for n in named if n not in modules and n.rsplit(".", 1)[0] not in modules)
    assert missing == [], f"docs/architecture.md names modules that do not exist: {missing}"
    for path in re.findall(r"`src/nin/([\w/]+\.py)`", text):
        assert (PACKAGE / path).is_file(), path


@pytest.mark.parametrize("module", sorted(_modules()))
def test_every_module_says_why_it_exists(module: str) -> None:
    path = _modules()[module]
    assert ast.get_docstring(ast.parse(path.read_text())), f"{path.relative_to(REPO)} has no module docstring"
