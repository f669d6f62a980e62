"""Installed plugins that are broken (fail to import, raise while registering) are left out with a one-line
note naming them, and every other command keeps working; `prunebench list` says which were skipped."""
import re

from prunebench import registry
from prunebench.cli.main import main

FIX = f"fix or uninstall it, or leave it out with {registry.LOAD_PLUGINS_ENV}."


def _notes(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("prunebench:")]


def test_a_plugin_that_fails_to_import_is_skipped_and_named(install_plugin, capsys):
    install_plugin("import prunebench_no_such_module\n", "broken_import_plugin", "broken-import")
    assert main(["list"]) == 0  # was a ModuleNotFoundError traceback out of the plugin manager
    captured = capsys.readouterr()
    assert _notes(captured.err) == [
        "prunebench: plugin broken-import skipped: it failed to import (ModuleNotFoundError: No module named "
        f"'prunebench_no_such_module'); {FIX}"]
    assert "Traceback" not in captured.err
    assert re.search(r"^wanda\s", captured.out, re.M)  # the other plugins are all there
    skipped = captured.out.split("Skipped plugins")[1]
    assert re.search(r"^broken-import\s+it failed to import \(ModuleNotFoundError", skipped, re.M)
    # Other commands work too, their own errors unchanged: the note, then the one-line error.
    assert main(["prune", "--model", "tiny-llama", "--method", "wandaa"]) == 2
    assert _notes(capsys.readouterr().err)[-1].startswith("prunebench: error: Unknown method 'wandaa'. Did you mean")


RAISES_WHILE_REGISTERING = '''\
from prunebench import hookimpl


@hookimpl
def register_methods(register):
    raise RuntimeError("boom while registering")
'''


def test_an_installed_plugin_that_raises_while_registering_is_skipped_and_named(install_plugin, capsys):
    install_plugin(RAISES_WHILE_REGISTERING, "raising_plugin", "raising-plugin")
    assert main(["list"]) == 0  # was "error: Plugin raising-plugin failed in register_methods", and no list
    captured = capsys.readouterr()
    assert _notes(captured.err) == [
        "prunebench: plugin raising-plugin skipped: it failed in register_methods "
        f"(RuntimeError: boom while registering); {FIX}"]
    assert re.search(r"^wanda\s", captured.out, re.M) and re.search(r"^magnitude-sp\s", captured.out, re.M)
    assert re.search(r"^raising-plugin\s+it failed in register_methods", captured.out.split("Skipped plugins")[1], re.M)
    assert registry.skipped_plugins() == {"raising-plugin": "it failed in register_methods "
                                                            "(RuntimeError: boom while registering)"}


def test_list_shows_the_statistics_each_method_needs_with_its_defaults(capsys):
    assert main(["list"]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.strip()}
    # The class attribute `statistics` is the base method's: wanda+varp and ria+varp also need VarP's factor.
    assert rows["wanda+varp"].rstrip().endswith("input_sq_norm, ace_inverse_norm")
    assert rows["ria+varp"].rstrip().endswith("input_sq_norm, ace_inverse_norm")
    assert rows["wanda"].rstrip().endswith("input_sq_norm")
