"""Meta-tests of the hook specifications: each typed, implemented by a built-in plugin, tested and
documented; the fast commands load no torch."""
import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest
from prunebench import registry
from prunebench.api import hookspecs

ROOT = Path(__file__).resolve().parents[1]
HOOKS = sorted(name for name, f in vars(hookspecs).items()
               if inspect.isfunction(f) and hasattr(f, "prunebench_spec"))


def test_there_are_hooks():
    assert {"register_methods", "register_statistics", "make_mask", "register_datasets", "register_models"} <= set(HOOKS)


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_typed_and_documented_in_its_spec(hook):
    spec = getattr(hookspecs, hook)
    signature = inspect.signature(spec)
    assert all(p.annotation is not inspect.Parameter.empty for p in signature.parameters.values())
    assert signature.return_annotation is not inspect.Signature.empty
    assert len(inspect.getdoc(spec) or "") > 40
    # Docstrings name real things: every `prunebench.x.Y` or `Class.member` they mention exists.
    import prunebench
    import prunebench.api.method
    import prunebench.data.datasets
    import prunebench.models.loading
    import prunebench.pruning.masks

    homes = [prunebench, prunebench.data.datasets, prunebench.models.loading, prunebench.api.method]
    for dotted in re.findall(r"`((?:prunebench\.)?\w+(?:\.\w+)+)`", inspect.getdoc(spec)):
        parts = dotted.split(".")
        found = False
        for home in ([prunebench] if parts[0] == "prunebench" else homes):
            target = home
            for part in parts[1:] if parts[0] == "prunebench" else parts:
                target = getattr(target, part, None)
            found = found or target is not None
        assert found, f"{hook}'s docstring names {dotted}, which does not exist"


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_implemented_by_a_built_in_plugin(hook):
    plugins = {impl.plugin_name for impl in getattr(registry.plugin_manager().hook, hook).get_hookimpls()}
    assert plugins & set(registry.DEFAULT_PLUGINS), f"no built-in plugin implements {hook}"


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_tested(hook):
    tests = "".join(p.read_text() for p in (ROOT / "tests").glob("test_*.py") if p.name != "test_hookspecs.py")
    assert re.search(rf"def {hook}\(|hook\.{hook}\(|registered\(\"{hook}\"\)|registry\.{hook}\(", tests), \
        f"no test calls or implements {hook}"


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_documented_in_the_readme(hook):
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("The hooks ("):]
    assert f"`{hook}(" in section, f"README's hook list does not mention {hook}"


@pytest.mark.parametrize("argv", [["--help"], ["validate", str(ROOT / "benchmarks.yaml")]])
def test_help_and_validate_load_no_torch(argv):
    code = ("import sys\nfrom prunebench.cli.main import main\ntry:\n    main(%r)\nexcept SystemExit:\n    pass\n"
            "heavy = sorted(m for m in ('torch', 'transformers', 'lm_eval', 'datasets') if m in sys.modules)\n"
            "print('HEAVY', heavy)" % (argv,))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120).stdout
    assert "HEAVY []" in out, out[-500:]
