"""Shared fixtures: a private RTRAIN_HOME per test, the tiny model built once per session, and ways
to run the real CLI (in-process for fast input checks, as a subprocess for whole jobs)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "examples" / "chats.jsonl"

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Several pytest-xdist workers share the cores: one torch thread per trainer, not several fighting per core.
os.environ.setdefault("OMP_NUM_THREADS", "1")
#: what the fake providers' machines have in their environment (a pod image would set these)
MACHINE_ENV = {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": os.environ["OMP_NUM_THREADS"]}


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto``: one and a half workers a core. A good part of every end-to-end test is waiting (on a
    fake machine booting, a Retry-After, a poll), which a third worker on two cores fills."""
    return max(2, int((os.cpu_count() or 2) * 1.5))


#: the modules whose tests take longest (whole jobs over fake providers): started first, so that no
#: worker is left with one of them at the end while the others are idle
FIRST = ("test_recovery_e2e", "test_lambda_e2e", "test_runpod_e2e", "test_trainer_e2e", "test_backend_contract",
         "test_formats_e2e", "test_dashboard", "test_first_run")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        module = item.module.__name__ if item.module is not None else ""
        return FIRST.index(module) if module in FIRST else len(FIRST)

    items.sort(key=rank)  # stable: within a module, the order tests are written in


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Path:
    """rtrain's tiny model, built once per test run (shared by the xdist workers, under a file lock)
    with the real builder (``python -m remote.tiny_model``)."""
    from filelock import FileLock

    shared = tmp_path_factory.getbasetemp() if worker_id == "master" else tmp_path_factory.getbasetemp().parent
    out = shared / "models" / "rtrain-tiny"
    with FileLock(str(shared / "tiny-model.lock")):
        if not (out / "config.json").is_file():
            env = dict(os.environ, PYTHONPATH=str(ROOT))
            subprocess.run([sys.executable, "-m", "remote.tiny_model", str(out), "--data", str(SAMPLE)],
                           check=True, env=env, capture_output=True)
    return out


def end_processes_under(folder: Path) -> None:
    """End the process group of every process whose working folder is under ``folder`` (a trainer a
    failed test left, a launcher, a fake machine): nothing a test started outlives it."""
    import signal

    mine = os.getpgrp()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cwd = os.readlink(proc / "cwd")
            group = os.getpgid(int(proc.name))
        except OSError:
            continue
        if (cwd == str(folder) or cwd.startswith(f"{folder}/")) and group != mine:
            try:
                os.killpg(group, signal.SIGKILL)
            except OSError:
                pass


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private RTRAIN_HOME and working folder; nothing of the user's is touched, and every process
    the test started there is ended when it ends (also when it fails)."""
    h = tmp_path / "rtrain-home"
    monkeypatch.setenv("RTRAIN_HOME", str(h))
    for var in ("RUNPOD_API_KEY", "LAMBDA_API_KEY", "HF_TOKEN", "RTRAIN_RUNS_DIR", "RTRAIN_LOCAL_PYTHON"):
        monkeypatch.delenv(var, raising=False)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    try:
        yield h
    finally:
        end_processes_under(tmp_path)


@pytest.fixture
def home_with_tiny(home: Path, tiny_model: Path) -> Path:
    """RTRAIN_HOME whose model cache already holds the session's tiny model (no rebuild per test)."""
    models = home / "models"
    models.mkdir(parents=True)
    (models / "rtrain-tiny").symlink_to(tiny_model, target_is_directory=True)
    return home


@pytest.fixture
def broken_model(tiny_model: Path, tmp_path: Path) -> Path:
    """The tiny model with damaged weights: the data checks pass, loading the model fails."""
    import shutil

    folder = tmp_path / "broken-model"
    shutil.copytree(tiny_model, folder)
    (folder / "model.safetensors").write_bytes(b"not safetensors at all")
    return folder


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch):
    """A real S3 endpoint on loopback (moto_server), with boto3 pointed at it through the environment,
    as a user's AWS_ENDPOINT_URL would. Yields a boto3 client; the bucket "rtrain" exists."""
    import socket
    import time

    import boto3

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(["moto_server", "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for key, value in {"AWS_ENDPOINT_URL": url, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        client = boto3.client("s3")
        client.create_bucket(Bucket="rtrain")
        yield client
    finally:
        proc.terminate()
        proc.wait(10)


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    def json_line(self) -> dict:
        return json.loads(self.out.strip().splitlines()[-1])


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]):
    """Run ``rtrain ARGS`` in this process through ``launcher.cli.main`` (exit-code mapping included)."""
    from launcher.cli import main

    def run(*args: str) -> CliResult:
        old = signal.getsignal(signal.SIGTERM)
        try:
            code = main(list(args))
        finally:
            signal.signal(signal.SIGTERM, old)
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


def rtrain_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "launcher.cli", *args]


