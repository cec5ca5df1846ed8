"""``rtrain show JOB --plot FILE``: the loss and eval-loss curves as a PNG or SVG (matplotlib, from the
``ui`` extra, imported only here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from launcher.errors import UsageError

INSTALL_UI = "pip install -e '.[ui]'"


def plot_losses(events: list[dict[str, Any]], out: Path, title: str) -> Path:
    """Draw the ``step`` losses and ``eval`` losses of a job's trainer events into ``out``."""
    if out.suffix.lower() not in (".png", ".svg"):
        raise UsageError(f"--plot {out}: name a .png or .svg file")
    steps = [(e["step"], e["loss"]) for e in events if e.get("event") == "step" and "loss" in e]
    evals = [(e["step"], e["eval_loss"]) for e in events if e.get("event") == "eval" and "eval_loss" in e]
    if not steps and not evals:
        raise UsageError(f"--plot {out}: the job has no loss to plot yet")
    try:
        import matplotlib
    except ImportError:
        raise UsageError(f"--plot needs matplotlib: {INSTALL_UI}") from None
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=120)
    if steps:
        ax.plot(*zip(*steps, strict=True), label="loss", color="#0969da", linewidth=1.6)
    if evals:
        ax.plot(*zip(*evals, strict=True), label="eval loss", color="#cf222e", marker="o", linewidth=1.6)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    try:
        fig.savefig(out)
    except OSError as exc:
        raise UsageError(f"--plot {out}: cannot write it ({exc.strerror})") from None
    finally:
        plt.close(fig)
    return out
