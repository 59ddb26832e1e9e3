"""Options declared once. Each option set (model, views, run, score, probe, memorization) is a frozen dataclass
whose fields carry what the command line needs (help, range, choices, flag, panel) and whether the value is part
of a cache key; the typer options are generated from them (icrcli.cli.options.with_options), Python callers get
the same checks on construction (`check`), and a saved result's options block reads back (`from_dict`).
Imports nothing heavy: the CLI builds its --help from these declarations."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass

from icrcli.errors import OptionError


@dataclass(frozen=True)
class Spec:
    """How one field appears on the command line and in keys."""
    help: object = ""               # the text, or a function that gives it (read when --help is built)
    flag: str | None = None         # the option's name, e.g. "--arch-arg" (default: --the-field-name)
    min: float | None = None        # inclusive range, shown in --help and checked on construction
    max: float | None = None
    choices: tuple[str, ...] = ()   # the values a str field takes (a choice list in --help)
    metavar: str | None = None
    panel: str | None = None        # the --help panel the option is listed under
    keyed: bool = True              # part of a cache key (False: how the work runs, not what it computes)
    cli: bool = True                # a command-line option at all
    cli_type: object = None         # the type typer reads, when it is not the field's (a file read into a value)


def option(default=dataclasses.MISSING, help: str = "", factory=None, **spec) -> dataclasses.Field:
    """A dataclass field declared with its command-line face (Spec's fields as keywords)."""
    kw = {"default_factory": factory} if factory is not None else {"default": default}
    return dataclasses.field(**kw, metadata={"icr": Spec(help=help, **spec)})


def spec(f: dataclasses.Field) -> Spec:
    return f.metadata.get("icr") or Spec(cli=False)


def help_text(s: Spec) -> str:
    return s.help() if callable(s.help) else s.help


def hints(cls) -> dict:
    """The fields' real types (the annotations are strings under `from __future__ import annotations`)."""
    if "_icr_hints" not in cls.__dict__:
        setattr(cls, "_icr_hints", typing.get_type_hints(cls))
    return cls._icr_hints


def keyed(obj) -> dict:
    """The fields of an options object that are part of a cache key, as plain values (nested option sets are
    left out when not keyed, as the run options inside the view options)."""
    return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj) if spec(f).keyed}


def to_dict(obj) -> dict:
    """Every field as plain JSON values (tuples as lists, nested option sets as dicts)."""
    return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}


def _plain(v):
    if dataclasses.is_dataclass(v):
        return to_dict(v)
    if isinstance(v, (tuple, list)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    return v


def from_dict(cls, d: dict, where: str = ""):
    """An options object from a dict of its fields (a saved result's options block): an unknown name is an
    OptionError that names it; values are checked as on any construction."""
    if not isinstance(d, dict):
        raise OptionError(f"{where or cls.__name__}: expected an object of option names and values, got "
                          f"{type(d).__name__}.")
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - set(names))
    if unknown:
        raise OptionError(f"{where or cls.__name__}: unknown option {unknown[0]!r}; the options are "
                          f"{', '.join(names)}.")
    kw = {}
    for k, v in d.items():
        sub = hints(cls)[k]
        kw[k] = from_dict(sub, v, f"{where}.{k}" if where else k) if dataclasses.is_dataclass(sub) and \
            isinstance(v, dict) else v
    return cls(**kw)


def check(obj) -> None:
    """Each declared field's type, range and choices, with one sentence naming the bad value and what was
    expected (what the command line says in its own words for the same value)."""
    hinted = hints(type(obj))
    for f in dataclasses.fields(obj):
        s, v = spec(f), getattr(obj, f.name)
        if v is None or not f.metadata:
            continue
        what = _expected(hinted[f.name], s)
        if what is None:
            continue
        if not _fits(v, hinted[f.name], s):
            raise OptionError(f"{f.name} = {v!r}: expected {what}" + (f" ({_first(help_text(s))})" if s.help else "")
                              + ".")


def _first(text: str) -> str:
    """The first sentence of a help text, without its full stop: what the option is, for an error message."""
    return text.split(". ")[0].split("; ")[0].rstrip(".").strip()


def base_type(t):
    """int for `int | None`, and so on: the type a value has when it is given."""
    args = [a for a in typing.get_args(t) if a is not type(None)]
    optional = typing.get_origin(t) in (typing.Union, types.UnionType) and len(args) == 1
    return args[0] if optional else t


def _expected(t, s: Spec) -> str | None:
    b = base_type(t)
    if s.choices:
        return "one of " + ", ".join(s.choices)
    name = {int: "a whole number", float: "a number", bool: "True or False", str: "a string"}.get(b)
    if name is None:
        return None
    if s.min is not None and s.max is not None:
        return f"{name} in [{s.min:g}, {s.max:g}]"
    if s.min is not None:
        return f"{name} >= {s.min:g}"
    return name if b is not float else "a finite number"


def _fits(v, t, s: Spec) -> bool:
    b = base_type(t)
    if s.choices:
        return isinstance(v, str) and v in s.choices
    if b is bool:
        return isinstance(v, bool)
    if b is str:
        return isinstance(v, str)
    if b is int and (isinstance(v, bool) or not isinstance(v, int)):
        return False
    if b is float and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)):
        return False
    return (s.min is None or v >= s.min) and (s.max is None or v <= s.max)
