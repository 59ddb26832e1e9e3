"""The options commands share, and the typer options of each option set, generated from its dataclass's fields
(icrcli.fields): declared once, in the module that owns the option set, and handed to a command as one object."""

from __future__ import annotations

import contextvars
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

Output = Annotated[str, typer.Option("-o", "--output", help="Write the JSON result here; '-' is stdout.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress or summary on stderr.")]
Debug = Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")]
NoCache = Annotated[bool, typer.Option("--no-cache", help="Compute afresh: look nothing up in the cache ($ICR_CACHE_DIR) "
                                       "and leave nothing in it.")]


ShardOpt = Annotated[Optional[str], typer.Option("--shard", metavar="I/N", help="Do only shard I of N (0 <= I < N): "
                                                 "the chunks I, I+N, ... of the images (README 'Scale out'). For "
                                                 "Slurm arrays and CI matrices; under torchrun, ranks split the work "
                                                 "themselves.")]


Shards = Annotated[Optional[int], typer.Option("--shards", metavar="N", min=1, help="Score every level from its N "
                                              "shards (those of `--shard I/N` runs, from the cache; any missing "
                                              "are computed here), merged exactly.")]


def cache_scope(no_cache: bool):
    """The with-block a command does its work in: the real cache, or with --no-cache a temporary one that is
    removed at the end (icrcli.cache.scratch)."""
    import contextlib
    if not no_cache:
        return contextlib.nullcontext()
    from icrcli.cache import scratch
    return scratch()


_ENUMS: dict[tuple, type[Enum]] = {}


def choices(name: str, values: str | tuple[str, ...]) -> type[Enum]:
    """A str Enum of the values (a tuple, or one string of space-separated words), for typer: one class per name
    and values, so that commands sharing an option share its choices."""
    values = tuple(values.split()) if isinstance(values, str) else tuple(values)
    if (name, values) not in _ENUMS:
        _ENUMS[name, values] = Enum(name, [(v, v) for v in values], type=str)
    return _ENUMS[name, values]



def guard_output(out: str, *inputs: Path) -> None:
    """-o FILE ('-' is stdout): never an input, only over an icr result (icrcli.cli.outputs.check_output)."""
    if out != "-":
        from icrcli.cli.outputs import check_output
        check_output(out, "-o", [("the input file", p) for p in inputs], "result")


# ------------------------------------------------------------------------------------------------------------
# Option sets: each field of the dataclass becomes a typer option (type, default, help, range, choices, panel),
# and the command is handed the built, checked object by name.

_KEEP = object()


@dataclass(frozen=True)
class _Param:
    name: str               # the command's parameter (from the flag: --probe-split -> probe_split)
    path: tuple[str, ...]   # the field, through nested option sets (("run", "device"))
    annotation: object
    default: object


def _params(cls, only, skip, flags: dict, panel, path=()) -> list[_Param]:
    import dataclasses
    import typer
    from icrcli import fields
    out = []
    types = fields.hints(cls)
    for f in dataclasses.fields(cls):
        s = fields.spec(f)
        if not s.cli or (only is not None and not path and f.name not in only) or f.name in skip:
            continue
        t = types[f.name]
        if dataclasses.is_dataclass(t):    # a nested option set (the run options in the view options)
            out += _params(t, None, skip, flags, panel, (*path, f.name))
            continue
        flag = flags.get(f.name) or s.flag or "--" + f.name.replace("_", "-")
        default = None if f.default is dataclasses.MISSING else f.default
        typ = s.cli_type or fields.base_type(t)
        if s.choices:
            typ = choices(f.name.title().replace("_", ""), s.choices)
            default = None if default is None else typ(default)
        if default is None and s.cli_type is None:
            typ = Optional[typ]
        kw = {"help": fields.help_text(s), "rich_help_panel": s.panel if panel is _KEEP else panel}
        for k in ("min", "max", "metavar"):
            if getattr(s, k) is not None:
                kw[k] = getattr(s, k)
        out.append(_Param(flag.lstrip("-").replace("-", "_"), (*path, f.name),
                          Annotated[typ, typer.Option(flag, **kw)], default))
    return out


def _build(cls, given: dict, path=()):
    """cls(**given), given keyed by field paths; nested option sets built first. A value left out (None, or an
    empty repeatable option) is not passed, so the field's own default holds."""
    import dataclasses
    from icrcli import fields
    kw = {}
    for f in dataclasses.fields(cls):
        t = fields.hints(cls)[f.name]
        here = (*path, f.name)
        if dataclasses.is_dataclass(t) and any(p[:len(here)] == here for p in given):
            kw[f.name] = _build(t, given, here)
        elif here in given:
            kw[f.name] = given[here]
    return cls(**kw)


