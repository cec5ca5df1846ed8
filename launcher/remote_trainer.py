"""The trainer as a process on the job's machine, seen from the launcher: start it detached, ask how
it is doing (one round trip that also brings its new events), restart it from a checkpoint, read its
log. Everything goes through the executor's shell commands, the same for the local backend and SSH.

Files in the job's folder (the trainer's side of the contract): ``job.json`` in; ``events.jsonl``
(JSON lines), ``train.log`` (stderr), ``trainer.pid``, ``exit_code`` (written after the trainer
ends, atomically), ``output/`` and ``checkpoints/`` out; ``.followed`` is touched by every poll (the
pod's watchdog reads it).
"""

from __future__ import annotations

import io
import shlex

from launcher.errors import ProviderError
from launcher.events import TrainerStatus, parse_probe
from launcher.executor.base import Executor

q = shlex.quote

EVENTS, LOG, EXIT_CODE, PID = "events.jsonl", "train.log", "exit_code", "trainer.pid"
JOB_JSON, OUTPUT, SECRETS, CHECKPOINTS = "job.json", "output", ".secrets.env", "checkpoints"
#: A detached start: os.setsid in a python shim, since `setsid` is not on every machine (macOS).
_DETACH = "import os,sys; os.setsid(); os.execvp(sys.argv[1], sys.argv[1:])"


class RemoteTrainer:
    def __init__(self, ex: Executor, jobdir: str) -> None:
        self.ex, self.jobdir = ex, jobdir

    def started(self) -> bool:
        return self.ex.run(f"test -f {q(self.jobdir)}/{PID}").ok

    def start(self, code_path: str, *, restart: bool = False) -> None:
        """Start ``python -m remote.train`` detached from this launcher. A restart keeps the events
        and the log (appending to them) and the checkpoints the trainer resumes from."""
        mode = ">>" if restart else ">"
        inner = (
            f"echo $$ > {PID}; if test -f {SECRETS}; then . ./{SECRETS}; fi; "
            f"PYTHONPATH={q(code_path)} {q(self.ex.python)} -m remote.train --config {JOB_JSON}"
            f" {mode} {EVENTS} 2{mode} {LOG}; echo $? > {EXIT_CODE}.part && mv {EXIT_CODE}.part {EXIT_CODE}"
        )
        stale = f"{EXIT_CODE} {PID}" if restart else f"{EXIT_CODE} {EVENTS} {LOG} {PID}"
        # Only the simple command goes to the background, with its own stdio: a backgrounded list
        # would be a subshell holding the executor's output pipe open until the trainer ends.
        cmd = (f"cd {q(self.jobdir)} || exit 1; rm -f {stale} || exit 1\n"
               f"nohup {q(self.ex.python)} -c {q(_DETACH)} bash -c {q(inner)} > /dev/null 2>&1 < /dev/null &")
        result = self.ex.run(cmd)
        if not result.ok:
            raise ProviderError(f"cannot start the trainer: {result.stderr.strip()}")

    def probe(self, offset: int) -> tuple[TrainerStatus, bytes]:
        """One round trip: the trainer's state, then the events written after ``offset``."""
        cmd = (
            f"cd {q(self.jobdir)} && touch .followed; "
            f"if test -f {EXIT_CODE}; then echo EXIT $(cat {EXIT_CODE}); "
            f"elif ! test -f {PID}; then echo STARTING; "
            f"elif kill -0 $(cat {PID}) 2>/dev/null; then echo RUNNING; else echo DEAD; fi; "
            f"test -f {EVENTS} && tail -c +{offset + 1} {EVENTS} | head -c {1 << 20}; true"
        )
        sink = io.BytesIO()
        result = self.ex.run_stdout(cmd, sink)
        if not result.ok:
            raise ProviderError(f"lost the job's folder on the machine: {result.stderr.strip()}")
        return parse_probe(sink.getvalue())

    def newest_checkpoint(self) -> str | None:
        """The newest complete checkpoint (trainer_state.json is written last: remote/train.py)."""
        found = self.ex.run(f"ls -d {q(self.jobdir)}/{CHECKPOINTS}/checkpoint-*/trainer_state.json 2>/dev/null")
        names = [p.rsplit("/", 2)[-2] for p in found.stdout.split()]
        steps = [int(n.split("-")[-1]) for n in names if n.split("-")[-1].isdigit()]
        return f"checkpoint-{max(steps)}" if steps else None

    def log_tail(self, lines: int = 15) -> list[str]:
        tail = self.ex.run(f"tail -n {lines} {q(self.jobdir)}/{LOG} 2>/dev/null")
        return tail.stdout.rstrip().splitlines() if tail.ok else []

    def arm_watchdog(self, seconds: int) -> None:
        """Ask the pod's watchdog (docker/watchdog.sh) to end the pod once this job has finished and
        gone unfollowed for ``seconds``."""
        armed = self.ex.run(f"echo {int(seconds)} > {q(self.jobdir)}/watchdog")
        if not armed.ok:
            raise ProviderError(f"cannot arm the pod's watchdog: {armed.stderr.strip()}")
