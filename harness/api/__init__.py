"""The plugin contract: every type a plugin subclasses or receives (no torch at import, no registry)."""

__version__ = "0.1.0"