def with_options(group: str, cls, *, only=None, skip=(), flags=None, panel=_KEEP, block: str | None = None):
    """Decorator: append the option set `cls`'s fields to a command's signature as typer options (those in `only`,
    without those in `skip`; `flags` renames some, `panel` regroups them all) and call the command with
    `group=cls(...)` built from their values. With `--options FILE` (with_options_file), the saved result's
    options block `block` is the base and the flags given on the command line override it."""
    import functools
    import inspect

    declared = _params(cls, only, set(skip), flags or {}, panel)

    def build(values: dict):
        given = {}
        for p in declared:
            v = values[p.name]
            if v is None or (isinstance(v, (list, tuple)) and not v):
                continue
            given[p.path] = [x.value if isinstance(x, Enum) else x for x in v] if isinstance(v, (list, tuple)) \
                else v.value if isinstance(v, Enum) else v
        saved = saved_block(block)
        if saved is None:
            return _build(cls, given)
        from icrcli.cli.options_file import overridden
        return overridden(cls, saved, {p.path: given.get(p.path) for p in declared if given_on_command_line(p.name)},
                          block or "score", options_path())

    def deco(fn):
        sig = inspect.signature(fn, eval_str=True)
        names = list(sig.parameters)
        at = names.index(group)     # the options take the place of the group's parameter, in field order
        kind = sig.parameters[group].kind
        extra = [inspect.Parameter(p.name, kind, default=p.default, annotation=p.annotation) for p in declared]
        own = [p for n, p in sig.parameters.items() if n != group]

        @functools.wraps(fn)
        def wrapper(**kw):
            kw[group] = build({p.name: kw.pop(p.name) for p in declared})
            return fn(**kw)

        params = own[:at] + extra + own[at:]
        del wrapper.__wrapped__  # typer must see the new signature, not the original's
        wrapper.__signature__ = sig.replace(parameters=params)
        wrapper.__annotations__ = {p.name: p.annotation for p in params}
        return wrapper
    return deco


def given_on_command_line(name: str) -> bool:
    """Whether the parameter was given on the command line (not its default): what overrides --options FILE."""
    req = _REQUEST.get()
    if req is None:
        return False
    source = req[1].get_parameter_source(name)
    return source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT")


OptionsFile = Annotated[Optional[Path], typer.Option("--options", metavar="FILE", help="Run the request a saved "
                                                     "result made: its \"options\" block (and inputs) are the "
                                                     "defaults, and the options given here override them (e.g. "
                                                     "the same sweep with another --seed). Read as JSON data.")]
# The running command's --options FILE, its click context and what was read of the file, while it runs.
_REQUEST: contextvars.ContextVar = contextvars.ContextVar("icr_options_file", default=None)


def with_options_file(fn):
    """Decorator (the outermost, right under the command's registration): add --options FILE to a command, for
    the option sets (with_options) and the command's own saved inputs (saved_or_given) to start from."""
    import functools
    import inspect
    sig = inspect.signature(fn, eval_str=True)
    extra = [inspect.Parameter("options_file", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=OptionsFile),
             inspect.Parameter("icr_context", inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context)]

    @functools.wraps(fn)
    def wrapper(**kw):
        token = _REQUEST.set((kw.pop("options_file"), kw.pop("icr_context"), {}))
        try:
            return fn(**kw)
        finally:
            _REQUEST.reset(token)

    params = [*sig.parameters.values(), *extra]
    del wrapper.__wrapped__
    wrapper.__signature__ = sig.replace(parameters=params)
    wrapper.__annotations__ = {p.name: p.annotation for p in params}
    return wrapper


def options_path() -> Path | None:
    """The --options FILE given to the running command, or None."""
    req = _REQUEST.get()
    return None if req is None else req[0]


def saved_block(block: str | None) -> dict | None:
    """The block of the --options FILE given to this command (None without one, or when the saved run had none):
    `block` of its "options", or with block None the score options (icrcli.cli.options_file.read_options)."""
    path = options_path()
    if path is None:
        return None
    from icrcli.cli.options_file import read_options
    return read_options(path, _REQUEST.get()[2], block)


def saved_or_given(value, name: str, key: str):
    """A command's own parameter `name` (its --data, its --sigmas): as given on the command line, else the saved
    result's top-level `key` under --options FILE, else its default."""
    path = options_path()
    if path is None or given_on_command_line(name):
        return value
    from icrcli.cli.options_file import saved_value
    saved = saved_value(path, _REQUEST.get()[2], key)
    return value if saved is None else saved


def with_model_options(fn):
    """The model options, handed to the command as `mopts` (an icrcli.models.options.ModelOptions)."""
    from icrcli.models.options import ModelOptions
    return with_options("mopts", ModelOptions, block="model")(fn)


def with_view_options(fn):
    """What views are drawn and how they run (layers, K, N, augmentation, seed, dtype, pool, ..., batch size,
    device), handed to the command as `vopts` (an icrcli.features.options.ViewOptions)."""
    from icrcli.features.options import ViewOptions
    return with_options("vopts", ViewOptions, block="views")(fn)


def with_score_options(fn):
    """How each level or point is scored (estimator, ridge, interval), handed to the command as `sopts`
    (an icrcli.stats.options.ScoreOptions)."""
    from icrcli.stats.options import SCAN_FIELDS, ScoreOptions
    return with_options("sopts", ScoreOptions, only=SCAN_FIELDS, block="score")(fn)
