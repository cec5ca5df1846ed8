"""The line protocol: partial lines, junk, offsets that resume exactly."""

from __future__ import annotations

import io
import json

from launcher.events import EventStream, parse_event, parse_probe
from remote.events import EventWriter


def test_stream_consumes_only_complete_lines() -> None:
    stream = EventStream()
    line1 = b'{"event": "step", "step": 1, "loss": 2.0}\n'
    partial = b'{"event": "step", "st'
    assert stream.feed(line1 + partial) == [{"event": "step", "step": 1, "loss": 2.0}]
    assert stream.offset == len(line1)
    assert stream.feed(partial) == []  # re-read from the offset: still incomplete
    rest = b'ep": 2}\n'
    events = stream.feed(partial + rest)
    assert events == [{"event": "step", "step": 2}]
    assert stream.offset == len(line1) + len(partial) + len(rest)


def test_junk_lines_are_skipped_and_counted() -> None:
    stream = EventStream()
    data = b'Some library printed this\n{"event": "done"}\n[1,2]\n{"no_event": 1}\n\n'
    assert stream.feed(data) == [{"event": "done"}]
    assert stream.skipped == 3
    assert parse_event("") is None and parse_event('{"event": 3}') is None


def test_writer_output_round_trips_and_drops_nan() -> None:
    buf = io.StringIO()
    writer = EventWriter(buf)
    writer.emit("step", step=3, loss=float("nan"), lr=1e-4)
    event = parse_event(buf.getvalue())
    assert event is not None
    assert event["event"] == "step" and event["loss"] is None and event["lr"] == 1e-4 and "ts" in event
    json.loads(buf.getvalue())  # strict JSON, no NaN literal


def test_probe_parsing() -> None:
    status, rest = parse_probe(b'EXIT 0\n{"event": "done"}\n')
    assert (status.state, status.exit_code, rest) == ("EXIT", 0, b'{"event": "done"}\n')
    status, rest = parse_probe(b"RUNNING\n")
    assert (status.state, status.exit_code, rest) == ("RUNNING", None, b"")
    assert parse_probe(b"EXIT 137\n")[0].exit_code == 137
    assert parse_probe(b"")[0].state == "STARTING"
