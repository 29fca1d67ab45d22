"""Installing without a C compiler: the twin serves; under CI=true the same install fails."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def run(cmd: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=900)


def test_install_without_compiler_runs_on_the_twin(tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(
        ".venv", ".git", "build", "*.so", "*.egg-info", "__pycache__", ".hypothesis",
        ".mypy_cache", ".ruff_cache", ".pytest_cache", "_frames_c.c"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = str(venv / "bin" / "python")
    env = {k: v for k, v in os.environ.items() if k not in ("SCHWEBE_NO_EXTENSIONS", "VIRTUAL_ENV")}
    env.update(CC="/bin/false", CXX="/bin/false", CI="false", PIP_DISABLE_PIP_VERSION_CHECK="1")
    res = run([py, "-m", "pip", "install", "-q", "."], env, src)
    assert res.returncode == 0, res.stderr[-3000:]
    res = run([py, "-c", "from gateway import frames; print(frames.IMPLEMENTATION)"], env, tmp_path)
    assert res.stdout.strip() == "python", res.stderr
    schwebe = str(venv / "bin" / "schwebe")
    res = run([schwebe, "decode", "phy", "40f17dbe4900020001954378762b11ff0d"], env, tmp_path)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["DevAddr"] == "49be7df1"

    # the same install under CI=true must fail loudly rather than test only the twin
    env["CI"] = "true"
    res = run([py, "-m", "pip", "install", "-q", "--force-reinstall", "--no-deps", "."], env, src)
    assert res.returncode != 0
