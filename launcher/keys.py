"""Per-job SSH keys: a fresh ed25519 client key, and the pod's host key made here so that the very
first connection already checks a known host key (no trust on first use, no StrictHostKeyChecking=no).

Kept under ``$RTRAIN_HOME/keys/<job-id>/`` (0700/0600): the client key pair and the host's *public*
key. The host's private key is sent to the pod once (``RTRAIN_SSH_HOST_KEY``, installed by
docker/start.sh) and never written here.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from launcher.paths import ensure_private_dir


def _ed25519_pair(comment: str) -> tuple[str, str]:
    """(OpenSSH private key PEM, ``ssh-ed25519 AAAA... comment`` public line)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    ).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    return private, f"{public} {comment}"


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


@dataclass
class JobKeys:
    folder: Path
    client_public: str
    host_public: str
    #: only set right after ``create_job_keys``: it goes into the pod's env and nowhere else
    host_private: str | None = None

    @property
    def client_private_path(self) -> Path:
        return self.folder / "id_ed25519"

    def known_hosts_line(self, host: str, port: int) -> str:
        where = host if port == 22 else f"[{host}]:{port}"
        return f"{where} {' '.join(self.host_public.split()[:2])}"


def keys_dir(home: Path, job_id: str) -> Path:
    return home / "keys" / job_id


def create_job_keys(home: Path, job_id: str) -> JobKeys:
    folder = ensure_private_dir(keys_dir(home, job_id))
    client_private, client_public = _ed25519_pair(f"rtrain-{job_id}")
    host_private, host_public = _ed25519_pair(f"rtrain-{job_id}-host")
    _write_private(folder / "id_ed25519", client_private)
    _write_private(folder / "id_ed25519.pub", client_public + "\n")
    _write_private(folder / "host_ed25519.pub", host_public + "\n")
    return JobKeys(folder, client_public, host_public, host_private)


def load_job_keys(home: Path, job_id: str) -> JobKeys | None:
    folder = keys_dir(home, job_id)
    try:
        return JobKeys(folder, (folder / "id_ed25519.pub").read_text().strip(),
                       (folder / "host_ed25519.pub").read_text().strip())
    except FileNotFoundError:
        return None


def delete_job_keys(home: Path, job_id: str) -> None:
    shutil.rmtree(keys_dir(home, job_id), ignore_errors=True)
