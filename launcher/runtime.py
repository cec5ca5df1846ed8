"""How the trainer's python runs on a machine: the command line the launcher builds, per backend.

- ``PlainPython``: the machine *is* the trainer's environment (a RunPod pod boots rtrain's image; the
  local backend uses this machine's python).
- ``DockerImage``: the machine is a VM with Docker and the NVIDIA runtime (Lambda Cloud): rtrain's own
  pinned, Blackwell-ready image is pulled once (``docker pull``, started in the background while the
  job's files upload) and the trainer runs in it under ``docker run --gpus all``, with the machine's
  rtrain folder mounted at the same path (blob links resolve the same inside and out), as the VM's
  user (the files it writes stay the user's), and only the named secrets passed in.

Every value is quoted with ``shlex.quote``; the command is a prefix the caller completes with
``-m remote.train --config job.json``.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Protocol

from launcher.s3 import AWS_ENV

q = shlex.quote

#: what a trainer in a container may read from the machine's environment (the 0600 secrets file sets
#: them): `docker run -e NAME` passes a variable only when it is set
PASSED_ENV = ("HF_TOKEN", *AWS_ENV, "HF_HUB_OFFLINE", "OMP_NUM_THREADS")


class TrainerRuntime(Protocol):
    def prepare_command(self) -> str | None:
        """A command to run once per machine before its first trainer (None: nothing to prepare)."""
        ...

    def python_command(self, code_path: str) -> str:
        """The command that runs python with the trainer's code (``code_path``) importable, in the
        current folder."""
        ...


@dataclass(frozen=True)
class PlainPython:
    python: str

    def prepare_command(self) -> str | None:
        return None

    def python_command(self, code_path: str) -> str:
        return f"PYTHONPATH={q(code_path)} {q(self.python)}"


@dataclass(frozen=True)
class DockerImage:
    image: str
    #: the machine's rtrain folder (blobs, job folders): mounted at the same path
    root: str
    python: str = "python3"

    def prepare_command(self) -> str | None:
        return f"docker pull {q(self.image)}"

    def python_command(self, code_path: str) -> str:
        passed = " ".join(f"-e {name}" for name in PASSED_ENV)
        return (f"docker run --rm --init --gpus all --ipc=host --network host --user \"$(id -u):$(id -g)\" "
                f"-v {q(self.root)}:{q(self.root)} -w \"$PWD\" -e PYTHONPATH={q(code_path)} "
                f"-e HF_HOME={q(self.root + '/hf')} {passed} --entrypoint {q(self.python)} {q(self.image)}")