@pytest.fixture
def cli_proc() -> Iterator:
    """Run ``rtrain ARGS`` as a real process (what a user runs), with the test's environment."""

    def run(*args: str, timeout: float = 900) -> CliResult:
        proc = subprocess.run(rtrain_cmd(*args), capture_output=True, text=True, timeout=timeout,
                              env=dict(os.environ, PYTHONPATH=str(ROOT)))
        return CliResult(proc.returncode, proc.stdout, proc.stderr)

    yield run


def wait_for_training(home: Path, proc: subprocess.Popen, timeout: float = 900) -> dict:
    """The newest job's registry row once it is training (phase follow, a step done); fails at once,
    with what the launcher said, if the launcher ``proc`` ends first."""
    import sqlite3
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read() if proc.stderr is not None else ""
            raise AssertionError(f"the launcher ended (exit {proc.returncode}) before training:\n{err[-3000:]}")
        if (home / "state.db").exists():
            db = sqlite3.connect(home / "state.db")
            db.row_factory = sqlite3.Row
            try:
                row = db.execute("SELECT * FROM jobs ORDER BY created_at DESC LIMIT 1").fetchone()
            except sqlite3.OperationalError:  # the launcher is still creating the registry
                row = None
            if row and row["phase"] == "follow" and (row["steps"] or 0) > 0:
                return dict(row)
        time.sleep(0.2)
    raise AssertionError("the job never reached training")


def stop_launcher(proc: subprocess.Popen) -> None:
    """If a test failed with the launcher still up, let it tear its job down (never leak a trainer)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()


def processes() -> Iterator[tuple[int, int, bytes]]:
    """(pid, parent pid, command line) of every process, from /proc."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        yield int(proc.name), int(stat.rsplit(")", 1)[1].split()[1]), cmdline


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def chat(*turns: tuple[str, str]) -> dict:
    return {"messages": [{"role": r, "content": c} for r, c in turns]}


#: The fake RunPod's API key: a secret no output or file may ever show.
RUNPOD_KEY = "rp-test-key-SECRET-0123456789"


@pytest.fixture
def runpod(tmp_path: Path, home_with_tiny: Path, monkeypatch: pytest.MonkeyPatch):
    """A fake RunPod API (tests/fake_runpod.py) whose pods are real sshd machines; no pod may outlive
    the test."""
    from fake_runpod import FakeRunPod
    from pods import can_run_pods

    if can_run_pods() is not None:
        pytest.skip(str(can_run_pods()))
    fake = FakeRunPod(tmp_path / "pods", api_key=RUNPOD_KEY, pod_env=dict(MACHINE_ENV)).start()
    monkeypatch.setenv("RUNPOD_API_KEY", RUNPOD_KEY)
    monkeypatch.setenv("RTRAIN_RUNPOD_API_URL", fake.url)
    monkeypatch.setenv("RTRAIN_READY_TIMEOUT_S", "60")
    try:
        yield fake
        leaked = fake.running()
        assert leaked == [], f"pods left running: {leaked}"
    finally:
        fake.stop()


def launch(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """``rtrain launch ARGS`` as a real process."""
    return subprocess.run(rtrain_cmd("launch", *args), capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))


def last_json(proc: subprocess.CompletedProcess) -> dict:
    return json.loads(proc.stdout.strip().splitlines()[-1])


def events(home: Path, job_id: str, kind: str | None = None) -> list[dict]:
    """A job's registry events (optionally of one kind), read straight from state.db."""
    import sqlite3

    db = sqlite3.connect(home / "state.db")
    try:
        rows = db.execute("SELECT kind, message, data FROM events WHERE job_id = ? ORDER BY id",
                          (job_id,)).fetchall()
    finally:
        db.close()
    return [{"kind": k, "message": m, "data": json.loads(d) if d else None} for k, m, d in rows
            if kind is None or k == kind]


#: The fake Lambda Cloud's API key: a secret no output or file may ever show.
LAMBDA_KEY = "lambda-test-key-SECRET-9876543210"


@pytest.fixture
def lambda_cloud(tmp_path: Path, home_with_tiny: Path, monkeypatch: pytest.MonkeyPatch):
    """A fake Lambda Cloud API (tests/fake_lambda.py) whose instances are real sshd VMs; no instance and
    no registered SSH key may outlive the test."""
    from fake_lambda import FakeLambda
    from pods import can_run_pods

    if can_run_pods() is not None:
        pytest.skip(str(can_run_pods()))
    fake = FakeLambda(tmp_path / "vms", api_key=LAMBDA_KEY, vm_env=dict(MACHINE_ENV)).start()
    monkeypatch.setenv("LAMBDA_API_KEY", LAMBDA_KEY)
    monkeypatch.setenv("RTRAIN_LAMBDA_API_URL", fake.url)
    monkeypatch.setenv("RTRAIN_READY_TIMEOUT_S", "60")
    try:
        yield fake
        leaked = fake.running()
        assert leaked == [], f"instances left running: {leaked}"
        assert fake.ssh_keys == {}, f"SSH keys left registered: {[k['name'] for k in fake.ssh_keys.values()]}"
    finally:
        fake.stop()
