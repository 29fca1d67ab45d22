"""The fuzzing campaign's short CI budget: every target under atheris for a few seconds from
the kept corpus; a crash fails the test with the input that caused it. `make fuzz` runs the
same targets longer (FUZZ_SECONDS)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fuzz.targets import TARGETS

REPO = Path(__file__).resolve().parent.parent
# CI budget: 10 targets at 10 s took 122 s with start-up; 8 s keeps them near 100 s
SECONDS = int(os.environ.get("FUZZ_SECONDS", "8"))


@pytest.mark.slow
# the run's own length plus start and accounting: `make soak`/`make fuzz` run for minutes
@pytest.mark.timeout(SECONDS + 120)
@pytest.mark.parametrize("target", sorted(TARGETS))
def test_fuzz_target_finds_no_crash(target: str, tmp_path: Path) -> None:
    try:
        import atheris  # noqa: F401
    except ImportError:
        msg = "atheris not installed (pip install '.[test]')"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    corpus = tmp_path / "corpus"  # a copy: new inputs stay out of the repository
    shutil.copytree(REPO / "tests" / "fuzz" / "corpus" / target, corpus)
    r = subprocess.run(
        [sys.executable, "-m", "tests.fuzz.run", target, f"-max_total_time={SECONDS}",
         "-rss_limit_mb=1024", f"-artifact_prefix={tmp_path}/", str(corpus)],
        cwd=REPO, capture_output=True, text=True, timeout=SECONDS + 120)
    done = [line for line in r.stderr.splitlines() if line.startswith("Done ")]
    print(target, done[-1] if done else "(no summary)")
    crashes = sorted(tmp_path.glob("crash-*")) + sorted(tmp_path.glob("oom-*"))
    assert r.returncode == 0 and not crashes, (
        f"{target}: {crashes[0].read_bytes()[:300]!r}\n" if crashes else "") + r.stderr[-3000:]
    assert done, r.stderr[-2000:]
