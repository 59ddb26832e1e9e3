"""The typer application every command module registers on, and the root options (--version)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from icrcli import __version__


def _no_type_on_flags() -> None:
    """--help shows no type for a flag (typer >= 0.2x writes `<bool>` beside it): a flag takes no value, and a
    type there reads as if it did."""
    import typer.core
    shown = getattr(typer.core.TyperOption, "display_type_rich", None)
    if shown is None or getattr(shown, "_icr", False):
        return

    def display_type_rich(self, ctx):
        return None if self.is_flag else shown(self, ctx)

    display_type_rich._icr = True
    typer.core.TyperOption.display_type_rich = display_type_rich


def _no_styles_with_no_color() -> None:
    """NO_COLOR (no-color.org) set: --help is plain text, without bold or italics too (rich drops only colours)."""
    import os
    if os.environ.get("NO_COLOR", ""):
        import typer.rich_utils
        typer.rich_utils.COLOR_SYSTEM = None


_no_type_on_flags()
_no_styles_with_no_color()

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


