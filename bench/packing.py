"""Packing against padding on the tiny model on the CPU: real (non-pad) tokens trained per second and
the share of computed positions that were padding, for the same data, model and hyperparameters,
both runs in the same session.

    python bench/packing.py [--epochs 1] [--batch-size 8] [--max-seq-length 256] [--runs 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "examples" / "chats.jsonl"


def run(folder: Path, job: dict, env: dict[str, str]) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "job.json").write_text(json.dumps(job))
    subprocess.run([sys.executable, "-m", "remote.train", "--config", str(folder / "job.json")], env=env, cwd=folder,
                   check=True, capture_output=True)
    return dict(json.loads((folder / "output" / "metrics.json").read_text()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-seq-length", type=int, default=256)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
        model = base / "tiny"
        subprocess.run([sys.executable, "-m", "remote.tiny_model", str(model), "--data", str(SAMPLE)], env=env,
                       check=True, capture_output=True)
        job = {"job_id": "bench", "model": str(model), "datasets": [str(SAMPLE)], "epochs": args.epochs,
               "batch_size": args.batch_size, "max_seq_length": args.max_seq_length, "eval_fraction": 0, "lr": 0.005}
        results: dict[str, list[dict]] = {"padded (plain Trainer, right padding)": [], "packed (rtrain)": []}
        for i in range(args.runs):
            results["padded (plain Trainer, right padding)"].append(
                run(base / f"pad{i}", {**job, "packing": False}, env))
            results["packed (rtrain)"].append(run(base / f"pack{i}", {**job, "packing": True}, env))
    print(f"tiny model, CPU, {args.epochs:g} epoch of {SAMPLE.name}, batch {args.batch_size}, "
          f"max_seq_length {args.max_seq_length}, median of {args.runs}")
    print(f"{'':<40} {'steps':>6} {'real tok/s':>11} {'x padded':>9} {'padding':>8} {'runtime s':>10}")
    baseline = statistics.median(m["tokens_per_s"] for m in results["padded (plain Trainer, right padding)"])
    for name, runs in results.items():
        tps = statistics.median(m["tokens_per_s"] for m in runs)
        waste = statistics.median(m["padding_waste"] for m in runs)
        runtime = statistics.median(m["runtime_s"] for m in runs)
        print(f"{name:<40} {runs[0]['steps']:>6} {tps:>11,.0f} {tps / baseline:>9.2f} {waste:>8.1%} {runtime:>10.1f}")


if __name__ == "__main__":
    main()
