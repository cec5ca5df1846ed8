"""The launcher stays light and the two packages keep their boundary."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import ROOT

HEAVY = ("torch", "transformers", "peft", "trl", "accelerate", "unsloth", "pydantic_settings", "httpx", "paramiko")


def modules_after(code: str) -> set[str]:
    probe = f"{code}\nimport sys, json\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)), cwd=ROOT).stdout
    return set(json.loads(out))


def test_cli_import_pulls_nothing_heavy() -> None:
    loaded = modules_after("import launcher.cli")
    assert not {m for m in loaded if m.split(".")[0] in HEAVY}


def test_help_and_ls_never_import_the_training_stack(tmp_path) -> None:
    for args in (["--help"], ["ls"], ["ls", "--json"]):
        code = ("import sys, launcher.cli as c\n"
                f"rc = c.main({args!r})\n"
                "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'pydantic_settings')]\n"
                "assert rc == 0 and not bad, (rc, bad)")
        env = dict(os.environ, PYTHONPATH=str(ROOT), RTRAIN_HOME=str(tmp_path / "home"))
        subprocess.run([sys.executable, "-c", code], check=True, env=env, capture_output=True, cwd=tmp_path)


def test_shared_trainer_modules_use_only_the_standard_library() -> None:
    # launcher/ validates datasets and writes/reads manifests with these: they must stay stdlib-only
    baseline = modules_after("pass")  # whatever site/.pth files load in this interpreter anyway
    for module in ("remote.formats", "remote.outputs", "remote.events", "remote.jobconfig", "remote.families"):
        loaded = modules_after(f"import {module}") - baseline
        third_party = {m.split(".")[0] for m in loaded} - set(sys.stdlib_module_names) - {"remote"}
        assert not third_party, (module, third_party)


def test_remote_never_imports_launcher() -> None:
    for path in (ROOT / "remote").glob("*.py"):
        text = path.read_text()
        assert "import launcher" not in text and "from launcher" not in text, path
