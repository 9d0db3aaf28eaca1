"""The Python client of the moorage HTTP API (used by the CLI, tests and scripts)."""

from .client import Client, default_address

__all__ = ["Client", "default_address"]
