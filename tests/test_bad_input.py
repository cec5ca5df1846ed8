"""Every class of bad input, setting and machine answered as promised, through the CLI: bad input is one
line naming the file:line, flag or variable and exit 2, before any provider is called; a bad machine
is exit 3 with one line; nothing hangs, nothing crashes with an internal error."""

from __future__ import annotations

import json
import os
import random
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, SAMPLE, rtrain_cmd, write_jsonl
from test_cli_input import assert_usage_error, good_dataset, jobs_in_registry


def one_error_line(result, needle: str, code: int = 2) -> None:
    assert result.code == code, (result.code, result.out, result.err)
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], result.err
    assert "internal error" not in result.err and "Traceback" not in result.err


# data ------------------------------------------------------------------------------------------------

HOSTILE = {
    "deep.jsonl": ("[" * 200_000 + "]" * 200_000, "deep.jsonl:1: nested too deeply"),
    "digits.jsonl": ('{"text": "x", "n": ' + "9" * 5000 + "}", "digits.jsonl:1: not a usable JSON record"),
    "surrogate.jsonl": ('{"text": "ok \\ud800 there"}', "surrogate.jsonl:1: holds a lone surrogate (\\ud800)"),
    "tools.jsonl": (json.dumps({"messages": [{"role": "user", "content": "q"},
                                             {"role": "assistant", "content": "a", "tool_calls": "call()"}]}),
                    'tools.jsonl:1: message 2 (assistant) has "tool_calls" that is not a list of objects'),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_json_lines_name_the_line(cli, home: Path, tmp_path: Path, name: str) -> None:
    line, needle = HOSTILE[name]
    path = tmp_path / name
    path.write_text(line + "\n", encoding="utf-8")
    assert_usage_error(cli("launch", "--local", "--dataset", str(path)), home, needle)
    one_error_line(cli("cost", "--gpu", "h100", "--model", "unsloth/Qwen3-8B", "--dataset", str(path)), needle)


def test_what_is_not_a_regular_readable_file_is_named_for_what_it_is(cli, home: Path, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)
    assert_usage_error(cli("launch", "--local", "--dataset", str(fifo)), home, "pipe.jsonl: is a FIFO (named pipe)")
    assert_usage_error(cli("launch", "--local", "--dataset", "/dev/null"), home,
                       "/dev/null: is a character device, not a regular file")
    locked = Path(good_dataset(tmp_path))
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == locked else real_access(p, mode, **kw))
    assert_usage_error(cli("launch", "--local", "--dataset", str(locked)), home, "ok.jsonl: cannot be read (permission")


def peak_rss_mb(args: list[str], env: dict[str, str]) -> tuple[int, str, int]:
    """Run ``rtrain ARGS`` alone under a parent that reports its peak memory (RUSAGE_CHILDREN of one child)."""
    probe = ("import resource, subprocess, sys; p = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
             "sys.stderr.write(p.stderr); print(p.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    done = subprocess.run([sys.executable, "-c", probe, *rtrain_cmd(*args)], capture_output=True, text=True,
                          env=env, timeout=900)
    code, rss_kb = done.stdout.split()
    return int(code), done.stderr, int(rss_kb) // 1024


