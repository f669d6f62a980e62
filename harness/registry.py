"""Builds the plugin manager: built-in plugins in-process, third-party ones from entry points."""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

import pluggy

from prunebench import hookspecs
from prunebench.errors import UsageError, did_you_mean

ENTRY_POINT_GROUP = "prunebench"
# Comma-separated entry-point names; when set, only these third-party plugins load.
LOAD_PLUGINS_ENV = "PRUNEBENCH_LOAD_PLUGINS"

DEFAULT_PLUGINS = (
    "prunebench.masks",
    "prunebench.statistics",
    "prunebench.data",
    "prunebench.models",
    "prunebench.baselines.magnitude",
    "prunebench.baselines.wanda",
    "prunebench.baselines.ria",
    "prunebench.baselines.sparsegpt",
    "prunebench.plugins.ace",
)

_manager: pluggy.PluginManager | None = None


def plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager, built on first use (never at import time)."""
    global _manager
    if _manager is None:
        manager = pluggy.PluginManager("prunebench")
        manager.add_hookspecs(hookspecs)
        for module_name in DEFAULT_PLUGINS:
            manager.register(importlib.import_module(module_name), name=module_name)
        _load_entry_points(manager)
        manager.check_pending()
        _manager = manager
    return _manager


def reset_plugin_manager() -> None:
    """Forget the manager; the next use rebuilds it (e.g. after installing a plugin at run time)."""
    global _manager
    _manager = None


def _load_entry_points(manager: pluggy.PluginManager) -> None:
    allowed = os.environ.get(LOAD_PLUGINS_ENV)
    allowed_names = None if allowed is None else {n.strip() for n in allowed.split(",") if n.strip()}
    for entry_point in entry_points(group=ENTRY_POINT_GROUP):
        if allowed_names is not None and entry_point.name not in allowed_names:
            continue
        if manager.get_plugin(entry_point.name) is not None:
            continue
        manager.register(entry_point.load(), name=entry_point.name)


@dataclass(frozen=True)
class Registered:
    """A registered item and the plugin that registered it."""

    item: Any
    plugin: str


def collect(hook_name: str) -> dict[str, Registered]:
    """Call one register_* hook on every plugin; map each item's name to it and its plugin."""
    manager = plugin_manager()
    found: dict[str, Registered] = {}
    # get_hookimpls lists in call order reversed; call built-ins first so listings read naturally.
    for impl in getattr(manager.hook, hook_name).get_hookimpls():
        plugin = impl.plugin_name

        def register(item: Any, plugin: str = plugin) -> None:
            if item.name in found:
                raise UsageError(
                    f"'{item.name}' is registered by both {found[item.name].plugin} and {plugin}; "
                    f"rename one or unset one plugin with {LOAD_PLUGINS_ENV}."
                )
            found[item.name] = Registered(item, plugin)

        impl.function(register=register)
    return found


def lookup(hook_name: str, kind: str, name: str) -> Any:
    """The item registered under `name`, or an 'Unknown ... Did you mean' error."""
    registered = collect(hook_name)
    if name not in registered:
        raise did_you_mean(kind, name, registered)
    return registered[name].item


def get_method(name: str):
    return lookup("register_methods", "method", name)


def make_mask(scores, target, group):
    return plugin_manager().hook.make_mask(scores=scores, target=target, group=group)
