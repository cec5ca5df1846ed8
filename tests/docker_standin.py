#!/usr/bin/env python3
"""A stand-in for ``docker`` on the fake Lambda VMs (tests/vms.py): this machine has no Docker engine.

It logs every command line, and accepts only the exact shape rtrain's DockerImage runtime builds
(launcher/runtime.py): ``docker pull IMAGE``, and ``docker run --rm --init --gpus all --ipc=host
--network host --user UID:GID -v ROOT:ROOT -w DIR -e ... --entrypoint python3 IMAGE ARGS``. A run then
does what the container would: ARGS with the VM's python, in DIR, with only the environment the ``-e``
flags pass (and the image's PATH and HOME). Anything else fails loudly, so a wrong command line fails
the test that made it.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path


def fail(message: str) -> None:
    print(f"docker stand-in: {message}", file=sys.stderr)
    sys.exit(125)


def main(args: list[str]) -> None:
    with (Path.home() / ".docker-standin.log").open("a") as log:
        log.write(shlex.join(args) + "\n")
    image = os.environ.get("RTRAIN_STANDIN_IMAGE", "")
    if args[:1] == ["pull"]:
        if args[1:] != [image]:
            fail(f"pull of {args[1:]}, not the image {image!r}")
        return
    if args[:1] != ["run"]:
        fail(f"unsupported: {shlex.join(args)}")
    flags, env_specs, volumes = set(), [], []
    values: dict[str, str] = {}
    rest = iter(args[1:])
    for arg in rest:
        if arg in ("--rm", "--init", "--ipc=host"):
            flags.add(arg)
        elif arg in ("--gpus", "--network"):
            flags.add(f"{arg}={next(rest)}")
        elif arg in ("--user", "-w", "--entrypoint"):
            values[arg] = next(rest)
        elif arg == "-v":
            volumes.append(next(rest))
        elif arg == "-e":
            env_specs.append(next(rest))
        elif arg.startswith("-"):
            fail(f"unexpected flag {arg}")
        else:
            values["image"] = arg
            break
    command = list(rest)
    wanted = {"--rm", "--init", "--ipc=host", "--gpus=all", "--network=host"}
    if flags != wanted:
        fail(f"flags {sorted(flags)} are not {sorted(wanted)}")
    if values.get("--user") != f"{os.getuid()}:{os.getgid()}":
        fail(f"--user {values.get('--user')} is not the VM user's uid:gid")
    if values.get("image") != image or values.get("--entrypoint") != "python3":
        fail(f"image {values.get('image')!r} / entrypoint {values.get('--entrypoint')!r}")
    mounts = [v.split(":") for v in volumes]
    if len(mounts) != 1 or len(mounts[0]) != 2 or mounts[0][0] != mounts[0][1] or not Path(mounts[0][0]).is_dir():
        fail(f"-v {volumes}: expected one folder mounted at its own path")
    workdir = values.get("-w", "")
    if not workdir.startswith(mounts[0][0] + "/"):
        fail(f"-w {workdir} is not inside the mounted folder")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/")}
    for spec in env_specs:
        name, sep, value = spec.partition("=")
        if sep:
            env[name] = value
        elif name in os.environ:
            env[name] = os.environ[name]
    os.chdir(workdir)
    os.execve(sys.executable, [sys.executable, *command], env)


if __name__ == "__main__":
    main(sys.argv[1:])