def test_a_50mb_line_is_validated_and_priced_in_bounded_memory(home_with_tiny: Path, tmp_path: Path) -> None:
    words = ("alpha beta gamma delta epsilon " * ((50 << 20) // 30 + 1))[: 50 << 20]
    huge = write_jsonl(tmp_path / "huge.jsonl", [{"text": words}, {"text": "a short one"}])
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    code, err, rss = peak_rss_mb(["cost", "--gpu", "h100", "--template", "tiny-cpu", "--dataset", str(huge),
                                  "--json"], env)
    assert code == 0, err
    assert rss < 1200, f"{rss} MB for a 50 MB line"  # the tokenizer never sees more than max_seq_length allows


# numbers and names ------------------------------------------------------------------------------------


@pytest.mark.parametrize("args, needle", [
    (["--epochs", "inf"], "--epochs: input should be a finite number"),
    (["--epochs", "1e309"], "--epochs: input should be a finite number"),
    (["--epochs", "nan"], "--epochs: input should be a finite number"),
    (["--watchdog", "nan"], "--watchdog nan: expected a duration"),
    (["--watchdog", "inf"], "--watchdog inf: expected a duration"),
    (["--max-seq-length", "50000"], "--max-seq-length 50000: beyond unsloth/Qwen3-14B's context of 40,960 tokens"),
    (["--model", "org/.."], "--model org/..: no such folder, and not a hub id"),
    (["--model", "org/a model"], "--model org/a model: no such folder, and not a hub id"),
    (["--model", "org/model-"], "not a hub id"),
    (["--model", "-org/model"], "not a hub id"),
    (["--model", "org/" + "m" * 97], "not a hub id"),
])
def test_bad_numbers_and_names_are_refused_before_any_call(cli, runpod, home_with_tiny: Path, args: list[str],
                                                            needle: str) -> None:
    base = {"--model": "unsloth/Qwen3-14B"}
    flags = [*(["--model", base["--model"]] if "--model" not in args else []), *args]
    result = cli("launch", "--gpu", "h100", "--dataset", str(SAMPLE), "--yes", *flags)
    assert_usage_error(result, home_with_tiny, needle)
    assert runpod.calls == []


def test_max_seq_length_beyond_a_local_models_context(cli, home_with_tiny: Path) -> None:
    assert_usage_error(cli("launch", "--local", "--max-seq-length", "5000"), home_with_tiny,
                       "--max-seq-length 5000: beyond rtrain-tiny's context of 4,096 tokens")


def test_an_empty_job_name_matches_no_job(cli, home: Path, tmp_path: Path) -> None:
    from launcher.state import Registry

    Registry.open_default().create_job("261122-000000-aaaa", name=None, backend="local", spec={},
                                           workdir=None, output_dir=str(tmp_path / "o"), pod_name=None)
    for command in ("show", "down", "logs", "resume"):
        result = cli(command, "")
        assert result.code == 2 and result.err.strip() in ("error: no job ''", "error: down: name a job (id, id "
                                                           "prefix or name), a machine id, or a leftover"), result.err


# settings and environment -------------------------------------------------------------------------------


def test_a_bad_setting_names_its_variable_and_where_it_came_from(cli, home: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RTRAIN_READY_TIMEOUT_S", "abc")
    one_error_line(cli("launch", "--local", "--dataset", good_dataset(tmp_path)),
                   "RTRAIN_READY_TIMEOUT_S in the environment: input should be a valid number")
    monkeypatch.delenv("RTRAIN_READY_TIMEOUT_S")
    Path(".env").write_text("RTRAIN_API_RETRIES=lots\n")
    one_error_line(cli("gpus"), f"RTRAIN_API_RETRIES in {Path('.env').resolve()}: input should be a valid integer")
    Path(".env").write_text("RTRAIN_RUNPOD_CLOUD_TYPE=CHEAP\n")
    one_error_line(cli("cost", "--model", "unsloth/Qwen3-8B", "--dataset", str(SAMPLE)),
                   "RTRAIN_RUNPOD_CLOUD_TYPE in")


def test_rtrain_home_that_cannot_be_used_is_refused_and_never_chmodded(cli, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    monkeypatch.setenv("RTRAIN_HOME", str(blocker / "home"))
    one_error_line(cli("ls"), f"RTRAIN_HOME {blocker / 'home'}: a file is in the way")
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    monkeypatch.setenv("RTRAIN_HOME", str(shared))
    one_error_line(cli("ls"), "others can write to it (mode 0777)")
    assert stat.S_IMODE(shared.stat().st_mode) == 0o777 and list(shared.iterdir()) == []


def test_an_empty_key_is_no_key_and_an_unreachable_provider_falls_back(cli, home: Path, runpod,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNPOD_API_KEY", "")
    empty = cli("gpus", "--backend", "runpod", "--json")
    assert empty.code == 0 and json.loads(empty.out)["sources"]["runpod"].startswith("bundled")
    assert runpod.calls == []  # no "Bearer " was ever sent
    monkeypatch.setenv("RUNPOD_API_KEY", "some-key")
    monkeypatch.setenv("RTRAIN_RUNPOD_API_URL", "http://127.0.0.1:9/graphql")  # nothing listens there
    down = cli("gpus", "--backend", "runpod")
    assert down.code == 0 and "bundled catalog" in down.out
    assert down.err.startswith("warning: RunPod prices: cannot reach the RunPod API") and down.err.count("\n") == 1
    monkeypatch.setenv("RTRAIN_RUNPOD_API_URL", runpod.url)
    runpod.faults = [{"status": 503, "times": 100}]
    failing = cli("cost", "--backend", "runpod", "--gpu", "h100", "--model", "unsloth/Qwen3-8B", "--dataset",
                  str(SAMPLE))
    assert failing.code == 0 and "RunPod prices: RunPod API kept failing (HTTP 503" in failing.err
    listed = cli("ls", "--pods")
    assert "Lambda Cloud: skipped (no LAMBDA_API_KEY)" in listed.out


def test_a_missing_training_stack_is_one_line_with_the_readmes_command(cli, home: Path, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    bare = tmp_path / "python-without-packages"
    bare.write_text(f"#!/bin/sh\nexec {sys.executable} -S \"$@\"\n")
    bare.chmod(0o755)
    monkeypatch.setenv("RTRAIN_LOCAL_PYTHON", str(bare))
    readme = "pip install torch==2.13.0 -e '.[train]'"
    assert readme in (ROOT / "README.md").read_text()
    for args in (["launch", "--local"], ["init-tiny-model", str(tmp_path / "t")],
                 ["export", str(tmp_path), "--gguf"], ["merge-adapters", "a", "b", "--weights", "1,1", "--out", "c"]):
        result = cli(*args)
        one_error_line(result, "needs the training stack (torch")
        assert readme in result.err, args


# the registry and the files -------------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["random", "truncated"])
def test_a_corrupted_registry_is_named_with_what_to_do(cli, home: Path, damage: str) -> None:
    from launcher.state import Registry

    reg = Registry.open_default()
    db = reg.path
    for i in range(40):
        reg.create_job(f"job-{i}", name=None, backend="local", spec={"x": "y" * 500}, workdir=None,
                       output_dir=f"/o/{i}", pod_name=None)
    reg.close()
    for extra in home.glob("state.db-*"):
        extra.unlink()
    data = db.read_bytes()
    db.write_bytes(random.Random(1).randbytes(len(data)) if damage == "random" else data[: len(data) // 3])
    for command in (["ls"], ["show", "job-1"], ["launch", "--local"]):
        one_error_line(cli(*command), f"{db}: not a readable rtrain registry")


def test_a_second_launch_into_the_same_output_is_refused_at_once(cli, home_with_tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "same-out"
    first = cli("launch", "--local", "--output", str(out), "--max-steps", "100000", "--detach", "--json")
    assert first.code == 0, first.err
    second = cli("launch", "--local", "--output", str(out), "--max-steps", "1")
    assert second.code == 2 and f"--output {out}: job" in second.err and "is already writing there" in second.err
    assert cli("down", json.loads(first.out.strip().splitlines()[-1])["job_id"]).code == 0
    assert jobs_in_registry(home_with_tiny) == 1


def test_everything_under_rtrain_home_is_private(cli, home_with_tiny: Path, tmp_path: Path) -> None:
    job = cli("launch", "--local", "--max-steps", "1", "--eval-fraction", "0", "--json")
    assert job.code == 0, job.err
    for path in home_with_tiny.rglob("*"):
        if path.is_symlink() or "models" in path.relative_to(home_with_tiny).parts:
            continue  # the test's shared tiny model is linked in from elsewhere
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o077 == 0, f"{path} is {mode:04o}"
    out = Path(json.loads(job.out.strip().splitlines()[-1])["output_dir"])
    assert stat.S_IMODE((out / "adapter" / "adapter_config.json").stat().st_mode) & 0o044  # the user's own file


# what comes back from the machine -------------------------------------------------------------------------


def faulty_tar(tmp_path: Path, script: str) -> dict[str, str]:
    """This machine's `tar`, replaced for the launcher's outputs stream (the local backend's machine)."""
    folder = tmp_path / "bin"
    folder.mkdir(exist_ok=True)
    (folder / "tar").write_text("#!/bin/sh\ncase \"$*\" in *output*-cf*) " + script + ";; esac\nexec /bin/tar \"$@\"\n")
    (folder / "tar").chmod(0o755)
    return dict(os.environ, PATH=f"{folder}:{os.environ['PATH']}", PYTHONPATH=str(ROOT))


def test_a_malformed_output_stream_is_exit_3_in_one_line(home_with_tiny: Path, tmp_path: Path) -> None:
    # the machine sends the first 3000 bytes of its outputs (the other malformed streams: the test below)
    done = subprocess.run(rtrain_cmd("launch", "--local", "--max-steps", "1", "--eval-fraction", "0"),
                          capture_output=True, text=True, timeout=900,
                          env=faulty_tar(tmp_path, '/bin/tar "$@" | head -c 3000; exit 0'))
    assert done.returncode == 3, done.stderr
    assert "is not a whole tar archive" in done.stderr
    assert "internal error" not in done.stderr and "Traceback" not in done.stderr


def test_streams_and_manifests_that_lie_are_refused(tmp_path: Path) -> None:
    import io
    import tarfile

    from launcher.downloads import fetch_tree, verify_manifest
    from launcher.errors import ProviderError
    from launcher.executor.local import LocalExecutor

    def tar_of(members: list[tuple[str, bytes | None]]) -> Path:
        path = tmp_path / f"t{len(list(tmp_path.glob('t*')))}.tar"
        with tarfile.open(path, "w") as tar:
            for name, data in members:
                info = tarfile.TarInfo(name)
                if data is None:
                    info.type = tarfile.DIRTYPE
                    tar.addfile(info)
                else:
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        return path

    class Replay(LocalExecutor):
        def __init__(self, archive: Path) -> None:
            super().__init__()
            self.archive = archive

        def run_stdout(self, command, sink, *, progress=None):  # type: ignore[override]
            return super().run_stdout(f"cat {self.archive}", sink)

    cases = [([("", b"x")], "points outside the folder"), ([("a", b"x"), ("a/b", b"y")], "inside a file"),
             ([("a", b"x"), ("a", b"y")], "comes twice")]
    for members, needle in cases:
        with pytest.raises(ProviderError, match=needle):
            fetch_tree(Replay(tar_of(members)), "output", tmp_path / f"dest{len(needle)}")
    not_a_tar = tmp_path / "not-a-tar"
    not_a_tar.write_bytes(b"not a tar at all\n" * 64)
    with pytest.raises(ProviderError, match="is not a whole tar archive"):
        fetch_tree(Replay(not_a_tar), "output", tmp_path / "dest-not-a-tar")
    folder = tmp_path / "out"
    folder.mkdir()
    for manifest, needle in (("not json", "not a manifest rtrain can read"), ("{}", "not a manifest rtrain can read"),
                             (json.dumps({"files": {"/etc/hostname": {"size": 1, "sha256": "0" * 64}}}), "outside"),
                             (json.dumps({"files": {"../../x": {"size": 1, "sha256": "0" * 64}}}), "outside"),
                             (json.dumps({"files": {"a": {"size": "1"}}}), "no size and sha256")):
        (folder / "manifest.json").write_text(manifest)
        with pytest.raises(ProviderError, match=needle):
            verify_manifest(folder)


def test_trainer_events_are_data_never_terminal_markup() -> None:
    from rich.console import Console

    from launcher.events import EventStream
    from launcher.ui import Reporter

    console = Console(record=True, width=200, force_terminal=False)
    ui = Reporter(console=console)
    lines = [{"event": "start", "device": "[bold red]cpu[/]", "engine": "x", "used": 1, "total_steps": "[/]"},
             {"event": "step", "step": 1, "total_steps": 1, "loss": "[blink]1.0"},
             {"event": "eval", "step": 1, "eval_loss": "[/]", "perplexity": 2.0}]
    stream = EventStream()
    for event in stream.feed("".join(json.dumps(e) + "\n" for e in lines).encode()):
        ui.training_event(event)
    text = console.export_text()
    assert "[bold red]cpu[/]" in text and "loss ?" in text and "loss ?, perplexity 2.00" in text
    assert "the trainer sent non-numbers for total_steps (in a start event): ignored" in text


def test_processes_a_failed_test_left_are_ended(tmp_path: Path) -> None:
    # what conftest's `home` fixture does when a test ends: every process started under it is ended
    from conftest import end_processes_under

    proc = subprocess.Popen(["sleep", "300"], cwd=tmp_path, start_new_session=True)
    end_processes_under(tmp_path)
    assert proc.wait(30) != 0
