"""Fake pods that are real: the image's own ``docker/start.sh`` and OpenSSH ``sshd`` in a private
PID and mount namespace on a loopback address, as close to a booted container as this machine allows
(no Docker engine here).

Inside the namespace ``/etc/ssh``, ``/etc/profile.d``, ``/workspace``, ``/run`` and ``/root`` are the
pod's own (bind mounts over folders of the test, a tmpfs for ``/run`` and ``/root``), so nothing of
the host is read or written; the host's Python stays reachable at its usual path (``/root/.pyenv`` is
bound back into the pod's fresh ``/root``). Killing the ``unshare`` process kills every process of
the pod, detached trainers included, as terminating a real pod does. The one host change: empty
``/workspace`` is created as a mount point when the host has none.
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
START_SH = ROOT / "docker" / "start.sh"
#: PATH of the image (its venv first), plus where this machine keeps python
IMAGE_PATH = "/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def can_run_pods() -> str | None:
    """Why fake pods cannot run here, or None when they can."""
    if os.geteuid() != 0:
        return "fake pods need root (unshare --mount)"
    if not Path("/usr/sbin/sshd").exists():
        return "sshd is missing: apt-get install openssh-server"
    return None


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_for_banner(host: str, port: int, timeout: float = 10.0) -> bytes:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=1.0) as s:
                banner = s.recv(64)
                if banner.startswith(b"SSH-"):
                    return banner
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"no SSH banner on {host}:{port}")


@dataclass
class FakePod:
    base: Path
    host: str
    port: int
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen | None = None

    @property
    def workspace(self) -> Path:
        return self.base / "ws"

    @property
    def log(self) -> str:
        path = self.base / "pod.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _script(self) -> str:
        b = self.base
        # the image's venv comes first on its PATH; here this machine's python plays that part
        pod_env = {"PATH": os.path.dirname(sys.executable) + ":" + IMAGE_PATH,
                   "RTRAIN_SSHD_LISTEN": f"{self.host}:{self.port}", **self.env}
        env_args = " ".join(shlex.quote(f"{k}={v}") for k, v in pod_env.items())
        lines = [
            "set -e",
            "mount -t tmpfs -o mode=0755 tmpfs /run",
            f"mount --bind {b / 'etc_ssh'} /etc/ssh",
            f"mount --bind {b / 'profile_d'} /etc/profile.d",
            f"mount --bind {b / 'ws'} /workspace",
        ]
        if Path("/root/.pyenv").is_dir():
            lines += [f"mount --bind /root/.pyenv {b / 'pyenv'}"]
        lines += ["mount -t tmpfs -o mode=0700 tmpfs /root"]
        if Path("/root/.pyenv").is_dir():
            lines += ["mkdir /root/.pyenv", f"mount --bind {b / 'pyenv'} /root/.pyenv"]
        lines += [f"exec env -i {env_args} {START_SH}"]
        return "\n".join(lines)

    def start(self, wait: bool = True) -> FakePod:
        for name in ("etc_ssh", "profile_d", "ws", "pyenv"):
            (self.base / name).mkdir(parents=True, exist_ok=True)
        Path("/workspace").mkdir(exist_ok=True)  # a mount point only; its contents are never touched
        log = (self.base / "pod.log").open("ab")
        self.proc = subprocess.Popen(
            ["unshare", "--pid", "--fork", "--mount", "--mount-proc", "--kill-child", "bash", "-c", self._script()],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )
        if wait:
            try:
                wait_for_banner(self.host, self.port)
            except TimeoutError:
                self.stop()
                raise TimeoutError(f"fake pod did not start:\n{self.log}") from None
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        end_namespace(self.proc)
        self.proc = None


def end_namespace(proc: subprocess.Popen | None) -> None:
    """End an ``unshare --kill-child`` machine (a fake pod or VM): SIGTERM to its group takes every
    process in it down; SIGKILL if that has not happened within 10 s."""
    if proc is None or proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def ssh_keygen(path: Path, comment: str = "test") -> tuple[Path, str]:
    """A fresh ed25519 key pair; returns (private key path, public key line)."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)], check=True)
    return path, Path(f"{path}.pub").read_text().strip()
