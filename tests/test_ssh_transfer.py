"""Transfers over a real OpenSSH sshd pod (tests/pods.py): Nagle off on the executor's socket, uploads
through one stream, and large downloads through OpenSSH's own client with the pinned host key."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from pods import FakePod, can_run_pods, free_port

from launcher.backends.base import SSHEndpoint
from launcher.downloads import BULK, download_outputs
from launcher.errors import ProviderError
from launcher.executor.ssh import SSHExecutor
from launcher.keys import create_job_keys
from launcher.transfer import upload_blob
from remote.outputs import publish, sha256_file, staging_dir

pytestmark = pytest.mark.skipif(can_run_pods() is not None, reason=str(can_run_pods()))


@pytest.fixture
def pod_and_executor(tmp_path: Path):
    keys = create_job_keys(tmp_path / "home", "transfer")
    host = "127.0.6.7"
    pod = FakePod(tmp_path / "pod", host, free_port(host),
                  {"PUBLIC_KEY": keys.client_public, "RTRAIN_SSH_HOST_KEY": keys.host_private or ""}).start()
    ex = SSHExecutor(SSHEndpoint(host, pod.port, "root"), keys)
    try:
        yield pod, ex, keys
    finally:
        ex.close()
        pod.stop()


def test_nagle_is_off_and_a_small_upload_is_one_stream(pod_and_executor, tmp_path: Path) -> None:
    pod, ex, _ = pod_and_executor
    assert ex.run("true").ok
    sock = ex.connect().get_transport().sock  # type: ignore[union-attr]
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    small = tmp_path / "small.txt"
    small.write_bytes(b"x" * 200)
    up = upload_blob(ex, small, "/workspace/blobs")
    assert up.sent == 200 and (pod.workspace / "blobs" / up.sha256).read_bytes() == small.read_bytes()


def make_output(pod: FakePod, size: int) -> Path:
    out = pod.workspace / "out"
    stage = staging_dir(out)
    stage.mkdir(parents=True, exist_ok=True)
    (stage / "adapter").mkdir()
    with (stage / "adapter" / "big.bin").open("wb") as fh:
        for _ in range(size >> 20):
            fh.write(os.urandom(1 << 20))
    (stage / "metrics.json").write_text("{}")
    publish(stage, out)
    return out


def test_a_large_output_comes_through_openssh_verified(pod_and_executor, tmp_path: Path, monkeypatch) -> None:
    pod, ex, _ = pod_and_executor
    out = make_output(pod, BULK + (1 << 20))
    used: list[str] = []
    real = ex.bulk_stdout
    monkeypatch.setattr(ex, "bulk_stdout", lambda command: used.append(command) or real(command))
    dest = tmp_path / "local" / "out"
    files = download_outputs(ex, "/workspace/out", dest, ("/workspace/out", []))
    assert used, "a download this large should go through OpenSSH's ssh"
    assert sha256_file(dest / "adapter" / "big.bin") == sha256_file(out / "adapter" / "big.bin")
    assert set(files) == {"adapter/big.bin", "metrics.json"}


def test_openssh_refuses_a_machine_with_another_host_key(pod_and_executor, tmp_path: Path) -> None:
    pod, ex, _ = pod_and_executor
    make_output(pod, BULK + (1 << 20))
    ex.keys = create_job_keys(tmp_path / "home", "someone-else")  # the host key rtrain expects differs
    ex.keys.client_private_path.write_bytes(  # the login key is still right: only the host key is wrong
        (tmp_path / "home" / "keys" / "transfer" / "id_ed25519").read_bytes())
    proc = ex.bulk_stdout("tar -C /workspace/out -cf - .")
    assert proc is not None
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 255 and out == b""
    assert b"Host key verification failed" in err
    dest = tmp_path / "refused"
    with pytest.raises(ProviderError):
        download_outputs(ex, "/workspace/out", dest, ("/workspace/out", []))
    assert not dest.exists()
