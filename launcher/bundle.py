"""What the launcher ships to the machine besides the data: the trainer's code, and the tiny model.

The ``remote/`` package is zipped on every run (deterministically: same sources, same bytes, same
sha256, so an unchanged trainer is never uploaded twice) and put first on the trainer's PYTHONPATH:
a launcher and its trainer can never disagree about versions.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import remote
from launcher.errors import UsageError
from launcher.paths import ensure_private_dir, sample_dataset

ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def remote_package_dir() -> Path:
    return Path(remote.__file__).resolve().parent


def build_code_zip(dest: Path) -> Path:
    """Write ``remote/*.py`` into the zip ``dest`` with fixed timestamps and modes."""
    src = remote_package_dir()
    with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(src.glob("*.py")):
            info = zipfile.ZipInfo(f"remote/{path.name}", date_time=ZIP_EPOCH)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, path.read_bytes())
    return dest


def trainer_env_pythonpath() -> str:
    """PYTHONPATH that lets a local python import this checkout's ``remote`` package."""
    parent = str(remote_package_dir().parent)
    old = os.environ.get("PYTHONPATH")
    return parent + (os.pathsep + old if old else "")


def tiny_model_dir(home: Path) -> Path:
    return home / "models" / "rtrain-tiny"


def ensure_tiny_model(home: Path, python: str | None = None, say: Callable[[str], None] | None = None) -> Path:
    """The generated tiny model, built on first use (``python -m remote.tiny_model``); its progress
    lines go to ``say`` as they come (the first run waits on it for a minute or so)."""
    out = tiny_model_dir(home)
    if (out / "config.json").is_file():
        return out
    ensure_private_dir(out.parent)
    env = dict(os.environ, PYTHONPATH=trainer_env_pythonpath())
    cmd = [python or sys.executable, "-m", "remote.tiny_model", str(out), "--data", str(sample_dataset())]
    require_training_stack(python or sys.executable, "the tiny model")
    if say is not None:
        say(f"building rtrain's tiny model in {out} (the first run only; seconds on a CPU)")
    lines: list[str] = []
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            if line.startswith("progress: ") and say is not None:
                say("  tiny model: " + line[len("progress: "):].rstrip())
            elif line.strip():
                lines.append(line.rstrip())
        code = proc.wait()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    if code != 0:
        raise UsageError(f"cannot build the tiny model with {cmd[0]}: {(lines or ['no output'])[-1]}")
    return out


def require_training_stack(python: str | None, what: str) -> None:
    """UsageError (one line, the README's install command) when ``python`` lacks the training stack."""
    from launcher.paths import INSTALL_TRAIN

    missing = training_stack_missing(python)
    if missing:
        raise UsageError(f"{what} needs the training stack ({', '.join(missing)} missing): {INSTALL_TRAIN}")


def training_stack_missing(python: str | None = None) -> list[str]:
    """The training packages ``python`` cannot import (empty when the local backend can run)."""
    names = ["torch", "transformers", "peft", "accelerate", "safetensors", "tokenizers"]
    if python in (None, sys.executable):
        import importlib.util

        return [n for n in names if importlib.util.find_spec(n) is None]
    probe = "import importlib.util,sys; print(' '.join(n for n in sys.argv[1:] if importlib.util.find_spec(n) is None))"
    proc = subprocess.run([python, "-c", probe, *names], capture_output=True, text=True)
    if proc.returncode != 0:
        return names
    return proc.stdout.split()
