"""Builds the plugin manager (built-in plugins in-process, third-party ones from entry points) and the
registries its register_* hooks fill, each built once per manager."""
from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

import pluggy

from ..api import hookspecs
from ..api.allocation import LayerAllocation, tracks_of
from ..api.errors import UsageError, did_you_mean, plugin_failure, raised_in

ENTRY_POINT_GROUP = "prunebench"
# Comma-separated entry-point names; when set, only these third-party plugins load.
LOAD_PLUGINS_ENV = "PRUNEBENCH_LOAD_PLUGINS"

DEFAULT_PLUGINS = (
    "prunebench.pruning.masks",
    "prunebench.pruning.statistics",
    "prunebench.data.datasets",
    "prunebench.models.loading",
    "prunebench.baselines.magnitude",
    "prunebench.baselines.wanda",
    "prunebench.baselines.ria",
    "prunebench.baselines.sparsegpt",
    "prunebench.baselines.dsnot",
    "prunebench.plugins.ace",
    "prunebench.pruning.owl",
    "prunebench.pruning.structured_allocation",
    "prunebench.baselines.structured",
    "prunebench.plugins.cfsp",
    "prunebench.plugins.saap",
    "prunebench.metrics.quality",
    "prunebench.metrics.efficiency",
    "prunebench.plugins.reconstruction",
    "prunebench.plugins.fidelity",
)


@dataclass(frozen=True)
class Registered:
    """A registered item and the plugin that registered it."""

    item: Any
    plugin: str


class PluginManager(pluggy.PluginManager):
    """pluggy's manager that also caches the registries; (un)registering a plugin clears them."""

    def __init__(self) -> None:
        super().__init__("prunebench")
        self.registries: dict[str, dict[str, Registered]] = {}
        self.entry_point_plugins: set[str] = set()  # third-party: skipped, not fatal, when they fail
        self.skipped: dict[str, str] = {}  # plugin name -> why it was left out

    def register(self, plugin: object, name: str | None = None) -> str | None:
        self.registries.clear()
        return super().register(plugin, name=name)

    def unregister(self, plugin: object | None = None, name: str | None = None) -> Any:
        self.registries.clear()
        return super().unregister(plugin, name=name)


_manager: PluginManager | None = None


def plugin_manager() -> PluginManager:
    """The process-wide plugin manager, built on first use (never at import time)."""
    global _manager
    if _manager is None:
        manager = PluginManager()
        manager.add_hookspecs(hookspecs)
        for module_name in DEFAULT_PLUGINS:
            manager.register(importlib.import_module(module_name), name=module_name)
        _load_entry_points(manager)
        while True:
            try:
                manager.check_pending()
                break
            except pluggy.PluginValidationError as error:  # implements a hook prunebench does not have
                name = manager.get_name(error.plugin)
                if name not in manager.entry_point_plugins:
                    raise
                _skip(manager, name, f"it does not fit prunebench's hooks ({_one_line(error)})")
        _manager = manager
    return _manager


def reset_plugin_manager() -> None:
    """Forget the manager; the next use rebuilds it (e.g. after installing a plugin at run time)."""
    global _manager
    _manager = None


def _load_entry_points(manager: PluginManager) -> None:
    allowed = os.environ.get(LOAD_PLUGINS_ENV)
    allowed_names = None if allowed is None else {n.strip() for n in allowed.split(",") if n.strip()}
    for entry_point in entry_points(group=ENTRY_POINT_GROUP):
        if allowed_names is not None and entry_point.name not in allowed_names:
            continue
        if manager.get_plugin(entry_point.name) is not None:
            continue
        # A broken third-party plugin is left out with a note, so that every other command still works.
        try:
            plugin = entry_point.load()
        except Exception as error:
            _skip(manager, entry_point.name, f"it failed to import ({_one_line(error)})")
            continue
        try:
            manager.register(plugin, name=entry_point.name)
        except Exception as error:  # pluggy refuses it (a hook implementation with a wrong signature, ...)
            _skip(manager, entry_point.name, f"it failed to register ({_one_line(error)})")
            continue
        manager.entry_point_plugins.add(entry_point.name)


def _one_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def _skip(manager: PluginManager, name: str, why: str) -> None:
    """Leave a third-party plugin out, and say so on stderr (`prunebench list` lists it too)."""
    if manager.get_plugin(name) is not None:
        manager.unregister(name=name)
    manager.entry_point_plugins.discard(name)
    manager.skipped[name] = why
    print(f"prunebench: plugin {name} skipped: {why}; fix or uninstall it, or leave it out with "
          f"{LOAD_PLUGINS_ENV}.", file=sys.stderr)


