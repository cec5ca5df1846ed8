"""``rtrain ui``: the dashboard (launcher/dashboard), served on loopback by uvicorn."""

from __future__ import annotations

import ipaddress
import socket
import sys

import click

INSTALL_UI = "pip install -e '.[ui]'"


def require_ui() -> None:
    import importlib.util

    from launcher.errors import UsageError

    missing = [m for m in ("starlette", "uvicorn") if importlib.util.find_spec(m) is None]
    if missing:
        raise UsageError(f"rtrain ui needs {', '.join(missing)}: {INSTALL_UI}")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@click.command("ui")
@click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=True,
              help="Port to serve on (0: a free one).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to serve on; anything but loopback is served with a warning.")
@click.option("--no-browser", is_flag=True, help="Do not open the page in a browser.")
def ui(port: int, host: str, no_browser: bool) -> None:
    """A local dashboard of every job: live loss curves, costs, a stop button, runs compared."""
    require_ui()
    import uvicorn

    from launcher.dashboard import create_app
    from launcher.errors import UsageError

    app, token = create_app()
    if not _loopback(host):
        click.echo(f"warning: serving on {host}, not loopback: anyone who can reach it and has the URL can see "
                   "your jobs and stop them", err=True)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UsageError(f"--host {host} --port {port}: cannot serve there ({exc.strerror})") from None
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{bound}/?token={token}"
    click.echo(f"dashboard: {url}")
    sys.stdout.flush()
    if not no_browser:
        import webbrowser

        webbrowser.open(url)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
