"""`rtrain doctor` through the CLI: one line per check, exit 0 only when all pass, keys named but never
shown, each key that is set tried against the provider (the fake RunPod here)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from conftest import RUNPOD_KEY
from fake_runpod import FakeRunPod


def checks(result) -> dict[str, dict]:  # type: ignore[no-untyped-def]
    return {c["name"]: c for c in json.loads(result.out)["checks"]}


def test_a_ready_machine_passes_every_check(home: Path, cli_proc, monkeypatch) -> None:
    monkeypatch.delenv("RUNPOD_API_KEY", raising=False)
    monkeypatch.delenv("LAMBDA_API_KEY", raising=False)
    result = cli_proc("doctor", "--json")
    assert result.code == 0, result.out + result.err
    found = checks(result)
    assert {"python", "rtrain", "RTRAIN_HOME", "free disk", "training stack", "device", "RunPod key",
            "Lambda Cloud key"} <= set(found)
    assert "torch 2." in found["training stack"]["detail"] and found["device"]["detail"].startswith("CPU")
    assert "not set" in found["RunPod key"]["detail"]
    plain = cli_proc("doctor")
    assert plain.code == 0 and "all checks passed" in plain.out
    assert len([line for line in plain.out.splitlines() if line.startswith(("ok", "FAIL"))]) == len(found)


def test_a_key_the_provider_rejects_fails_and_is_never_shown(home: Path, tmp_path: Path, cli_proc,
                                                            monkeypatch) -> None:
    fake = FakeRunPod(tmp_path / "pods", api_key=RUNPOD_KEY).start()
    try:
        monkeypatch.setenv("RTRAIN_RUNPOD_API_URL", fake.url)
        monkeypatch.setenv("RUNPOD_API_KEY", RUNPOD_KEY)
        accepted = cli_proc("doctor", "--json")
        assert accepted.code == 0 and "accepts it" in checks(accepted)["RunPod key"]["detail"]
        monkeypatch.setenv("RUNPOD_API_KEY", "rpa_not-the-right-key-123")
        rejected = cli_proc("doctor")
        assert rejected.code == 1
        assert "RunPod" in rejected.out and "rejects it" in rejected.out and "some checks failed" in rejected.out
        assert "not-the-right-key" not in rejected.out + rejected.err and RUNPOD_KEY not in accepted.out
    finally:
        fake.stop()


def test_a_shared_rtrain_home_fails_with_the_reason(tmp_path: Path, cli_proc, monkeypatch) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    monkeypatch.setenv("RTRAIN_HOME", str(shared))
    result = cli_proc("doctor", "--json")
    assert result.code == 1
    found = checks(result)
    assert not found["RTRAIN_HOME"]["ok"] and "others can write to it" in found["RTRAIN_HOME"]["detail"]
    assert oct(shared.stat().st_mode & 0o777) == "0o777"  # looked at, never changed
