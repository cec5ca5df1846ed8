"""Fake Lambda Cloud VMs that are real: OpenSSH ``sshd`` on port 22 of their own loopback address, a
user ``ubuntu`` (not root), and the host key cloud-init would install from the launch's ``user_data``
(``ssh_keys.ed25519_private``), in a private PID and mount namespace (see pods.py for the technique).

Inside the namespace ``/etc/passwd``, ``/etc/group``, ``/etc/shadow`` (with ``ubuntu`` added),
``/etc/ssh``, ``/home`` and ``/usr/local/bin`` are the VM's own; ``/root`` is traversable so the host's
Python (under ``/root/.pyenv``) runs for ``ubuntu``. ``/usr/local/bin`` holds ``python3`` and a stand-in
for ``docker`` (no Docker engine here): ``docker pull`` checks the image, ``docker run`` checks the
exact command line rtrain builds (launcher/runtime.py) and runs the trainer with the VM's python in the
folder and with only the environment the command passes, as the container would.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from pods import end_namespace

UID = 4242  # ubuntu inside the VM (a number no host account uses)
DOCKER_STANDIN = Path(__file__).resolve().parent / "docker_standin.py"


def cloud_init_host_key(user_data: str) -> tuple[str, str] | None:
    """(private, public) host key from cloud-init user_data, as cloud-init's cc_ssh reads it."""
    if not user_data.startswith("#cloud-config"):
        return None
    config = yaml.safe_load(user_data) or {}
    keys = config.get("ssh_keys") or {}
    if "ed25519_private" in keys and "ed25519_public" in keys:
        return str(keys["ed25519_private"]), str(keys["ed25519_public"])
    return None


@dataclass
class FakeVM:
    base: Path
    host: str
    authorized_key: str
    user_data: str
    env: dict[str, str] = field(default_factory=dict)
    image: str = ""
    ignore_host_key: bool = False
    proc: subprocess.Popen | None = None

    @property
    def home(self) -> Path:
        return self.base / "home" / "ubuntu"

    @property
    def log(self) -> str:
        path = self.base / "vm.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _etc(self) -> None:
        etc = self.base / "etc"
        etc.mkdir(parents=True, exist_ok=True)
        for name, line in (("passwd", f"ubuntu:x:{UID}:{UID}:Ubuntu:/home/ubuntu:/bin/bash"),
                           ("group", f"ubuntu:x:{UID}:"), ("shadow", "ubuntu:*:19000:0:99999:7:::")):
            host = Path("/etc") / name
            text = host.read_text() if host.exists() else ""
            (etc / name).write_text(text.rstrip("\n") + "\n" + line + "\n")
        (etc / "shadow").chmod(0o640)

    def _ssh(self) -> None:
        ssh = self.base / "etc_ssh"
        (ssh / "authorized_keys").mkdir(parents=True, exist_ok=True)
        key = ssh / "ssh_host_ed25519_key"
        given = None if self.ignore_host_key else cloud_init_host_key(self.user_data)
        if given is None:  # no key handed over: the VM makes its own, as an image's first boot would
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        else:
            key.write_text(given[0].strip() + "\n")
            Path(f"{key}.pub").write_text(given[1].strip() + "\n")
        key.chmod(0o600)
        (ssh / "authorized_keys" / "ubuntu").write_text(self.authorized_key.strip() + "\n")
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", **self.env, "RTRAIN_STANDIN_IMAGE": self.image}
        (ssh / "sshd_config").write_text("\n".join([
            f"ListenAddress {self.host}:22", "HostKey /etc/ssh/ssh_host_ed25519_key",
            "AuthorizedKeysFile /etc/ssh/authorized_keys/%u", "PasswordAuthentication no",
            "KbdInteractiveAuthentication no", "PubkeyAuthentication yes", "PermitRootLogin no", "UsePAM no",
            "StrictModes no", "Subsystem sftp internal-sftp", "PidFile none",
            "SetEnv " + " ".join(f"{k}={v}" for k, v in env.items()),
        ]) + "\n")

    def _bin(self) -> None:
        folder = self.base / "bin"
        folder.mkdir(parents=True, exist_ok=True)
        python = folder / "python3"
        if not python.exists():
            python.symlink_to(sys.executable)
        # a copy, not a link: the VM's user must be able to read it wherever the checkout is (a
        # `mktemp -d` clone is 0700, which the user ubuntu cannot enter)
        docker = folder / "docker"
        shutil.copyfile(DOCKER_STANDIN, docker)
        docker.chmod(0o755)

    def _script(self) -> str:
        b = self.base
        lines = ["set -e", "mount -t tmpfs -o mode=0755 tmpfs /run", "mkdir -p /run/sshd"]
        for name in ("passwd", "group", "shadow"):
            lines.append(f"mount --bind {b / 'etc' / name} /etc/{name}")
        lines += [f"mount --bind {b / 'etc_ssh'} /etc/ssh", f"mount --bind {b / 'home'} /home",
                  f"mount --bind {b / 'bin'} /usr/local/bin"]
        if Path("/root/.pyenv").is_dir():
            lines += [f"mount --bind /root/.pyenv {b / 'pyenv'}", "mount -t tmpfs -o mode=0711 tmpfs /root",
                      "mkdir /root/.pyenv", f"mount --bind {b / 'pyenv'} /root/.pyenv"]
        lines += ["exec /usr/sbin/sshd -D -e -f /etc/ssh/sshd_config"]
        return "\n".join(lines)

    def start(self) -> FakeVM:
        for name in ("pyenv", "home"):
            (self.base / name).mkdir(parents=True, exist_ok=True)
        self.home.mkdir(parents=True, exist_ok=True)
        os.chown(self.home, UID, UID)
        self._etc()
        self._ssh()
        self._bin()
        log = (self.base / "vm.log").open("ab")
        self.proc = subprocess.Popen(
            ["unshare", "--pid", "--fork", "--mount", "--mount-proc", "--kill-child", "bash", "-c", self._script()],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        end_namespace(self.proc)
        self.proc = None

    def docker_calls(self) -> list[list[str]]:
        """Every docker command line the VM ran (the stand-in's log)."""
        path = self.home / ".docker-standin.log"
        return [shlex.split(line) for line in path.read_text().splitlines()] if path.exists() else []
