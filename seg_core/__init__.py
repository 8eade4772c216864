"""The few building blocks the robot and the cloud both use, defined once.

- ``ConfigError``: the one error type of configuration checks (dataclasses check
  themselves in ``__post_init__``), so every entry point reports it the same way.
- ``Counters``: thread-safe event counters, every name present from the start.
- ``TokenBucket``: the rate limiter of the robot's upload budget and the model
  publisher's chunk serving.

A leaf package: it imports nothing of the project.
"""
from __future__ import annotations

from .config_error import ConfigError
from .counters import Counters
from .token_bucket import TokenBucket

__all__ = ["ConfigError", "Counters", "TokenBucket"]
