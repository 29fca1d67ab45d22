"""One gateway per data directory: a second daemon is refused in one line naming the first."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from gateway.datadir import DataDirBusy, DataDirLock, live_holder

REPO = Path(__file__).resolve().parent.parent


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(path: Path, data_dir: Path) -> Path:
    path.write_text(f"""
[gateway]
eui = "b827ebfffe000001"
data_dir = "{data_dir}"
[[sources.gwmp]]
bind = "127.0.0.1:{free_port(socket.SOCK_DGRAM)}"
[[forward.file]]
name = "sink"
path = "{data_dir}/out.jsonl"
[web]
bind = "127.0.0.1:{free_port()}"
""")
    return path


def run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], capture_output=True,
                          text=True, cwd=REPO, timeout=timeout)


def wait_for_lock(data_dir: Path, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while live_holder(data_dir) is None:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert time.monotonic() < deadline, "the first daemon never took the lock"
        time.sleep(0.1)


def test_second_daemon_on_the_same_data_dir_exits_1_naming_the_first(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first_cfg = write_config(tmp_path / "a.toml", data_dir)
    first = subprocess.Popen([sys.executable, "-m", "gateway.cli", "run", "--config", str(first_cfg)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        wait_for_lock(data_dir, first)
        # other ports, same data_dir
        second = run("run", "--config", str(write_config(tmp_path / "b.toml", data_dir)))
        assert second.returncode == 1
        lines = second.stderr.strip().splitlines()
        assert lines == [f'schwebe: cannot start gateway (gateway.data_dir = "{data_dir}"): '
                         f"held by pid {first.pid} (another schwebe on the same data_dir; "
                         "stop it or give this one its own gateway.data_dir)"], second.stderr
        assert first.poll() is None, "the first daemon must keep running"
        # reading the live store stays possible and says it reads read-only beside the daemon
        inspect = run("buffer", "inspect", "--data-dir", str(data_dir))
        assert inspect.returncode == 0, inspect.stderr
        assert f"pid {first.pid}" in inspect.stderr and "read-only" in inspect.stderr
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=30)
    # once the first stopped (or died), the lock is free again
    assert live_holder(data_dir) is None


def test_lock_is_released_by_the_kernel_when_the_holder_is_killed(tmp_path: Path) -> None:
    code = ("import sys, time; from pathlib import Path; from gateway.datadir import DataDirLock; "
            "DataDirLock(Path(sys.argv[1])).acquire(); print('locked', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE,
                              text=True, cwd=REPO)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    try:
        DataDirLock(tmp_path).acquire()
        raise AssertionError("took a lock another process holds")
    except DataDirBusy as exc:
        assert exc.pid == holder.pid
    os.kill(holder.pid, signal.SIGKILL)
    holder.communicate()
    DataDirLock(tmp_path).acquire().release()


def test_data_dir_problems_use_the_one_cannot_start_format(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    res = run("run", "--config", str(write_config(tmp_path / "a.toml", not_a_dir)))
    assert res.returncode == 1
    assert res.stderr.strip() == (f'schwebe: cannot start gateway (gateway.data_dir = "{not_a_dir}"): '
                                  "exists but is not a directory")
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nowhere")
    res = run("run", "--config", str(write_config(tmp_path / "b.toml", dangling)))
    assert res.returncode == 1
    assert "a symlink to" in res.stderr and "does not exist" in res.stderr
    assert "File exists" not in res.stderr


def test_web_port_unaffected_by_lock_when_alone(tmp_path: Path) -> None:
    """A single daemon still starts and serves with the lock held (the lock costs nothing)."""
    data_dir = tmp_path / "data"
    cfg = write_config(tmp_path / "a.toml", data_dir)
    port = int(cfg.read_text().split("127.0.0.1:")[-1].split('"')[0])
    proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "run", "--config", str(cfg)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                    assert r.status == 200
                    break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.2)
        assert (data_dir / "lock").read_text().strip() == str(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
