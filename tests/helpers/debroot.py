"""Throwaway Debian roots for the package tests: a debootstrapped base, copied per test.

The base is `SCHWEBE_DEB_BASE` or, when unset, `build/deb-base-<arch>` made once with
debootstrap (about 1.5 minutes from deb.debian.org). Each test gets an overlay of the base
(instant) or, where overlayfs cannot be mounted, a copy. Maintainer scripts run chrooted in
it (`dpkg --root`), and so does the installed `schwebe`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
CHROOT = shutil.which("chroot") or "/usr/sbin/chroot"
BASE_PACKAGES = "python3,python3-venv,systemd,adduser,ca-certificates"


def need(tool: str) -> str:
    """The tool's path; outside CI a missing one skips, under CI=true it fails."""
    import pytest

    path = shutil.which(tool)
    if path is None:
        msg = f"{tool} not installed (apt-get install {tool})"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    return path


def base_root(arch: str = "amd64") -> Path:
    env = os.environ.get("SCHWEBE_DEB_BASE")
    if env:
        return Path(env)
    base = REPO / "build" / f"deb-base-{arch}"
    if not (base / "usr" / "bin" / "python3.11").exists():
        need("debootstrap")
        partial = base.with_name(base.name + ".partial")
        subprocess.run(["rm", "-rf", "--one-file-system", str(partial)], check=True)
        subprocess.run(["debootstrap", f"--arch={arch}", "--variant=minbase",
                        f"--include={BASE_PACKAGES}", "bookworm", str(partial),
                        "http://deb.debian.org/debian"], check=True, capture_output=True)
        partial.rename(base)
    return base


class Root:
    """One throwaway root on top of the base; `close` unmounts before anything is deleted."""

    def __init__(self, base: Path, work: Path) -> None:
        self.work = work
        self.path = work / "root"
        self.mounts: list[Path] = []
        upper, scratch = work / "upper", work / "scratch"
        for d in (self.path, upper, scratch):
            d.mkdir(parents=True)
        opts = f"lowerdir={base},upperdir={upper},workdir={scratch}"
        if subprocess.run(["mount", "-t", "overlay", "overlay", "-o", opts, str(self.path)],
                          capture_output=True).returncode == 0:
            self.mounts.append(self.path)
        else:
            subprocess.run(["cp", "-a", f"{base}/.", str(self.path)], check=True)

    def mount_api(self) -> None:
        """/proc and /dev inside the root, for a daemon that opens pseudo-terminals."""
        for src, dst, args in (("proc", "proc", ["-t", "proc"]), ("/dev", "dev", ["--bind"]),
                               ("/dev/pts", "dev/pts", ["--bind"])):
            target = self.path / dst
            subprocess.run(["mount", *args, src, str(target)], check=True)
            self.mounts.append(target)

    def dpkg(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["dpkg", f"--root={self.path}", "--force-confold", *args],
                              capture_output=True, text=True,
                              env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})

    def run(self, *cmd: str, user: str | None = None,
            check: bool = True) -> subprocess.CompletedProcess[str]:
        spec = [f"--userspec={user}:{user}"] if user else []
        proc = subprocess.run([CHROOT, *spec, str(self.path), *cmd], capture_output=True,
                              text=True, env={"PATH": "/usr/bin:/bin", "HOME": "/var/lib/schwebe"})
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} in {self.path}: exit {proc.returncode}\n"
                                 f"{proc.stdout}\n{proc.stderr}")
        return proc

    def popen(self, *cmd: str, user: str) -> subprocess.Popen[str]:
        return subprocess.Popen([CHROOT, f"--userspec={user}:{user}", str(self.path), *cmd],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env={"PATH": "/usr/bin:/bin", "HOME": "/var/lib/schwebe"})

    def p(self, path: str) -> Path:
        return self.path / path.lstrip("/")

    def group_members(self, group: str) -> list[str]:
        for line in self.p("/etc/group").read_text().splitlines():
            name, _, _, members = line.split(":")
            if name == group:
                return [m for m in members.split(",") if m]
        raise AssertionError(f"no group {group} in {self.path}/etc/group")

    def ids(self, db: str, name: str) -> int:
        for line in self.p(f"/etc/{db}").read_text().splitlines():
            fields = line.split(":")
            if fields[0] == name:
                return int(fields[2])
        raise AssertionError(f"no {name} in {self.path}/etc/{db}")

    def close(self) -> None:
        for m in reversed(self.mounts):
            subprocess.run(["umount", "-l", str(m)], check=False)
        self.mounts.clear()
        # --one-file-system: never into a mount that failed to go away.
        subprocess.run(["rm", "-rf", "--one-file-system", str(self.work)], check=False)


def throwaway(base: Path, work: Path) -> Iterator[Root]:
    root = Root(base, work)
    try:
        yield root
    finally:
        root.close()


class Booted:
    """The root booted with systemd as PID 1 (systemd-nspawn, host network): the packaged
    units run as on a gateway. `ns` runs a command inside; `poweroff` waits for the end."""

    def __init__(self, root: Root, log: Path) -> None:
        import time

        self.root = root
        self.log = log.open("wb")
        self.proc = subprocess.Popen(
            ["systemd-nspawn", "-q", "--register=no", "--keep-unit", "-D", str(root.path), "-b"],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 90
        self.leader = 0
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"systemd-nspawn exited {self.proc.returncode}: {log.read_text()[-2000:]}")
            kids = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True,
                                  text=True).stdout.split()
            for k in kids:
                try:
                    if Path(f"/proc/{k}/comm").read_text().strip() == "systemd":
                        self.leader = int(k)
                except OSError:  # gone between pgrep and here
                    continue
            if self.leader:
                state = self.ns("systemctl", "is-system-running", check=False).stdout.strip()
                if state in ("running", "degraded"):
                    return
            time.sleep(0.5)
        raise AssertionError(f"the container did not finish booting: {log.read_text()[-2000:]}")

    def ns(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(["nsenter", "-t", str(self.leader), "-a", *cmd],
                              capture_output=True, text=True)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)}: exit {proc.returncode}\n{proc.stdout}{proc.stderr}")
        return proc

    def show(self, unit: str, *props: str) -> dict[str, str]:
        out = self.ns("systemctl", "show", unit, *(f"-p{p}" for p in props)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def poweroff(self) -> None:
        if self.proc.poll() is None:
            self.ns("systemctl", "poweroff", check=False)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
