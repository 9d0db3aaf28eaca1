"""The shape of the code, held by tests: no import circles, small files, explicit public APIs,
and one registry of stored kinds that the cache follows."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import grimp
import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "moorage"
MAX_LINES = 600
# Packages other packages import by their name (`from moorage.ops import Services`): each
# says what it offers in `__all__`, and nobody imports from it what it does not offer.
# (`moorage.drivers` is left out: its `__init__` must import nothing, so that the executor
# every process task runs, `python -m moorage.drivers._executor`, stays small.)
PUBLIC = (
    "client",
    "controllers",
    "dns",
    "metrics",
    "model",
    "ops",
    "scheduler",
    "state",
    "store",
    "volumes",
)


def test_no_two_modules_import_each_other_even_for_type_checking() -> None:
    graph = grimp.build_graph("moorage", exclude_type_checking_imports=False)
    both = sorted(
        tuple(sorted((module, imported)))
        for module in graph.modules
        for imported in graph.find_modules_directly_imported_by(module)
        if module in graph.find_modules_directly_imported_by(imported)
    )
    assert both == []


def test_the_executor_imports_nothing_of_moorage_but_itself() -> None:
    """Each process task's executor is forked from a zygote: what it imports, every task
    carries (memory) and every fork copies (start latency)."""
    import subprocess
    import sys

    code = (
        "import sys, moorage.drivers._executor; "
        "print(sorted(m for m in sys.modules if m.startswith(('moorage', 'pydantic'))))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert loaded.stdout.strip() == "['moorage', 'moorage.drivers', 'moorage.drivers._executor']"


def test_no_source_file_is_over_600_lines() -> None:
    long = {
        str(path.relative_to(SRC)): lines
        for path in SRC.rglob("*.py")
        if (lines := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


@pytest.mark.parametrize("package", PUBLIC)
def test_public_packages_declare_what_they_offer(package: str) -> None:
    module = importlib.import_module(f"moorage.{package}")
    offered = getattr(module, "__all__", None)
    assert isinstance(offered, list) and offered, f"moorage.{package} has no __all__"
    assert offered == sorted(offered, key=lambda n: (not n.isupper(), n))
    missing = [name for name in offered if not hasattr(module, name)]
    assert missing == []


def test_nothing_is_imported_from_a_public_package_that_it_does_not_offer() -> None:
    offered = {
        f"moorage.{package}": set(importlib.import_module(f"moorage.{package}").__all__)
        for package in PUBLIC
    }
    tests = SRC.parents[1] / "tests"
    unoffered = []
    for path in [*SRC.rglob("*.py"), *tests.rglob("*.py"), *SRC.parents[1].glob("benchmarks/*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom) or node.module not in offered:
                continue
            inside = path.is_relative_to(SRC / node.module.split(".")[1])
            for alias in node.names:
                submodule = (SRC / node.module.split(".")[1] / f"{alias.name}.py").exists()
                if not (inside or submodule or alias.name in offered[node.module]):
                    unoffered.append(f"{path.name}: from {node.module} import {alias.name}")
    assert unoffered == []


async def test_a_stored_kind_is_one_registry_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    """A kind the cache has never heard of, declared once, is cached and wakes its topic."""
    from pydantic import BaseModel

    from moorage.state import StateCache, kinds
    from moorage.state.kinds import StoredKind, encode
    from moorage.testing.memstore import MemoryStore

    class Widget(BaseModel):
        name: str
        size: int

    widget: StoredKind[str, Widget] = StoredKind(
        "widgets",
        Widget.model_validate_json,
        encode,
        lambda w: w.name,
        str,
        str,
        lambda name, obj: ("widgets", f"widget:{name}"),
    )
    monkeypatch.setattr(kinds, "KINDS", (*kinds.KINDS, widget))
    monkeypatch.setitem(kinds._BY_SEGMENT, "widgets", widget)
    monkeypatch.setattr("moorage.state.cache.KINDS", kinds.KINDS)

    import asyncio

    store = MemoryStore()
    cache = StateCache(store)
    follower = asyncio.create_task(cache.run())
    await cache.wait_synced()
    try:
        waiting = asyncio.create_task(cache.wait("widget:w1", cache.index("widget:w1"), 5))
        await store.put(widget.key("w1"), encode(Widget(name="w1", size=3)))
        await cache.wait_revision(await store.revision())
        assert cache.items(widget) == {"w1": Widget(name="w1", size=3)}
        assert await asyncio.wait_for(waiting, 5) == await store.revision()
        await store.txn([], [widget.delete("w1")])
        await cache.wait_revision(await store.revision())
        assert cache.items(widget) == {}
    finally:
        follower.cancel()
        await asyncio.gather(follower, return_exceptions=True)
        await store.close()
