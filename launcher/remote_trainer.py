"""The trainer as a process on the job's machine, seen from the launcher: start it detached, ask how
it is doing (one round trip that also brings its new events), restart it from a checkpoint, read its
log. Everything goes through the executor's shell commands, the same for the local backend and SSH.

Files in the job's folder (the trainer's side of the contract): ``job.json`` in; ``events.jsonl``
(JSON lines), ``train.log`` (stderr), ``trainer.pid``, ``exit_code`` (written after the trainer
ends, atomically), ``output/`` and ``checkpoints/`` out; ``.followed`` is touched by every poll (the
pod's watchdog reads it).
"""

from __future__ import annotations

import hashlib
import io
import shlex
import time

from launcher.errors import ProviderError
from launcher.events import TrainerStatus, parse_probe
from launcher.executor.base import Executor
from launcher.runtime import TrainerRuntime

q = shlex.quote

EVENTS, LOG, EXIT_CODE, PID = "events.jsonl", "train.log", "exit_code", "trainer.pid"
JOB_JSON, OUTPUT, SECRETS, CHECKPOINTS = "job.json", "output", ".secrets.env", "checkpoints"
#: A detached start: os.setsid in a python shim, since `setsid` is not on every machine (macOS).
_DETACH = "import os,sys; os.setsid(); os.execvp(sys.argv[1], sys.argv[1:])"


class RemoteTrainer:
    def __init__(self, ex: Executor, jobdir: str, runtime: TrainerRuntime) -> None:
        self.ex, self.jobdir, self.runtime = ex, jobdir, runtime

    # the runtime's preparation (a docker pull): once per machine, in the background ------------------

    def _prepare_files(self) -> str | None:
        command = self.runtime.prepare_command()
        if command is None:
            return None
        root = self.jobdir.rsplit("/jobs/", 1)[0]
        return f"{root}/.prepare-{hashlib.sha256(command.encode()).hexdigest()[:16]}"

    def begin_prepare(self) -> str | None:
        """Start the runtime's preparation detached (it overlaps the uploads); None when there is none.
        A machine that already prepared (a kept pod) is not prepared again."""
        base = self._prepare_files()
        if base is None:
            return None
        command = self.runtime.prepare_command()
        part, done, pid = q(base + ".part"), q(base + ".exit"), q(base + ".pid")
        inner = f"echo $$ > {pid}; {command} > {q(base + '.log')} 2>&1; echo $? > {part} && mv {part} {done}"
        detached = f"nohup {q(self.ex.python)} -c {q(_DETACH)} bash -c {q(inner)} > /dev/null 2>&1 < /dev/null &"
        folder = q(base.rsplit("/", 1)[0])
        started = self.ex.run(f"mkdir -p {folder} || exit 1; test -f {done} && grep -qx 0 {done} && exit 0; "
                              f"rm -f {done} {pid}; {detached}")
        if not started.ok:
            raise ProviderError(f"cannot start `{command}` on the machine: {started.stderr.strip()}")
        return command

    def wait_prepared(self, deadline_s: float, poll_s: float = 1.0) -> None:
        """Until the preparation has ended well; ProviderError naming its last output otherwise (or
        when it died, or never started)."""
        base = self._prepare_files()
        if base is None:
            return
        command = self.runtime.prepare_command()
        done, pid = q(base + ".exit"), q(base + ".pid")
        deadline, started_by = time.monotonic() + deadline_s, time.monotonic() + 60
        while True:
            state = self.ex.run(f"if test -f {done}; then echo EXIT $(cat {done}); elif ! test -f {pid}; then "
                                f"echo STARTING; elif kill -0 $(cat {pid}) 2>/dev/null; then echo RUNNING; "
                                f"elif test -f {done}; then echo EXIT $(cat {done}); else echo DEAD; fi").stdout.split()
            if state[:2] == ["EXIT", "0"]:
                return
            if state[:1] in (["EXIT"], ["DEAD"]):
                tail = self.ex.run(f"tail -n 3 {q(base + '.log')} 2>/dev/null").stdout.strip().replace("\n", " | ")
                raise ProviderError(f"`{command}` failed on the machine: {tail or 'no output'}")
            if time.monotonic() > deadline or (state[:1] == ["STARTING"] and time.monotonic() > started_by):
                raise ProviderError(f"`{command}` did not {'start' if state[:1] == ['STARTING'] else 'finish'} "
                                    f"within {deadline_s if state[:1] != ['STARTING'] else 60:.0f}s")
            time.sleep(poll_s)

    def started(self) -> bool:
        return self.ex.run(f"test -f {q(self.jobdir)}/{PID}").ok

    def start(self, code_path: str, *, restart: bool = False) -> None:
        """Start ``python -m remote.train`` detached from this launcher. A restart keeps the events
        and the log (appending to them) and the checkpoints the trainer resumes from."""
        mode = ">>" if restart else ">"
        inner = (
            f"echo $$ > {PID}; if test -f {SECRETS}; then set -a; . ./{SECRETS}; set +a; fi; "
            f"{self.runtime.python_command(code_path)} -m remote.train --config {JOB_JSON}"
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
