"""The contract every registered backend keeps, checked the same way for each through the CLI: a job
trains and comes home verified with nothing left running; a detached job ends with `rtrain down`; a
backend declares what it is and what it lacks. A provider added to the registry without a test fake
fails here until it has one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import SAMPLE, last_json, launch

from launcher.backends import REGISTRY, backend_class
from launcher.backends.base import FEATURES
from launcher.downloads import verify_manifest

#: backend -> the fixture that serves it (its fake provider), and the flags that pick it
FAKES = {"local": (None, ["--local"]),
         "runpod": ("runpod", ["--backend", "runpod", "--gpu", "h100", "--yes"]),
         "lambda": ("lambda_cloud", ["--backend", "lambda", "--gpu", "h100", "--yes"])}


def test_every_registered_backend_has_a_fake_and_declares_itself() -> None:
    assert set(REGISTRY) == set(FAKES), "a registered backend needs its test fake here"
    for name in REGISTRY:
        cls = backend_class(name)
        assert cls.name == name and cls.title and set(cls.lacks) <= set(FEATURES)
        assert (cls.key_env is None) == (name == "local")


@pytest.fixture(params=sorted(REGISTRY))
def backend(request, home_with_tiny: Path) -> tuple[str, list[str], object]:
    fixture, flags = FAKES[request.param]
    fake = request.getfixturevalue(fixture) if fixture else None
    return request.param, flags, fake


def nothing_left(name: str, fake: object, home: Path, job_id: str) -> None:
    if name == "local":
        assert not (home / "local" / "jobs" / job_id).exists()
    else:
        assert fake.running() == []  # type: ignore[attr-defined]
        assert not getattr(fake, "ssh_keys", {})
    assert not (home / "keys" / job_id).exists()


def test_a_job_trains_and_comes_home_verified(backend, home_with_tiny: Path, cli_proc) -> None:
    name, flags, fake = backend
    proc = launch(*flags, "--template", "tiny-cpu", "--dataset", str(SAMPLE), "--max-steps", "3", "--json")
    assert proc.returncode == 0, proc.stderr
    job = last_json(proc)
    assert (job["status"], job["backend"], job["steps"]) == ("succeeded", name, 3)
    assert len(verify_manifest(Path(job["output_dir"]))) >= 4
    nothing_left(name, fake, home_with_tiny, job["job_id"])
    listed = json.loads(cli_proc("ls", "--json").out)
    assert [(j["job_id"], j["status"], j["backend"]) for j in listed] == [(job["job_id"], "succeeded", name)]


def test_a_detached_job_is_ended_by_down(backend, home_with_tiny: Path, cli_proc) -> None:
    name, flags, fake = backend
    proc = launch(*flags, "--template", "tiny-cpu", "--dataset", str(SAMPLE), "--detach", "--json")
    assert proc.returncode == 0, proc.stderr
    job = last_json(proc)
    assert job["status"] == "running"
    down = cli_proc("down", job["job_id"])
    assert down.code == 0, down.err
    shown = json.loads(cli_proc("show", job["job_id"], "--json").out)
    assert shown["status"] == "interrupted" and shown["error"] == "stopped by rtrain down"
    nothing_left(name, fake, home_with_tiny, job["job_id"])
