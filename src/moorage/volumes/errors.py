"""The volumes package's one exception."""

from __future__ import annotations


class VolumeError(Exception):
    """A volume cannot be provisioned, mounted or unmounted here; the message says why."""
