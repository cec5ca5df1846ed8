"""The trainer image, checked without a Docker engine: the Dockerfile parsed, every shell script
through shellcheck, and the watchdog run for real against a local HTTP endpoint."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import ROOT
from http_json import send_json

DOCKER = ROOT / "docker"


@pytest.fixture(scope="module")
def dockerfile():
    from dockerfile_parse import DockerfileParser

    parser = DockerfileParser(path=str(DOCKER / "Dockerfile"))
    return parser


def instructions(parser, name: str) -> list[str]:
    return [i["value"] for i in parser.structure if i["instruction"] == name]


def test_base_image_has_cuda_12_8_or_newer_with_cudnn(dockerfile) -> None:
    match = re.match(r"nvidia/cuda:(\d+)\.(\d+)\.\d+-cudnn-(?:devel|runtime)-ubuntu(\d+\.\d+)$", dockerfile.baseimage)
    assert match, dockerfile.baseimage
    major, minor, ubuntu = int(match[1]), int(match[2]), match[3]
    assert (major, minor) >= (12, 8) and ubuntu == "24.04"


def test_arch_list_covers_ampere_to_blackwell(dockerfile) -> None:
    arches = dockerfile.envs["TORCH_CUDA_ARCH_LIST"].split(";")
    for arch in ("8.0", "9.0", "10.0", "12.0"):
        assert arch in arches


def test_torch_comes_from_a_cu128_or_newer_index(dockerfile) -> None:
    runs = " ".join(instructions(dockerfile, "RUN"))
    match = re.search(r"download\.pytorch\.org/whl/cu(\d+)\s+torch==[\d.]+", runs)
    assert match and int(match[1]) >= 128


def test_no_xformers_wheel_anywhere() -> None:
    pinned = (DOCKER / "requirements.txt").read_text() + (DOCKER / "requirements-unsloth.txt").read_text()
    assert not [line for line in pinned.splitlines() if line.strip().lower().startswith("xformers")]
    runs = (DOCKER / "Dockerfile").read_text()
    # unsloth's metadata asks for xformers: it must be installed without its dependencies
    assert "pip install --no-deps -r /tmp/rtrain/requirements-unsloth.txt" in runs
    assert re.search(r"pip install[^\n]*xformers", runs) is None


def test_every_requirement_is_pinned() -> None:
    for name in ("requirements.txt", "requirements-unsloth.txt"):
        for line in (DOCKER / name).read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                assert re.fullmatch(r"[A-Za-z0-9_.-]+==[\w.]+", line.strip()), line


def test_sshd_is_installed_at_build_time_and_start_sh_is_the_entrypoint(dockerfile) -> None:
    runs = " ".join(instructions(dockerfile, "RUN"))
    assert "openssh-server" in runs and "rm -f /etc/ssh/ssh_host_*" in runs  # no host key baked in
    entrypoint = json.loads(instructions(dockerfile, "ENTRYPOINT")[-1])
    assert entrypoint[-1] == "/usr/local/bin/start.sh"
    copies = " ".join(instructions(dockerfile, "COPY"))
    assert "docker/start.sh" in copies and "docker/watchdog.sh" in copies
    assert dockerfile.envs["HF_HOME"].startswith("/workspace/")
    assert instructions(dockerfile, "WORKDIR")[-1] == "/workspace"


def test_no_secret_in_the_image_definition() -> None:
    text = "\n".join(p.read_text() for p in DOCKER.iterdir() if p.is_file())
    for pattern in (r"PRIVATE KEY-----", r"hf_[A-Za-z0-9]{20,}", r"rpa_[A-Za-z0-9]{20,}", r"API_KEY=\S+"):
        assert not re.search(pattern, text), pattern
    dockerignore = (ROOT / ".dockerignore").read_text().split()
    assert dockerignore[:2] == ["*", "!docker/"]  # the build context is docker/ only: no .env can slip in


def test_shellcheck_is_clean_on_every_shell_script() -> None:
    if shutil.which("shellcheck") is None:
        pytest.fail("shellcheck is missing: apt-get install shellcheck (the README's test command does)")
    scripts = sorted({*ROOT.glob("docker/*.sh"), *ROOT.glob("tests/*.sh"), ROOT / ".ci" / "run"})
    result = subprocess.run(["shellcheck", *map(str, scripts)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


# the watchdog ------------------------------------------------------------------------------------


class GraphQLRecorder(BaseHTTPRequestHandler):
    calls: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        GraphQLRecorder.calls.append({"auth": self.headers.get("Authorization"), "body": body})
        send_json(self, 200, {"data": {"podTerminate": None}})

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def api():
    GraphQLRecorder.calls = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), GraphQLRecorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/graphql"
    server.shutdown()
    server.server_close()


def job(jobs: Path, name: str, *, armed: int | None, finished_ago: float | None, followed_ago: float | None = None):
    d = jobs / name
    d.mkdir(parents=True)
    now = time.time()
    if armed is not None:
        (d / "watchdog").write_text(f"{armed}\n")
    if finished_ago is not None:
        (d / "exit_code").write_text("0\n")
        os.utime(d / "exit_code", (now - finished_ago, now - finished_ago))
    if followed_ago is not None:
        (d / ".followed").touch()
        os.utime(d / ".followed", (now - followed_ago, now - followed_ago))


def run_watchdog(jobs: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    base = {"PATH": "/usr/bin:/bin", "RTRAIN_WATCHDOG_INTERVAL": "0", "RUNPOD_POD_ID": "podabc123"}
    return subprocess.run([str(DOCKER / "watchdog.sh"), str(jobs), "--once"], capture_output=True, text=True,
                          env={**base, **env}, timeout=30)


def test_watchdog_is_off_unless_armed(tmp_path: Path, api: str) -> None:
    job(tmp_path, "j1", armed=None, finished_ago=10_000)
    result = run_watchdog(tmp_path, {"RTRAIN_WATCHDOG_API_KEY": "wd-key", "RTRAIN_WATCHDOG_API_URL": api})
    assert result.returncode == 1 and GraphQLRecorder.calls == []


def test_watchdog_waits_while_the_job_runs_or_is_followed(tmp_path: Path, api: str) -> None:
    job(tmp_path, "running", armed=60, finished_ago=None)
    job(tmp_path, "followed", armed=60, finished_ago=10_000, followed_ago=5)
    result = run_watchdog(tmp_path, {"RTRAIN_WATCHDOG_API_KEY": "wd-key", "RTRAIN_WATCHDOG_API_URL": api})
    assert result.returncode == 1 and GraphQLRecorder.calls == []


def test_watchdog_ends_an_abandoned_pod_through_the_api(tmp_path: Path, api: str) -> None:
    job(tmp_path, "done", armed=60, finished_ago=600, followed_ago=300)
    result = run_watchdog(tmp_path, {"RTRAIN_WATCHDOG_API_KEY": "wd-key", "RTRAIN_WATCHDOG_API_URL": api})
    assert result.returncode == 0, result.stderr
    assert len(GraphQLRecorder.calls) == 1
    call = GraphQLRecorder.calls[0]
    assert call["auth"] == "Bearer wd-key"
    assert "podTerminate(input: $input)" in call["body"]["query"]
    assert call["body"]["variables"] == {"input": {"podId": "podabc123"}}
    assert "wd-key" not in result.stderr and "job done finished" in result.stderr


def test_watchdog_prefers_runpodctl(tmp_path: Path, api: str) -> None:
    # runpodctl cannot reach RunPod from here: a stand-in on PATH records how it was called
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "runpodctl.args"
    (bin_dir / "runpodctl").write_text(f'#!/bin/sh\necho "$@" > {record}\n')
    (bin_dir / "runpodctl").chmod(0o755)
    jobs = tmp_path / "jobs"
    job(jobs, "done", armed=30, finished_ago=100)
    result = run_watchdog(jobs, {"PATH": f"{bin_dir}:/usr/bin:/bin", "RTRAIN_WATCHDOG_API_URL": api})
    assert result.returncode == 0, result.stderr
    assert record.read_text().strip() == "remove pod podabc123" and GraphQLRecorder.calls == []


def test_watchdog_without_a_way_to_end_the_pod_says_so(tmp_path: Path) -> None:
    job(tmp_path, "done", armed=30, finished_ago=100)
    result = run_watchdog(tmp_path, {"RUNPOD_POD_ID": ""})
    assert result.returncode == 1 and "cannot end this pod" in result.stderr


def test_runpod_template_matches_the_image_and_holds_no_secret() -> None:
    from launcher.config import Settings

    template = json.loads((ROOT / "templates" / "runpod-template.json").read_text())
    assert template["imageName"] == Settings.model_fields["image"].default
    assert template["ports"] == "22/tcp" and template["volumeMountPath"] == "/workspace"
    assert template["containerDiskInGb"] == 40
    names = {e["key"] for e in template["env"]}
    assert {"PUBLIC_KEY", "SSH_PUBLIC_KEY", "RTRAIN_SSH_HOST_KEY"} <= names
    assert all(e["value"] == "" for e in template["env"])
    start_sh = (DOCKER / "start.sh").read_text()
    assert all(name in start_sh for name in names - {"HF_TOKEN"})  # every documented name is honoured
