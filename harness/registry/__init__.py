"""The plugin host: the pluggy manager, built-in and installed plugins, and lookups by name."""
from .manager import (
    DEFAULT_PLUGINS,
    ENTRY_POINT_GROUP,
    LOAD_PLUGINS_ENV,
    PluginManager,
    Registered,
    allocation_for,
    allocation_names,
    get_method,
    get_metric,
    get_statistic,
    get_structured_method,
    is_structured,
    lookup,
    make_mask,
    method_failure,
    method_hook,
    plugin_manager,
    registered,
    reset_plugin_manager,
    skipped_plugins,
)

__all__ = ["DEFAULT_PLUGINS", "ENTRY_POINT_GROUP", "LOAD_PLUGINS_ENV", "PluginManager", "Registered", "allocation_for",
           "allocation_names", "get_method", "get_metric", "get_statistic", "get_structured_method", "is_structured",
           "lookup", "make_mask", "method_failure", "method_hook", "plugin_manager", "registered", "reset_plugin_manager",
           "skipped_plugins"]
