"""Shared fixtures: the Docker engine, when the machine has one.

Tests that need Docker use the `docker_image` fixture. Without an engine they skip, loudly,
on a laptop; with MOORAGE_REQUIRE_DOCKER=1 (CI) a missing engine is an error instead.
"""

from __future__ import annotations

import os

import pytest

from tests.fixtures.images import docker_ready, ensure_image

_READY: bool | None = None


def _docker() -> bool:
    global _READY
    if _READY is None:
        _READY = docker_ready()
    return _READY


@pytest.fixture(scope="session")
def docker_image() -> str:
    if not _docker():
        if os.environ.get("MOORAGE_REQUIRE_DOCKER") == "1":
            pytest.fail("MOORAGE_REQUIRE_DOCKER=1 but no Docker engine answers (start dockerd)")
        pytest.skip("SKIPPED LOUDLY: no Docker engine here (CI runs these with dockerd)")
    return ensure_image()
