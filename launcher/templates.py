"""Run presets: ``templates/<name>.yaml``, loaded by ``--template NAME``, listed by ``rtrain templates``.

A preset holds a ``description``, the GPUs it is meant for (``gpus``) and a ``job`` mapping with the
same keys as ``JobSpec``; explicit flags override it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from launcher.errors import UsageError
from launcher.paths import templates_dir

#: The embedded default: what ``rtrain launch --local`` runs with no other flags.
DEFAULT_TEMPLATE = "tiny-cpu"


@dataclass
class Template:
    name: str
    path: Path
    description: str
    job: dict[str, Any]
    gpus: list[str] = field(default_factory=list)
    notes: str = ""


def available() -> list[str]:
    folder = templates_dir()
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def load_template(name: str) -> Template:
    import yaml

    path = templates_dir() / f"{name}.yaml"
    if not path.is_file():
        names = ", ".join(available()) or "none installed"
        raise UsageError(f"--template {name}: unknown template (available: {names})")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise UsageError(f"{path}{line}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(data, dict) or not isinstance(data.get("job"), dict):
        raise UsageError(f"{path}: expected a mapping with a 'job' mapping inside")
    unknown = sorted(set(data) - {"description", "job", "gpus", "notes"})
    if unknown:
        raise UsageError(f"{path}: unknown top-level keys {unknown}")
    return Template(
        name=name, path=path, description=str(data.get("description", "")).strip(), job=dict(data["job"]),
        gpus=list(data.get("gpus") or []), notes=str(data.get("notes", "")).strip(),
    )
