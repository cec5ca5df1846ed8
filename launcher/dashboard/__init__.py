"""``rtrain ui``: a local dashboard of every job (Starlette, served by uvicorn; charts drawn by uPlot,
bundled in ``static/`` so the page loads nothing from the internet).

It reads what the launcher already keeps (the registry, and each job's trainer events: the copy in
``$RTRAIN_HOME/jobs/<id>/events.jsonl`` while it runs, ``<output>/logs/events.jsonl`` after), so a
job started by any rtrain process shows, and grows live. Every request needs the per-start token
(401 without it, 403 with another); the one state-changing request, ``POST /api/jobs/ID/stop``,
also needs the page's own Origin (no cross-site requests), and ends the job exactly as
``rtrain down JOB`` does.
"""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path
from typing import Any

STATIC = Path(__file__).resolve().parent / "static"
#: the cookie that carries the token for the page's own requests
COOKIE = "rtrain_token"
#: the trainer events a job page draws
CURVE_EVENTS = ("start", "step", "eval", "checkpoint", "done", "error")


def events_path(rec: Any, home: Path) -> Path | None:
    """Where a job's trainer events are: the trainer's own file when its machine is this one (a local
    job, followed or detached), else the launcher's live copy, else the ones saved beside its outputs."""
    candidates = [home / "jobs" / rec.id / "events.jsonl"]
    if rec.backend == "local" and rec.workdir:
        candidates.insert(0, Path(rec.workdir) / "events.jsonl")
    if rec.output_dir:
        candidates.append(Path(rec.output_dir) / "logs" / "events.jsonl")
    return next((p for p in candidates if p.is_file()), None)


def last_step(rec: Any, home: Path, tail: int = 1 << 16) -> dict[str, Any] | None:
    """A job's newest ``step`` event, from the end of its events file only (the list asks every second,
    for every job)."""
    path = events_path(rec, home)
    if path is None:
        return None
    start = max(0, path.stat().st_size - tail)
    with path.open("rb") as fh:
        fh.seek(start)
        lines = fh.read().decode("utf-8", errors="replace").split("\n")
    for line in reversed(lines[1:] if start else lines):  # after a seek, the first line is cut
        if '"step"' in line:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and event.get("event") == "step":
                return event
    return None


def trainer_events(rec: Any, home: Path, since: int = 0) -> list[dict[str, Any]]:
    """The trainer's events of a job (``events_path``) from line ``since`` on."""
    path = events_path(rec, home)
    if path is None:
        return []
    events = []
    with path.open(encoding="utf-8", errors="replace") as fh:
        for n, line in enumerate(fh):
            if n < since or not line.endswith("\n"):
                continue  # a line still being written is read next time
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and event.get("event") in CURVE_EVENTS:
                events.append(event)
    return events


def job_summary(rec: Any, registry: Any, home: Path) -> dict[str, Any]:
    """``rtrain ls --json``'s keys, and what the list shows besides: GPU, last loss, $ so far."""
    data = rec.public()
    data["gpu"] = rec.gpu
    data["cost_so_far_usd"] = cost_so_far(rec, registry)
    step = last_step(rec, home)
    data["last_loss"] = step["loss"] if step else rec.final_loss
    data["total_steps"] = step.get("total_steps") if step else None
    return data


def cost_so_far(rec: Any, registry: Any) -> float | None:
    """Billed when the job ended; for a running job, its estimate's price times the time it has run."""
    if rec.cost_usd is not None or rec.status != "running":
        return rec.cost_usd
    if rec.backend == "local":
        return 0.0  # this machine bills nothing
    estimate = next((e["data"] for e in registry.events(rec.id) if e["kind"] == "estimate" and e["data"]), None)
    gpus = (estimate or {}).get("gpus") or []
    price = next((g.get("price_per_hr") for g in gpus if g.get("price_per_hr")), None)
    started = rec.started_at or rec.created_at
    if price is None or started is None:
        return None
    return round(rec.prior_cost_usd + price * (time.time() - started) / 3600, 4)


def create_app(token: str | None = None) -> tuple[Any, str]:
    """The ASGI app and its token."""
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import FileResponse, JSONResponse, Response
    from starlette.routing import Route

    from launcher.cli_options import load_settings, open_registry

    token = token or secrets.token_urlsafe(24)
    csp = "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'"

    def refused(request: Request) -> Response | None:
        given = (request.headers.get("x-rtrain-token") or request.query_params.get("token")
                 or request.cookies.get(COOKIE))
        if not given:
            return JSONResponse({"error": "this dashboard needs its token (the URL `rtrain ui` printed)"}, 401)
        if not secrets.compare_digest(given, token):
            return JSONResponse({"error": "wrong token"}, 403)
        return None

    def page(name: str) -> Any:
        async def serve(request: Request) -> Response:
            if (denied := refused(request)) is not None:
                return denied
            response = FileResponse(STATIC / name, headers={"Content-Security-Policy": csp,
                                                            "Cache-Control": "no-store"})
            # the page's own requests (its script, its API calls) carry the token in a cookie no other
            # site's request gets (SameSite=Strict); a state change also needs the page's Origin
            response.set_cookie(COOKIE, token, httponly=True, samesite="strict", path="/")
            return response
        return serve

    async def static(request: Request) -> Response:
        if (denied := refused(request)) is not None:
            return denied
        name = request.path_params["name"]
        if name not in {p.name for p in STATIC.iterdir() if p.is_file()}:
            return JSONResponse({"error": "no such file"}, 404)
        return FileResponse(STATIC / name, headers={"Cache-Control": "no-store"})

    async def api_jobs(request: Request) -> Response:
        if (denied := refused(request)) is not None:
            return denied
        registry, home = open_registry(), load_settings().rtrain_home()
        jobs = [job_summary(r, registry, home) for r in registry.jobs()]
        return JSONResponse(jobs)

    async def api_job(request: Request) -> Response:
        if (denied := refused(request)) is not None:
            return denied
        registry, home = open_registry(), load_settings().rtrain_home()
        try:
            rec = registry.get(request.path_params["job"])
        except KeyError as exc:
            return JSONResponse({"error": str(exc.args[0])}, 404)
        since_text = request.query_params.get("since", "0")
        if not since_text.isdigit():
            return JSONResponse({"error": "since: a line number (0 or more)"}, 400)
        since = int(since_text)
        return JSONResponse({**rec.public(), "spec": rec.spec_dict, "events": registry.events(rec.id),
                             "gpu": rec.gpu, "cost_so_far_usd": cost_so_far(rec, registry),
                             "trainer": trainer_events(rec, home, since)})

    async def api_stop(request: Request) -> Response:
        if (denied := refused(request)) is not None:
            return denied
        own = f"{request.url.scheme}://{request.url.netloc}"
        if request.headers.get("origin") != own:
            return JSONResponse({"error": "refused: this request did not come from the dashboard's own page"}, 403)
        from launcher.errors import RtrainError
        from launcher.teardown import down

        job = request.path_params["job"]
        try:
            said = await run_in_threadpool(lambda: down(job, load_settings(), open_registry()))
        except RtrainError as exc:
            return JSONResponse({"error": str(exc)}, 409)
        return JSONResponse({"stopped": job, "message": said})

    routes = [
        Route("/", page("index.html")),
        Route("/job/{job}", page("job.html")),
        Route("/compare", page("compare.html")),
        Route("/api/jobs", api_jobs),
        Route("/api/jobs/{job}", api_job),
        Route("/api/jobs/{job}/stop", api_stop, methods=["POST"]),
        Route("/static/{name}", static),
    ]
    return Starlette(routes=routes), token
