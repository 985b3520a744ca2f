"""`tunelab serve`: the HTTP API (tunelab.serve) on uvicorn."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from tunelab.cli.common import app, check_listen, user_errors


@app.command()
@user_errors
def serve(
    paths: list[Path] = typer.Argument(..., help="Run directories (or model / export directories), or an embedded chat "
                                       "model's alias (smollm2-135m); a run's ONNX export is used when it passed its "
                                       "parity gate; LoRA runs of one base share one copy of it."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (0.0.0.0: every interface)."),
    port: int = typer.Option(8000, "--port", min=0, max=65535),
    api_key: str | None = typer.Option(None, "--api-key", envvar="TUNELAB_API_KEY", help="Require `Authorization: "
                                       "Bearer <key>` (also TUNELAB_API_KEY)."),
    max_batch: int = typer.Option(32, "--max-batch", min=1, help="Most inputs per forward pass (predict)."),
    max_batch_tokens: int = typer.Option(8192, "--max-batch-tokens", min=1, help="Most padded tokens per forward "
                                         "pass (predict): inputs × the longest input's tokens."),
    max_wait_ms: float = typer.Option(5.0, "--max-wait-ms", min=0.0, max=60_000.0, help="How long a predict "
                                      "request waits for others to share its forward pass (at most a minute)."),
    max_queue: int = typer.Option(1024, "--max-queue", min=1, help="Most inputs waiting; beyond: 503."),
    max_tokens: int = typer.Option(1024, "--max-tokens", min=1, help="Most new tokens a completion may ask for."),
    max_input_tokens: int = typer.Option(16384, "--max-input-tokens", min=1, help="Longest predict input (its text "
                                         "fields together, e.g. a QA context); beyond: 422."),
    cors_origin: list[str] = typer.Option([], "--cors-origin", help="Allow browser calls from this origin "
                                          "(repeatable; default: none)."),
    torch_only: bool = typer.Option(False, "--torch", help="Serve RUN/model even when an ONNX export exists."),
) -> None:
    """Serve tuned models over HTTP (/v1/predict, OpenAI-style chat, /metrics); binds 127.0.0.1 by default.

    Examples: tunelab serve runs/sst2-minilm runs/chat-lora --api-key s3cret · tunelab serve smollm2-135m --port 8080"""
    import uvicorn

    from tunelab.serve.app import create_app
    from tunelab.serve.models import served_models
    from tunelab.serve.schemas import Settings

    check_listen(host, port)
    models = served_models(paths, prefer_exports=not torch_only)
    settings = Settings(api_key=api_key or os.environ.get("TUNELAB_API_KEY") or None, max_batch=max_batch,
                        max_batch_tokens=max_batch_tokens, max_wait_ms=max_wait_ms, max_queue=max_queue,
                        max_tokens=max_tokens, max_input_tokens=max_input_tokens, cors_origins=tuple(cors_origin))
    from tunelab.models.aliases import ALIASES

    for s in models:
        alias = ALIASES.get(s.name) if not Path(s.name).exists() else None
        note = " — 4-bit GGUF weights dequantised to float, untuned" if alias and (alias.gguf or alias.assemble) else ""
        typer.echo(f"serve: {s.name} ({s.model.task.cfg.name}) from {s.model.path}{note}", err=True)
    uvicorn.run(create_app(models, settings), host=host, port=port, log_level="warning",
                timeout_graceful_shutdown=30)
