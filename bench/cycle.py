"""Whole-cycle launcher overhead: `rtrain launch` (local backend, and RunPod against the fake API with
instant boot and real sshd pods) against running the trainer directly on the same job, in the same run.

    sudo python bench/cycle.py [--runs 3] [--steps 5]

Prints seconds and ratios to the direct trainer run (which is mostly Python importing torch).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
SAMPLE = ROOT / "examples" / "chats.jsonl"


def timed(cmd: list[str], env: dict[str, str], cwd: Path) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    from fake_runpod import FakeRunPod

    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        home = base / "home"
        env = dict(os.environ, RTRAIN_HOME=str(home), PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1",
                   RUNPOD_API_KEY="bench-key")
        subprocess.run([sys.executable, "-m", "launcher.cli", "init-tiny-model", str(home / "models" / "rtrain-tiny")],
                       env=env, check=True, capture_output=True)
        job = {"job_id": "direct", "model": str(home / "models" / "rtrain-tiny"), "datasets": [str(SAMPLE)],
               "max_steps": args.steps, "lr": 0.005, "batch_size": 8, "max_seq_length": 256}
        direct_dir = base / "direct"
        direct_dir.mkdir()
        (direct_dir / "job.json").write_text(json.dumps(job))
        fake = FakeRunPod(base / "pods", api_key="bench-key", boot_s=0.0, pod_env={"HF_HUB_OFFLINE": "1"}).start()
        env["RTRAIN_RUNPOD_API_URL"] = fake.url
        launch = [sys.executable, "-m", "launcher.cli", "launch", "--template", "tiny-cpu", "--dataset", str(SAMPLE),
                  "--max-steps", str(args.steps)]
        try:
            rows = {"trainer run directly (baseline)": [], "rtrain launch --local": [],
                    "rtrain launch --gpu h100 (fake RunPod, sshd pod)": []}
            for _ in range(args.runs):
                direct = [sys.executable, "-m", "remote.train", "--config", str(direct_dir / "job.json")]
                rows["trainer run directly (baseline)"].append(timed(direct, env, direct_dir))
                rows["rtrain launch --local"].append(timed(launch + ["--local"], env, base))
                rows["rtrain launch --gpu h100 (fake RunPod, sshd pod)"].append(
                    timed(launch + ["--gpu", "h100"], env, base))
            assert fake.running() == []
        finally:
            fake.stop()
    base_s = statistics.median(rows["trainer run directly (baseline)"])
    print(f"{args.steps} steps on the tiny model, median of {args.runs}")
    print(f"{'':<50} {'seconds':>8} {'x direct':>9} {'overhead s':>11}")
    for name, samples in rows.items():
        s = statistics.median(samples)
        print(f"{name:<50} {s:>8.2f} {s / base_s:>9.2f} {s - base_s:>11.2f}")


if __name__ == "__main__":
    main()
