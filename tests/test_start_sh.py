"""docker/start.sh, the pod's entrypoint, run for real: sshd in a private namespace, checked with a
real OpenSSH client (host key pinning, who may log in, what a session sees)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pods import FakePod, can_run_pods, free_port, ssh_keygen

pytestmark = pytest.mark.skipif(can_run_pods() is not None, reason=str(can_run_pods()))


@pytest.fixture
def keys(tmp_path: Path) -> dict:
    client, client_pub = ssh_keygen(tmp_path / "client")
    other, other_pub = ssh_keygen(tmp_path / "other")
    host, host_pub = ssh_keygen(tmp_path / "host")
    return {"client": client, "client_pub": client_pub, "other": other, "other_pub": other_pub,
            "host": host, "host_pub": host_pub}


@pytest.fixture
def make_pod(tmp_path: Path):
    pods: list[FakePod] = []
    counter = iter(range(20, 250))

    def make(env: dict[str, str]) -> FakePod:
        host = f"127.0.1.{next(counter)}"
        pod = FakePod(tmp_path / f"pod{len(pods)}", host, free_port(host), env).start()
        pods.append(pod)
        return pod

    yield make
    for pod in pods:
        pod.stop()


def known_hosts(tmp_path: Path, pod: FakePod, host_pub: str) -> Path:
    path = tmp_path / f"known_hosts_{pod.port}"
    path.write_text(f"[{pod.host}]:{pod.port} {host_pub}\n")
    return path


def ssh(pod: FakePod, key: Path, known: Path | None, command: str = "echo ok",
        *extra: str) -> subprocess.CompletedProcess:
    opts = ["-o", "BatchMode=yes", "-o", "ConnectTimeout=5", "-o", "IdentitiesOnly=yes", "-o", "LogLevel=ERROR"]
    if known is None:
        opts += ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]
    else:
        opts += ["-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={known}"]
    return subprocess.run(["ssh", "-i", str(key), "-p", str(pod.port), *opts, *extra, f"root@{pod.host}", command],
                          capture_output=True, text=True, timeout=30)


def keyscan(pod: FakePod) -> list[str]:
    out = subprocess.run(["ssh-keyscan", "-p", str(pod.port), "-t", "rsa,ecdsa,ed25519", pod.host],
                         capture_output=True, text=True, timeout=30).stdout
    return [line.split(" ", 1)[1] for line in out.splitlines() if line and not line.startswith("#")]


def test_injected_host_key_is_the_only_one_and_the_pinned_login_works(tmp_path, keys, make_pod) -> None:
    pod = make_pod({"PUBLIC_KEY": keys["client_pub"], "RTRAIN_SSH_HOST_KEY": keys["host"].read_text()})
    offered = keyscan(pod)
    pinned = " ".join(keys["host_pub"].split()[:2])
    assert offered == [pinned]
    result = ssh(pod, keys["client"], known_hosts(tmp_path, pod, keys["host_pub"]))
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
    assert "[start] installed the injected ed25519 host key" in pod.log


def test_a_different_host_key_is_refused_by_a_strict_client(tmp_path, keys, make_pod) -> None:
    pod = make_pod({"PUBLIC_KEY": keys["client_pub"], "RTRAIN_SSH_HOST_KEY": keys["host"].read_text()})
    result = ssh(pod, keys["client"], known_hosts(tmp_path, pod, keys["other_pub"]))
    assert result.returncode == 255 and "HOST IDENTIFICATION HAS CHANGED" in result.stderr


def test_wrong_key_and_passwords_are_refused(tmp_path, keys, make_pod) -> None:
    pod = make_pod({"PUBLIC_KEY": keys["client_pub"], "RTRAIN_SSH_HOST_KEY": keys["host"].read_text()})
    known = known_hosts(tmp_path, pod, keys["host_pub"])
    wrong = ssh(pod, keys["other"], known)
    assert wrong.returncode == 255 and "Permission denied (publickey)" in wrong.stderr
    password = ssh(pod, keys["client"], known, "echo ok", "-o", "PubkeyAuthentication=no",
                   "-o", "PreferredAuthentications=password,keyboard-interactive")
    assert password.returncode == 255 and "Permission denied (publickey)" in password.stderr  # not even offered


@pytest.mark.parametrize("variable", ["PUBLIC_KEY", "SSH_PUBLIC_KEY"])
def test_either_env_name_authorizes_a_key(keys, make_pod, variable: str) -> None:
    pod = make_pod({variable: keys["client_pub"]})
    assert ssh(pod, keys["client"], None).returncode == 0
    assert ssh(pod, keys["other"], None).returncode == 255


def test_several_keys_across_both_names_and_escaped_newlines(tmp_path, keys, make_pod) -> None:
    third, third_pub = ssh_keygen(tmp_path / "third")
    pod = make_pod({"PUBLIC_KEY": keys["client_pub"] + "\\n" + third_pub, "SSH_PUBLIC_KEY": keys["other_pub"]})
    for key in (keys["client"], keys["other"], third):
        assert ssh(pod, key, None).returncode == 0, key
    assert "authorized 3 key(s) for root" in pod.log


def test_no_key_leaves_sshd_up_but_nobody_gets_in(keys, make_pod) -> None:
    pod = make_pod({})
    assert len(keyscan(pod)) == 1  # sshd answers, with a generated ed25519 key
    assert ssh(pod, keys["client"], None).returncode == 255
    assert "nobody can log in" in pod.log and "generated an ed25519 host key" in pod.log


def test_a_bad_injected_host_key_falls_back_loudly(keys, make_pod) -> None:
    pod = make_pod({"PUBLIC_KEY": keys["client_pub"], "RTRAIN_SSH_HOST_KEY": "not a key"})
    assert ssh(pod, keys["client"], None).returncode == 0
    assert "is not an OpenSSH ed25519 private key" in pod.log


def test_sessions_see_the_pod_env_but_not_the_keys(keys, make_pod) -> None:
    pod = make_pod({"PUBLIC_KEY": keys["client_pub"], "RTRAIN_SSH_HOST_KEY": keys["host"].read_text(),
                    "RUNPOD_POD_ID": "pod-42", "HF_HOME": "/workspace/hf cache",
                    "RTRAIN_WATCHDOG_API_KEY": "wd-secret"})
    result = ssh(pod, keys["client"], None, "env")
    assert result.returncode == 0, result.stderr
    env = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    assert env["RUNPOD_POD_ID"] == "pod-42" and env["HF_HOME"] == "/workspace/hf cache"
    assert env["PATH"].split(":")[0] == os.path.dirname(sys.executable)  # the image's python comes first
    for secret in ("PUBLIC_KEY", "SSH_PUBLIC_KEY", "RTRAIN_SSH_HOST_KEY", "RTRAIN_WATCHDOG_API_KEY"):
        assert secret not in env
    assert "wd-secret" not in result.stdout and "PRIVATE KEY" not in result.stdout


def test_the_pod_has_its_own_workspace(keys, make_pod) -> None:
    pod = make_pod({"PUBLIC_KEY": keys["client_pub"]})
    assert ssh(pod, keys["client"], None, "echo hi > /workspace/note && ls -ld /root/.ssh").returncode == 0
    assert (pod.workspace / "note").read_text() == "hi\n"
    assert not Path("/workspace/note").exists()
