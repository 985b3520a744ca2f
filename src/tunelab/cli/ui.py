"""`tunelab ui`: the web page over a runs folder (tunelab.ui) on uvicorn."""

from __future__ import annotations

from pathlib import Path

import typer

from tunelab.cli.common import app, check_listen, user_errors


@app.command()
@user_errors
def ui(
    runs: Path = typer.Option(Path("runs"), "--runs", help="The folder of run directories to show; runs launched "
                              "from the page are written here."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (0.0.0.0: every interface — the page can "
                             "start processes, so only on a network you trust)."),
    port: int = typer.Option(7860, "--port", min=0, max=65535),
    allow_host: list[str] = typer.Option([], "--allow-host", help="Another name the page may be opened by (a DNS "
                                         "alias, a reverse proxy's public name); repeat for several."),
    lang: str = typer.Option("auto", "--lang", help="Interface language: en, zh, or auto (the browser's)."),
) -> None:
    """A web page to launch, watch, stop, resume and compare runs, open their reports and try their models.

    Jobs run detached: closing the page or stopping this server does not stop them; reopening re-attaches.

    Example: tunelab ui --runs runs --lang zh   (then open http://127.0.0.1:7860)"""
    import uvicorn

    from tunelab.ui.app import create_app

    if lang not in ("auto", "en", "zh"):
        raise typer.BadParameter("use en, zh or auto", param_hint="--lang")
    check_listen(host, port)
    runs.mkdir(parents=True, exist_ok=True)
    typer.echo(f"ui: http://{host}:{port}/ over {runs.resolve()}", err=True)
    uvicorn.run(create_app(runs, lang, host, tuple(allow_host)), host=host, port=port, log_level="warning")
