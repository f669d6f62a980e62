"""The house rules, checked: the layering (import-linter), no cycle hidden in a function, relative imports
inside harness/, plugins and scripts that import only the public API, no side effects at import, small subpackages."""
from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HARNESS = ROOT / "harness"
HEAVY = ("torch", "transformers", "matplotlib", "lm_eval", "ray", "datasets", "datasette", "tqdm", "peft")

# The only prunebench modules a function may import: each loads a heavy library at import, and is
# imported late so that a light path (`prunebench --help`, `validate`, `import prunebench`, a plugin
# module the registry imports) does not load it. Anything else goes at the top of the module.
HEAVY_GUARDS = {
    "prunebench.models.walk": "torch: the decoder walk",
    "prunebench.models.structure": "torch: coupled structures and their removal",
    "prunebench.models.sparse_checkpoint": "torch, compressed-tensors: sparse checkpoints",
    "prunebench.pruning.engine": "torch: the unstructured pass",
    "prunebench.pruning.structured_engine": "torch: the structured pass",
    "prunebench.pruning.accumulate": "torch: calibration statistics",
    "prunebench.metrics.perplexity": "torch: perplexity",
    "prunebench.metrics.measurements": "torch: size, memory and speed",
    "prunebench.metrics.uncertainty": "torch: bootstrap intervals",
    "prunebench.metrics.lm_scoring": "lm_eval, torch: zero-shot scoring",
    "prunebench.grid.runner": "torch: running a grid",
    "prunebench.grid.executors": "torch (and ray when used): the Ray executor",
    "prunebench.cli.bench": "torch: `prunebench bench`",
    "prunebench.report.tables": "torch (intervals), matplotlib (plots): `prunebench report`",
    "prunebench.report.site": "torch, matplotlib: `prunebench report --format html`",
    "prunebench.report.claims": "torch (intervals): `prunebench report --claims`",
}


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(HARNESS.rglob("*.py")):
        parts = ("prunebench",) + path.relative_to(HARNESS).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imported(name: str, path: Path, node: ast.ImportFrom) -> list[str]:
    """The prunebench modules an ImportFrom names (a module imported from a package counts as itself)."""
    if node.level:
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
    else:
        base = node.module or ""
    if not base.startswith("prunebench"):
        return []
    modules = _modules()
    return [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]


def _function_imports(path: Path) -> list[ast.ImportFrom]:
    tree = ast.parse(path.read_text())
    found = []
    for function in ast.walk(tree):
        if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            found += [n for n in ast.walk(function) if isinstance(n, ast.ImportFrom)]
    return list(dict.fromkeys(found))


def test_no_function_level_import_of_prunebench_but_the_heavy_guards():
    hidden = []
    for name, path in _modules().items():
        for node in _function_imports(path):
            for target in _imported(name, path, node):
                if target not in HEAVY_GUARDS:
                    hidden.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {target} inside a function")
    assert not hidden, "\n".join(hidden)


@pytest.mark.parametrize("module", sorted(HEAVY_GUARDS))
def test_each_heavy_guard_loads_a_heavy_library(module):
    """An entry earns its place only if importing it really loads something heavy."""
    code = (f"import sys, importlib; importlib.import_module({module!r}); "
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert loaded.stdout.strip() != "[]", f"{module} loads none of {HEAVY}: import it at the top instead"


def test_import_prunebench_has_no_side_effects():
    code = ("import sys; before = list(sys.meta_path); import prunebench; "
            f"print(sys.meta_path == before, sorted(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split() == ["True", "[]"], out.stdout


# lm-eval loads the offline tasks' builder by file path (a task YAML's !function), outside the package.
LOADED_BY_PATH = {HARNESS / "metrics" / "tasks" / "lastword.py"}


def test_harness_imports_its_own_modules_relatively():
    absolute = [f"{path.relative_to(ROOT)}:{node.lineno}" for path in set(HARNESS.rglob("*.py")) - LOADED_BY_PATH
                for node in ast.walk(ast.parse(path.read_text()))
                if (isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").startswith("prunebench"))
                or (isinstance(node, ast.Import) and any(a.name.startswith("prunebench") for a in node.names))]
    assert not absolute, absolute


@pytest.mark.parametrize("folder", ["plugins", "baselines", "scripts"])
def test_plugins_and_scripts_import_only_the_public_api(folder):
    allowed = ("prunebench", "prunebench.plugins", "prunebench.baselines")
    wrong = []
    for path in (ROOT / folder).glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else \
                [a.name for a in node.names] if isinstance(node, ast.Import) else []
            for name in names:
                if name.startswith("prunebench") and not (name == "prunebench" or name.startswith(allowed[1:])):
                    wrong.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {name}")
    assert not wrong, "\n".join(wrong)


def test_no_subpackage_has_more_than_twelve_modules():
    sizes = {folder.name: len([p for p in folder.glob("*.py") if p.name != "__init__.py"])
             for folder in HARNESS.iterdir() if (folder / "__init__.py").is_file()}
    assert sizes and max(sizes.values()) <= 12, sizes
    assert not [p.name for p in HARNESS.glob("*.py") if p.name != "__init__.py"], "every module lives in a subpackage"


def test_the_layering_holds():
    lint = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    if not Path(lint).exists():
        pytest.fail("lint-imports is missing: pip install -e '.[test]' installs import-linter")
    out = subprocess.run([lint, "--config", str(ROOT / "pyproject.toml")], capture_output=True, text=True, cwd=ROOT,
                         timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
