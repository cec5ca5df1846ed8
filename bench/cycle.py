"""Whole-cycle launcher overhead: `rtrain launch` (local backend, and RunPod against the fake API with
instant boot and real sshd pods) against running the trainer directly on the same job, in the same run.

    sudo python bench/cycle.py [--runs 3] [--steps 5]

Prints seconds and ratios to the direct trainer run (which is mostly Python importing torch), then
where each launch spent its time, phase by phase (from the phase events the registry records): what
is not the trainer's own run is the launcher's overhead.
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


def timed(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[float, dict[str, float]]:
    """Seconds the command took, and for a launch, seconds per phase (``startup``: the process start
    to the first phase: imports, validation, the estimate; the last phase runs to the process's end)."""
    t0 = time.time()
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    t1 = time.time()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    phases: dict[str, float] = {}
    if "--json" in cmd:
        from launcher.state import Registry

        job_id = json.loads(proc.stdout.strip().splitlines()[-1])["job_id"]
        registry = Registry(Path(env["RTRAIN_HOME"]) / "state.db")
        marks = [(e["data"]["phase"], e["ts"]) for e in registry.events(job_id) if e["kind"] == "phase" and e["data"]]
        edges = [("startup", t0), *marks, ("end", t1)]
        for (name, start), (_, end) in zip(edges, edges[1:], strict=False):
            phases[name] = phases.get(name, 0.0) + end - start
    return t1 - t0, phases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    from common import fake_runpod, tiny_home

    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        home, env = tiny_home(base)
        # the baseline runs exactly the job the launches run: job.json made from the same spec
        from launcher.config import Settings
        from launcher.plan import validate
        from launcher.uploads import trainer_config

        os.environ.update(env)
        plan = validate({"max_steps": args.steps, "datasets": [str(SAMPLE)], "backend": "local"}, "tiny-cpu",
                        Settings(), to_launch=False)
        job = trainer_config(plan.spec, "direct", [str(SAMPLE)], [])
        job["model"] = str(home / "models" / "rtrain-tiny")
        direct_dir = base / "direct"
        direct_dir.mkdir()
        (direct_dir / "job.json").write_text(json.dumps(job))
        fake = fake_runpod(base, env)
        launch = [sys.executable, "-m", "launcher.cli", "launch", "--template", "tiny-cpu", "--dataset", str(SAMPLE),
                  "--max-steps", str(args.steps), "--yes", "--json"]
        try:
            names = {"direct": "trainer run directly (baseline)", "local": "rtrain launch --local",
                     "runpod": "rtrain launch --gpu h100 (fake RunPod, sshd pod)"}
            rows: dict[str, list[float]] = {name: [] for name in names.values()}
            phases: dict[str, list[dict[str, float]]] = {name: [] for name in names.values()}
            for _ in range(args.runs):
                direct = [sys.executable, "-m", "remote.train", "--config", str(direct_dir / "job.json")]
                for name, cmd, cwd in ((names["direct"], direct, direct_dir),
                                       (names["local"], launch + ["--local"], base),
                                       (names["runpod"], launch + ["--gpu", "h100"], base)):
                    seconds, split = timed(cmd, env, cwd)
                    rows[name].append(seconds)
                    phases[name].append(split)
            assert fake.running() == []
        finally:
            fake.stop()
    base_s = statistics.median(rows["trainer run directly (baseline)"])
    print(f"{args.steps} steps on the tiny model, median of {args.runs}")
    print(f"{'':<50} {'seconds':>8} {'x direct':>9} {'overhead s':>11}")
    for name, samples in rows.items():
        s = statistics.median(samples)
        print(f"{name:<50} {s:>8.2f} {s / base_s:>9.2f} {s - base_s:>11.2f}")
    for name, runs in phases.items():
        if not runs[0]:
            continue
        print(f"\n{name}: seconds per phase (median; 'follow' holds the trainer's own {base_s:.2f} s)")
        for phase in runs[0]:
            print(f"  {phase:<12} {statistics.median(r.get(phase, 0.0) for r in runs):>7.2f}")


if __name__ == "__main__":
    main()
