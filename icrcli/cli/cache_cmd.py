"""`icr cache`: where the cache is, what it holds, and clearing it (safe while other icr runs use it)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from icrcli.cli.app import app
from icrcli.cli.options import Debug, Quiet, choices

cache_app = typer.Typer(
    help="The content-addressed cache: feature files, score results, sweep and timeline records, samples. "
         "Location: $ICR_CACHE_DIR, else the per-user cache folder (e.g. ~/.cache/icr).",
    no_args_is_help=True, rich_markup_mode="markdown", context_settings={"help_option_names": ["-h", "--help"]})
app.add_typer(cache_app, name="cache")

KIND_NAMES = "features scores sweeps timeline-points samples hashes"   # icrcli.cli.cache_admin.KINDS (tested equal)
Kind = choices("Kind", KIND_NAMES)


@cache_app.command("path")
def path(debug: Debug = False):
    """Print the cache folder (created if missing).

    Examples:

      icr cache path

      du -sh "$(icr cache path)"
    """
    from icrcli.cache import cache_dir
    typer.echo(str(cache_dir()))


@cache_app.command("info")
def info(json_out: Annotated[bool, typer.Option("--json", help="JSON instead of text.")] = False,
         debug: Debug = False):
    """Entries by kind: how many, their size, the oldest and newest, and how many are being made.

    Examples:

      icr cache info

      icr cache info --json | jq .total_bytes
    """
    from icrcli.cli.cache_admin import info as cache_info
    from icrcli.cli import console
    d = cache_info()
    if json_out:
        console.write_json(d, "-")
        return
    lines = [f"cache: {d['cache_dir']}"]
    for kind, k in d["kinds"].items():
        span = f", {k['oldest'] or '?'} .. {k['newest']}" if k["newest"] else ""
        busy = f", {k['in_progress']} being made" if k["in_progress"] else ""
        lines.append(f"  {kind:16s} {k['entries']:7d} entries {_size(k['bytes']):>10s}{busy}{span}")
    lines.append(f"  {'total':16s} {'':15s} {_size(d['total_bytes']):>10s}")
    typer.echo("\n".join(lines))


@cache_app.command("clear")
def clear(
    older_than: Annotated[Optional[str], typer.Option(metavar="AGE", help="Only entries last written more than "
                                                      "AGE ago: 30d, 12h, 90m, 2w.")] = None,
    kind: Annotated[Optional[list[Kind]], typer.Option(help="Only this kind (repeatable).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would be removed; remove nothing.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the JSON summary on stdout.")] = False,
    quiet: Quiet = False,
    debug: Debug = False,
):
    """Remove cache entries. Safe while other icr runs use the cache: an entry that is locked or being written
    (an extraction in progress, a fresh temp file) is kept and counted.

    Examples:

      icr cache clear --older-than 30d

      icr cache clear --kind scores --kind sweeps --dry-run
    """
    from icrcli.cli.cache_admin import clear as cache_clear, parse_age
    from icrcli.cli import console
    console.set_quiet(quiet)
    r = cache_clear([k.value for k in kind or []] or None, parse_age(older_than) if older_than is not None else None, dry_run)
    n = sum(v["entries"] for k, v in r["removed"].items() if k != "hashes")
    size = sum(v["bytes"] for v in r["removed"].values())
    busy = sum(r["kept_in_use"].values())
    hashes = r["removed"].get("hashes", {}).get("entries", 0)
    verb = "would remove" if dry_run else "removed"
    console.say(f"{verb} {n} entries ({_size(size)}) from {r['cache_dir']}"
                + (f"; {hashes} remembered file hashes" if hashes else "")
                + (f"; kept {busy} in use by another icr run" if busy else ""))
    if json_out:
        console.write_json(r, "-")


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)
