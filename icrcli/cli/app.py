"""The typer application every command module registers on, and the root options (--version)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from icrcli import __version__

app = typer.Typer(
    name="icr",
    help="Invariant Contamination Ratio (ICR) of diffusion-model features: how cleanly a frozen denoiser "
         "separates what is invariant about an image from augmentation and noise (Li et al., ICML 2026). "
         "Lower is cleaner. Results are JSON on stdout (or -o FILE); progress and summaries go to stderr.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool):
    if value:
        typer.echo(f"icr {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[Optional[bool], typer.Option(
        "--version", callback=_version, is_eager=True, help="Print the version and exit.")] = None):
    pass