def skipped_plugins() -> dict[str, str]:
    """Third-party plugins left out because they failed to import, register or fill a registry: name -> why."""
    return dict(plugin_manager().skipped)


def registered(hook_name: str) -> dict[str, Registered]:
    """Items of one register_* hook by name, with the plugin that registered each; built once.

    Each plugin's hook implementation (pluggy's hookimpls, in registration order: built-ins first) is
    called with a `register` of its own, so every item is credited to the plugin whose code registered
    it and an error to the plugin that raised it. A name registered twice is refused.
    """
    manager = plugin_manager()
    if hook_name in manager.registries:
        return manager.registries[hook_name]
    by_name: dict[str, Registered] = {}
    for impl in getattr(manager.hook, hook_name).get_hookimpls():
        found: list[Any] = []
        try:
            impl.function(**{argument: found.append for argument in impl.argnames})
        except UsageError:
            raise
        except Exception as error:
            if impl.plugin_name in manager.entry_point_plugins:  # an installed plugin: build without it
                _skip(manager, impl.plugin_name, f"it failed in {hook_name} ({_one_line(error)})")
                return registered(hook_name)
            raise UsageError(f"Plugin {impl.plugin_name} failed in {hook_name}: {type(error).__name__}: {error}; "
                             f"fix or uninstall it, or leave it out with {LOAD_PLUGINS_ENV}.") from error
        for item in found:
            if item.name in by_name:
                raise UsageError(
                    f"'{item.name}' is registered by both {by_name[item.name].plugin} and {impl.plugin_name}; "
                    f"rename one or unset one plugin with {LOAD_PLUGINS_ENV}."
                )
            by_name[item.name] = Registered(item, impl.plugin_name)
    manager.registries[hook_name] = by_name
    return by_name


def lookup(hook_name: str, kind: str, name: str) -> Any:
    """The item registered under `name`, or an 'Unknown ... Did you mean' error."""
    items = registered(hook_name)
    if name not in items:
        raise did_you_mean(kind, name, items)
    return items[name].item


def get_method(name: str) -> Any:
    """The registered `PruningMethod` called `name`."""
    return lookup("register_methods", "method", name)


def get_statistic(name: str) -> Any:
    """The registered `Statistic` called `name`."""
    return lookup("register_statistics", "statistic", name)


def get_structured_method(name: str) -> Any:
    """The registered `StructuredMethod` called `name`."""
    return lookup("register_structured_methods", "structured method", name)


def get_metric(name: str) -> Any:
    """The registered `Metric` called `name`."""
    return lookup("register_metrics", "metric", name)


def is_structured(name: str) -> bool:
    """Whether `name` is a structured method; a name that is neither kind fails with 'Did you mean'."""
    structured = registered("register_structured_methods")
    if name in structured:
        return True
    methods = registered("register_methods")
    if name not in methods:
        raise did_you_mean("method", name, [*methods, *structured])
    return False


def method_hook(name: str) -> str:
    """The hook that registers method `name`: register_structured_methods or register_methods."""
    return "register_structured_methods" if is_structured(name) else "register_methods"


def make_mask(scores: Any, target: Any, group: str) -> Any:
    """The prune mask for `scores` from the first `make_mask` implementation that answers."""
    return plugin_manager().hook.make_mask(scores=scores, target=target, group=group)


def allocation_names(track: str) -> list[str]:
    """The registered allocations that serve `track`, sorted."""
    return sorted(name for name, entry in registered("register_allocations").items()
                  if track in tracks_of(entry.item))


def allocation_for(name: str, track: str, user: str) -> LayerAllocation:
    """The registered allocation `name` if it serves `track`, else a one-line error naming those that do."""
    allocations = registered("register_allocations")
    serving = allocation_names(track)
    if name in allocations and name not in serving:
        serves = " and ".join(tracks_of(allocations[name].item))
        raise UsageError(f"Allocation '{name}' serves {serves} pruning, not {track}; {user} takes one of "
                         f"{', '.join(serving)}.")
    if name not in serving:
        raise did_you_mean("allocation", name, serving)
    return allocations[name].item


def method_failure(error: Exception, method, debug: bool) -> "UsageError | None":
    """The one line for an error the method's own code raised, naming its plugin (the traceback is for
    --debug); None when it should propagate as it is (--debug, a UsageError, or raised elsewhere)."""
    bases = {"prunebench.api.method", "prunebench.api.structured", "builtins", "abc"}
    modules = {cls.__module__ for cls in type(method).__mro__} - bases
    if debug or isinstance(error, UsageError) or not raised_in(error, modules):
        return None
    plugin = registered(method_hook(method.name))[method.name].plugin
    return plugin_failure(f"Pruning with method '{method.name}'", plugin, error)
