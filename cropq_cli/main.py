"""The ``cropq`` command: run the service, crop local files, manage access keys, upload images; submit,
follow, list and cancel jobs and prefix batches on a running service (:mod:`cropq_cli.client_commands`)."""

from __future__ import annotations

import mimetypes
from pathlib import Path
from typing import Annotated

import typer

from cropq_cli.client_commands import register
from cropq_cli.errors import OneLineErrors

app = typer.Typer(
    cls=OneLineErrors,
    help="cropq: self-hosted smart cropping (IMM DetectImageCropping-compatible).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.command()
def up(
    port: Annotated[int | None, typer.Option(help="API port (default CROPQ_API_PORT or 8000).")] = None,
    workers: Annotated[
        int | None, typer.Option(help="Worker processes (default CROPQ_WORKERS or 2).")
    ] = None,
) -> None:
    """Run the API and workers in the foreground (plus embedded Valkey and SeaweedFS unless
    CROPQ_REDIS_URL / CROPQ_S3_ENDPOINT point at running servers). Its endpoints and development key go to
    CROPQ_DATA_DIR/stack.json, where the other commands find them. Ctrl-C stops everything."""
    from cropq_cli.stack import run_up

    raise typer.Exit(run_up(port, workers))


@app.command()
def crop(
    images: Annotated[list[str], typer.Argument(help="Image files.")],
    ratios: Annotated[str, typer.Option(help="Comma-separated W:H ratios (at most 5), or 'auto'.")] = "auto",
    hint: Annotated[
        str | None, typer.Option(help="Object to keep, e.g. face, person, dog, car, text, 人脸, 猫.")
    ] = None,
    preview: Annotated[Path | None, typer.Option(help="Write a PNG per image with the crops drawn.")] = None,
    render_dir: Annotated[
        Path | None, typer.Option(help="Write each crop, resized and encoded, into this folder.")
    ] = None,
    render_format: Annotated[str, typer.Option("--format", help="jpeg, webp, png or avif.")] = "jpeg",
    quality: Annotated[int, typer.Option(help="Encoder quality of rendered crops.")] = 82,
    max_side: Annotated[
        int | None, typer.Option(help="Longest side of a rendered crop (never upscaled).")
    ] = None,
) -> None:
    """Crop local images with the engine alone; one JSON line per image on stdout."""
    from cropq_cli.crop import run_crop_cli

    raise typer.Exit(
        run_crop_cli(images, ratios, hint, preview, render_dir, render_format, quality, max_side)
    )


@app.command()
def upload(
    files: Annotated[list[Path], typer.Argument(help="Files to upload.", exists=True, dir_okay=False)],
    bucket: Annotated[str, typer.Option(help="Bucket (created if missing).")] = "demo",
    prefix: Annotated[str, typer.Option(help="Key prefix.")] = "",
) -> None:
    """Upload files to the configured S3 server (CROPQ_S3_*, else the running `cropq up`) and print their
    oss:// URIs."""
    from cropq_cli.errors import CliError
    from cropq_cli.settings import cli_settings
    from worker.storage import S3Storage, StorageError

    s = cli_settings()
    store = S3Storage(s)  # fails fast: no retry loop in front of the one-line error
    try:
        store.ensure_bucket(bucket)
        for f in files:
            key = f"{prefix}{f.name}"
            kind = mimetypes.guess_type(f.name)[0] or "application/octet-stream"
            store.put(bucket, key, f.read_bytes(), kind)
            typer.echo(f"oss://{bucket}/{key}")
    except StorageError as e:
        raise CliError(
            f"S3 at {s.s3_endpoint} failed ({e}); start the stack with `cropq up`, or check "
            "CROPQ_S3_ENDPOINT, CROPQ_S3_ACCESS_KEY and CROPQ_S3_SECRET_KEY"
        ) from None


@app.command()
def config(
    env_example: Annotated[
        bool, typer.Option("--env-example", help="Print .env.example instead (placeholders and defaults).")
    ] = False,
) -> None:
    """List every setting (environment variable, default, description) as a Markdown table."""
    from cropq_cli.config_docs import env_example as make_env_example
    from cropq_cli.config_docs import settings_table

    typer.echo(make_env_example() if env_example else settings_table(), nl=False)


def _mount_keys() -> None:
    from cropq_cli.keys import keys_app

    app.add_typer(keys_app, name="keys", help="Manage access keys (stored encrypted in Redis).")


_mount_keys()
register(app)


def main() -> None:
    app(prog_name="cropq")


if __name__ == "__main__":
    main()
