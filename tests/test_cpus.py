"""server/cpus.py: the CPUs a process may use."""

from __future__ import annotations

from pathlib import Path

import pytest

from server import cpus


@pytest.mark.parametrize(
    ("content", "expected"),
    [("max 100000\n", None), ("150000 100000\n", 2), ("200000 100000\n", 2), ("", None)],
)
def test_a_container_cpu_limit_is_rounded_up_to_whole_cpus(
    tmp_path: Path, content: str, expected: int | None
) -> None:
    f = tmp_path / "cpu.max"
    f.write_text(content)
    assert cpus._cgroup_cpu_quota(str(f)) == expected
    assert cpus._cgroup_cpu_quota(str(tmp_path / "absent")) is None
