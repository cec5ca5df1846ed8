"""Where rtrain keeps things, resolved without importing pydantic (``rtrain ls`` must start fast).

``Settings`` (launcher/config.py) reads the same variables; this module is the cheap path for commands
that only need to find the registry.
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_HOME = "~/.rtrain"
#: the one install hint for the training stack: the README's own command (from an rtrain checkout)
INSTALL_TRAIN = "install it as the README says: pip install torch==2.13.0 -e '.[train]' (CUDA: '.[train,unsloth]')"


def dotenv_value(name: str, env_file: str | os.PathLike[str] = ".env") -> str | None:
    """The value of ``name`` in the environment, else in ``.env`` of the working folder, else None."""
    if name in os.environ:
        return os.environ[name]
    path = Path(env_file)
    if not path.is_file():
        return None
    from dotenv import dotenv_values  # small, and only when a .env exists

    return dotenv_values(path).get(name)


def rtrain_home() -> Path:
    """``$RTRAIN_HOME`` (or the one in ``.env``), default ``~/.rtrain``: created private (0700); one that
    exists is used as it is, unless others can write to it (UsageError naming it)."""
    return checked_home(Path(dotenv_value("RTRAIN_HOME") or DEFAULT_HOME).expanduser())


def checked_home(home: Path) -> Path:
    from launcher.errors import UsageError

    try:
        if not home.exists():
            home.mkdir(parents=True, mode=0o700)
            home.chmod(0o700)  # whatever the umask: it holds keys
        elif not home.is_dir():
            raise UsageError(f"RTRAIN_HOME {home}: not a folder")
    except (FileExistsError, NotADirectoryError):
        raise UsageError(f"RTRAIN_HOME {home}: a file is in the way of that folder") from None
    except PermissionError:
        raise UsageError(f"RTRAIN_HOME {home}: cannot be created here (permission denied)") from None
    mode = home.stat().st_mode & 0o777
    if mode & 0o022:  # a shared folder (/tmp, a group's): keys and job specs must not live where others write
        raise UsageError(f"RTRAIN_HOME {home}: others can write to it (mode {mode:04o}); rtrain keeps SSH keys "
                         "there: use a folder of your own (rtrain never changes the mode of one it did not make)")
    if not os.access(home, os.W_OK | os.X_OK):
        raise UsageError(f"RTRAIN_HOME {home}: not writable by you")
    return home


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) if needed and make it 0700: a folder rtrain owns inside RTRAIN_HOME,
    that may hold keys, job specs, checkpoints."""
    missing = [p for p in (*reversed(path.parents), path) if not p.exists()]
    for folder in missing:  # mkdir(parents=True) would give the parents the umask's mode
        folder.mkdir(mode=0o700, exist_ok=True)
    if path.stat().st_mode & 0o777 != 0o700:
        path.chmod(0o700)
    return path


def project_root() -> Path:
    """The folder that holds ``templates/`` and ``examples/``: inside the installed package for a
    wheel (hatch force-include), the repository root for an editable install."""
    here = Path(__file__).resolve().parent
    bundled = here / "_bundled"
    return bundled if bundled.is_dir() else here.parent


def templates_dir() -> Path:
    return project_root() / "templates"


def sample_dataset() -> Path:
    return project_root() / "examples" / "chats.jsonl"
