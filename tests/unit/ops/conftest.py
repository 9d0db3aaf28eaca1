from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from moorage.testing.state import World, memory_state


@pytest.fixture
async def world() -> AsyncIterator[World]:
    async with memory_state() as running:
        yield running
