"""What the whole-job benchmarks share: a private RTRAIN_HOME with rtrain's tiny model built in it, and
the fake RunPod (tests/fake_runpod.py) with instant boot whose pods are real sshd machines."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "examples" / "chats.jsonl"
KEY = "bench-key"


def tiny_home(base: Path) -> tuple[Path, dict[str, str]]:
    """``base/home`` with the tiny model built, and the environment that points rtrain at it."""
    home = base / "home"
    env = dict(os.environ, RTRAIN_HOME=str(home), PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", RUNPOD_API_KEY=KEY)
    subprocess.run([sys.executable, "-m", "launcher.cli", "init-tiny-model", str(home / "models" / "rtrain-tiny")],
                   env=env, check=True, capture_output=True)
    return home, env


def fake_runpod(base: Path, env: dict[str, str]) -> Any:
    """The fake RunPod, started, with ``env`` pointed at it (stop it when done)."""
    sys.path[:0] = [str(ROOT / "tests")]
    from fake_runpod import FakeRunPod

    fake = FakeRunPod(base / "pods", api_key=KEY, boot_s=0.0, pod_env={"HF_HUB_OFFLINE": "1"}).start()
    env["RTRAIN_RUNPOD_API_URL"] = fake.url
    return fake
