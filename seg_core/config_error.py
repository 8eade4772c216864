"""The error every configuration check raises."""
from __future__ import annotations


class ConfigError(ValueError):
    """A setting that cannot work, with a message naming it and saying what to use instead.

    A ValueError, so callers that guard a constructor with ``except ValueError`` keep working."""
