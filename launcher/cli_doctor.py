"""``rtrain doctor``: is this machine ready? One line per check, exit 0 only when every check passes.

The training stack is looked at in a child python (the launcher never imports torch); provider keys
are named, never shown, and each one that is set is tried with one authenticated, read-only call.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import click

#: below this much free space in RTRAIN_HOME a local job's outputs and checkpoints may not fit
MIN_FREE_GB = 5.0

_PROBE = r"""
import importlib.util, json, sys
info = {"missing": [n for n in sys.argv[1:] if importlib.util.find_spec(n) is None]}
try:
    import torch
    info["torch"] = torch.__version__
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info["device"] = "cuda"
        info["gpu"] = p.name
        info["vram_gb"] = round(p.total_memory / 2**30, 1)
    elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        info["device"] = "mps"
    else:
        info["device"] = "cpu"
except Exception as exc:
    info["torch_error"] = f"{type(exc).__name__}: {exc}"
info["unsloth"] = importlib.util.find_spec("unsloth") is not None
print(json.dumps(info))
"""


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


def _python_and_version() -> list[Check]:
    from launcher import __version__

    v = sys.version_info
    return [Check("python", v >= (3, 10), f"{sys.executable} {v.major}.{v.minor}.{v.micro} (3.10 or newer needed)"
                  if v < (3, 10) else f"{v.major}.{v.minor}.{v.micro} ({sys.executable})"),
            Check("rtrain", True, __version__)]


def _training_stack(python: str) -> list[Check]:
    from launcher.paths import INSTALL_TRAIN

    names = ["torch", "transformers", "peft", "accelerate", "safetensors", "tokenizers"]
    try:
        proc = subprocess.run([python, "-c", _PROBE, *names], capture_output=True, text=True, timeout=120)
        info = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired, ValueError, IndexError):
        info = None
    if info is None:
        return [Check("training stack", False, f"{python} could not be run to look")]
    checks = []
    missing = info["missing"]
    if missing:
        checks.append(Check("training stack", False, f"{', '.join(missing)} missing (only --local needs it): "
                                                     f"{INSTALL_TRAIN}"))
    elif "torch_error" in info:
        checks.append(Check("training stack", False, f"torch does not import: {info['torch_error']}"))
    else:
        checks.append(Check("training stack", True, f"torch {info['torch']}, transformers, peft ({python})"))
    device = info.get("device")
    if device == "cuda":
        checks.append(Check("device", True, f"CUDA: {info['gpu']}, {info['vram_gb']} GB of VRAM"))
        checks.append(Check("unsloth", bool(info["unsloth"]),
                            "installed: local CUDA jobs train with Unsloth" if info["unsloth"] else
                            "missing: local CUDA jobs fall back to transformers + peft "
                            "(pip install -e '.[train,unsloth]')"))
    elif device == "mps":
        checks.append(Check("device", True, "Apple MPS (local jobs train with transformers + peft)"))
    elif device == "cpu":
        checks.append(Check("device", True, "CPU only: local jobs train small models; cloud jobs rent a GPU"))
    return checks


def _providers(settings: object) -> list[Check]:
    from launcher.backends import backend_class, cloud_names, get_backend
    from launcher.errors import AuthRejected, ProviderError

    checks = []
    for name in cloud_names():
        cls = backend_class(name)
        key_env = cls.key_env
        if not cls.api_key(settings):  # type: ignore[arg-type]
            checks.append(Check(f"{cls.title} key", True, f"{key_env} not set (only needed for {name} jobs)"))
            continue
        try:
            get_backend(name, settings, quick=True).list()  # type: ignore[arg-type]
        except AuthRejected:
            checks.append(Check(f"{cls.title} key", False, f"{key_env} is set, and {cls.title} rejects it"))
        except ProviderError as exc:
            checks.append(Check(f"{cls.title} key", False, f"{key_env} is set; {cls.title} did not answer: {exc}"))
        else:
            checks.append(Check(f"{cls.title} key", True, f"{key_env} is set and {cls.title} accepts it"))
    return checks


def _home() -> list[Check]:
    from launcher.errors import UsageError
    from launcher.paths import DEFAULT_HOME, checked_home, dotenv_value

    home = Path(dotenv_value("RTRAIN_HOME") or DEFAULT_HOME).expanduser()
    try:
        checked_home(home)
    except UsageError as exc:
        return [Check("RTRAIN_HOME", False, str(exc))]
    probe = home / ".doctor-probe"
    try:
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        return [Check("RTRAIN_HOME", False, f"{home}: cannot write there ({exc.strerror})")]
    mode = home.stat().st_mode & 0o777
    checks = [Check("RTRAIN_HOME", True, f"{home} (writable, mode {mode:04o})")]
    free = shutil.disk_usage(home).free / 2**30
    checks.append(Check("free disk", free >= MIN_FREE_GB,
                        f"{free:.1f} GB free in {home}" + ("" if free >= MIN_FREE_GB else
                                                           f" (under {MIN_FREE_GB:.0f} GB: local jobs may not fit)")))
    return checks


def run_checks() -> list[Check]:
    from launcher.cli_options import load_settings
    from launcher.errors import UsageError

    checks = _python_and_version()
    home = _home()
    checks += home
    if not home[0].ok:
        return checks  # settings and keys live there: nothing further can be looked at
    try:
        settings = load_settings()
    except UsageError as exc:
        return [*checks, Check("settings", False, str(exc))]
    checks.append(Check("settings", True, "RTRAIN_* and .env read"))
    checks += _training_stack(settings.local_python or sys.executable)
    checks += _providers(settings)
    return checks


@click.command("doctor")
@click.option("--json", "as_json", is_flag=True, help="One JSON object: every check, and whether all passed.")
def doctor(as_json: bool) -> None:
    """Check this machine: Python, rtrain, the training stack and device, provider keys (set, and
    accepted), RTRAIN_HOME, free disk. Exit 0 only when every check passes."""
    checks = run_checks()
    ok = all(c.ok for c in checks)
    if as_json:
        click.echo(json.dumps({"ok": ok, "checks": [asdict(c) for c in checks]}))
    else:
        from rich.console import Console
        from rich.markup import escape

        console = Console(highlight=False, soft_wrap=True)
        for c in checks:
            mark = "[green]ok[/]  " if c.ok else "[red]FAIL[/]"
            console.print(f"{mark} {escape(f'{c.name:<16} {c.detail}')}")
        console.print("all checks passed" if ok else "[red]some checks failed[/]")
    if not ok:
        sys.exit(1)

