"""Readers of cgroup v1 and v2 files (from fixture trees), Docker samples, CPU % deltas."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from moorage.metrics.collect import (
    CpuMeter,
    Usage,
    cgroup_pids,
    children_map,
    docker_usage,
    node_sample,
    parse_cpu_stat_v2,
    parse_limit,
    parse_memory_stat,
    process_usage,
    read_cgroup,
    tree_pids,
)

V1_MEMORY_STAT = """cache 4096
rss 1000
rss_huge 0
mapped_file 0
hierarchical_memory_limit 67108864
total_cache 8192
total_rss 2097152
total_rss_huge 0
"""

V2_MEMORY_STAT = """anon 3145728
file 1048576
kernel_stack 16384
slab 0
"""

V2_CPU_STAT = """usage_usec 2500000
user_usec 2000000
system_usec 500000
nr_periods 0
"""


def v1_tree(root: Path, *, cpuacct: bool) -> Path:
    """/sys/fs/cgroup/{memory,cpuacct}/moorage/t1-app as the process driver makes them."""
    memory = root / "memory" / "moorage" / "t1-app"
    memory.mkdir(parents=True)
    (memory / "memory.stat").write_text(V1_MEMORY_STAT)
    (memory / "memory.limit_in_bytes").write_text("67108864\n")
    (memory / "memory.usage_in_bytes").write_text("9999999\n")
    (memory / "cgroup.procs").write_text("101\n102\n")
    if cpuacct:
        acct = root / "cpuacct" / "moorage" / "t1-app"
        acct.mkdir(parents=True)
        (acct / "cpuacct.usage").write_text("1500000000\n")
    return memory


def v2_group(root: Path, limit: str = "134217728") -> Path:
    group = root / "moorage" / "t1-app"
    group.mkdir(parents=True)
    (group / "memory.current").write_text("5000000\n")
    (group / "memory.stat").write_text(V2_MEMORY_STAT)
    (group / "memory.max").write_text(limit + "\n")
    (group / "cpu.stat").write_text(V2_CPU_STAT)
    (group / "cgroup.procs").write_text("7\n")
    return group


def test_v1_memory_group_gives_rss_and_limit_and_no_cpu_without_cpuacct(tmp_path: Path) -> None:
    group = v1_tree(tmp_path, cpuacct=False)
    assert read_cgroup(str(group)) == Usage(None, 2097152, 67108864)
    assert cgroup_pids(str(group)) == [101, 102]


def test_v1_cpu_comes_from_the_sibling_cpuacct_group(tmp_path: Path) -> None:
    group = v1_tree(tmp_path, cpuacct=True)
    assert read_cgroup(str(group)) == Usage(1.5, 2097152, 67108864)


def test_v1_unlimited_is_no_limit(tmp_path: Path) -> None:
    group = v1_tree(tmp_path, cpuacct=False)
    (group / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    assert read_cgroup(str(group)).limit_bytes is None


def test_v2_group_gives_cpu_anon_rss_and_limit(tmp_path: Path) -> None:
    group = v2_group(tmp_path)
    assert read_cgroup(str(group)) == Usage(2.5, 3145728, 134217728)
    assert cgroup_pids(str(group)) == [7]


def test_v2_max_is_no_limit(tmp_path: Path) -> None:
    assert read_cgroup(str(v2_group(tmp_path, "max"))).limit_bytes is None


def test_a_vanished_group_reads_as_nothing(tmp_path: Path) -> None:
    assert read_cgroup(str(tmp_path / "gone")) == Usage()
    assert cgroup_pids(str(tmp_path / "gone")) == []


def test_parsers_skip_what_they_do_not_understand() -> None:
    assert parse_memory_stat("rss 12\nbroken\nx y\n") == {"rss": 12}
    assert parse_cpu_stat_v2("user_usec 5\n") is None
    assert parse_limit("max") is None and parse_limit("") is None and parse_limit("42\n") == 42


def test_docker_samples_of_cgroup_v1_and_v2_engines() -> None:
    v1 = {
        "cpu_stats": {"cpu_usage": {"total_usage": 3_000_000_000}},
        "memory_stats": {"usage": 9000, "limit": 33554432, "stats": {"rss": 4096, "cache": 10}},
    }
    v2 = {
        "cpu_stats": {"cpu_usage": {"total_usage": 500_000_000}},
        "memory_stats": {"usage": 9000, "limit": 33554432, "stats": {"anon": 8192, "file": 1}},
    }
    old = {"memory_stats": {"usage": 9000, "stats": {"cache": 1000}}}
    assert docker_usage(v1) == Usage(3.0, 4096, 33554432)
    assert docker_usage(v2) == Usage(0.5, 8192, 33554432)
    assert docker_usage(old) == Usage(None, 8000, None)
    assert docker_usage({}) == Usage()  # a stopped container's empty sample


def test_cpu_percent_is_the_growth_over_wall_time_of_one_core() -> None:
    meter = CpuMeter()
    assert meter.percent("a", 10.0, 100.0) is None  # the first sample only primes
    assert meter.percent("a", 15.0, 110.0) == pytest.approx(50.0)
    assert meter.percent("a", 35.0, 120.0) == pytest.approx(200.0)  # two cores
    assert meter.percent("a", 1.0, 130.0) is None  # restarted: the counter went back
    assert meter.percent("a", 2.0, 140.0) == pytest.approx(10.0)
    assert meter.percent("a", 3.0, 140.0) is None  # no time passed


def test_cpu_meter_forgets_what_is_gone() -> None:
    meter = CpuMeter()
    meter.percent("a", 1.0, 1.0)
    meter.percent("b", 1.0, 1.0)
    meter.keep(["b"])
    assert meter.percent("a", 2.0, 2.0) is None
    assert meter.percent("b", 2.0, 2.0) == pytest.approx(100.0)


def test_tree_pids_walks_descendants() -> None:
    children = {1: [2, 3], 3: [4], 9: [10]}
    assert sorted(tree_pids(1, children)) == [1, 2, 3, 4]


def test_process_usage_of_a_real_busy_process_tree() -> None:
    burn = "import time\nend = time.time() + 5\nwhile time.time() < end: pass"
    child = subprocess.Popen([sys.executable, "-c", burn])
    try:
        pids = tree_pids(os.getpid(), children_map())
        assert child.pid in pids
        meter = CpuMeter()
        first = process_usage([child.pid])
        assert first.cpu_seconds is not None and first.rss_bytes
        meter.percent("c", first.cpu_seconds, time.monotonic())
        time.sleep(0.5)
        second = process_usage([child.pid])
        assert second.cpu_seconds is not None
        percent = meter.percent("c", second.cpu_seconds, time.monotonic())
        assert percent is not None and percent > 50
    finally:
        child.kill()
        child.wait()
    assert process_usage([child.pid]) == Usage()  # gone: nothing, no error


def test_node_sample_reports_memory_disk_and_network(tmp_path: Path) -> None:
    node_sample([tmp_path])  # primes psutil's CPU %
    sample = node_sample([tmp_path, tmp_path / "missing"])
    assert 0 <= sample.cpu_percent <= 100
    assert sample.memory_used > 0 and sample.memory_available > 0
    assert list(sample.disks) == [str(tmp_path)]
    used, free = sample.disks[str(tmp_path)]
    assert used > 0 and free > 0
    assert "lo" not in sample.network
