"""Start-up time of `rtrain --help` and `rtrain ls`, as ratios against bare Python measured in the
same run (these machines are shared and noisy: compare ratios, not milliseconds).

    python bench/startup.py [--runs 20] [--jobs 200]

Target: both well under 200 ms on a laptop; SkyPilot's `sky --help` takes 1.4 s, dstack's 1.0 s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def timed(cmd: list[str], env: dict[str, str], runs: int) -> float:
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def fill_registry(home: Path, jobs: int) -> None:
    sys.path.insert(0, str(ROOT))
    from launcher.state import Registry

    reg = Registry(home / "state.db")
    for i in range(jobs):
        reg.create_job(f"bench-{i:05d}", name=None, backend="local", spec={"model": "m", "datasets": ["d"]},
                       workdir=None, output_dir=f"runs/bench-{i:05d}", pod_name=None)
        reg.update(f"bench-{i:05d}", status="succeeded", steps=60, final_loss=1.0, cost_usd=0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=200, help="jobs in the registry for `rtrain ls`")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        fill_registry(home, args.jobs)
        env = dict(os.environ, RTRAIN_HOME=str(home), PYTHONPATH=str(ROOT))
        py = [sys.executable]
        cli = py + ["-m", "launcher.cli"]
        base = timed(py + ["-c", "pass"], env, args.runs)
        rows = [
            ("python -c pass (baseline)", base),
            ("python -c 'import click'", timed(py + ["-c", "import click"], env, args.runs)),
            ("rtrain --help", timed(cli + ["--help"], env, args.runs)),
            (f"rtrain ls ({args.jobs} jobs)", timed(cli + ["ls"], env, args.runs)),
            (f"rtrain ls --json ({args.jobs} jobs)", timed(cli + ["ls", "--json"], env, args.runs)),
        ]
    print(f"{'command':<32} {'median ms':>10} {'x baseline':>11}")
    for name, secs in rows:
        print(f"{name:<32} {secs * 1000:>10.1f} {secs / base:>11.2f}")


if __name__ == "__main__":
    main()
