"""`--options FILE`: a saved result's "options" block as the defaults of a new run, the flags given on the command
line over them ("the same sweep with another seed": `icr sweep ck.pt --options old.json --seed 1`). The file is
read as JSON data and its values go through the option sets' own checks; nothing in it is run or imported."""

from __future__ import annotations

import json
from pathlib import Path

from icrcli import fields
from icrcli.errors import OptionError

_MAX_BYTES = 256 << 20      # a sweep's result with every level's eigenvalues is a few MB; far more is not one


def read_result(path: Path, memo: dict) -> dict:
    """The saved result (a JSON object with an "options" object), read once per command (memo: click's ctx.meta)."""
    key = ("icr-options-file", str(path))
    if key not in memo:
        memo[key] = _read(Path(path))
    return memo[key]


def _read(path: Path) -> dict:
    what = "a JSON result that `icr sweep`, `icr timeline` or `icr score` wrote (-o FILE)"
    if not path.is_file():
        raise OptionError(f"--options {path}: no such file. Pass {what}.")
    if path.stat().st_size > _MAX_BYTES:
        raise OptionError(f"--options {path}: {path.stat().st_size} bytes is not a result icr wrote. Pass {what}.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise OptionError(f"--options {path}: not JSON ({e}). Pass {what}.") from None
    if not isinstance(data, dict) or not isinstance(data.get("options"), dict):
        raise OptionError(f'--options {path}: it has no "options" block, so it says no request to repeat. Pass '
                          f"{what}.")
    return data


def read_options(path: Path, memo: dict, block: str | None) -> dict | None:
    """The options block `block` of the saved result (None when the result ran without it, as a sweep without
    --probe); block None: the score options, which a score result holds flat and a scan under "score"."""
    options = read_result(path, memo)["options"]
    if block is None:
        return options["score"] if isinstance(options.get("score"), dict) else options
    if block not in options:
        raise OptionError(f'--options {path}: its "options" block has no "{block}" options ({", ".join(options)}), '
                          "so it is not a result of this command. Pass a result this command wrote.")
    got = options[block]
    if got is not None and not isinstance(got, dict):
        raise OptionError(f'--options {path}: options.{block} is a {type(got).__name__}, not an object of options.')
    return got


def saved_value(path: Path, memo: dict, key: str):
    """A top-level value of the saved result (its "data", its "sigmas"), or None."""
    return read_result(path, memo).get(key)


def overridden(cls, saved: dict, given: dict[tuple, object], where: str, path: Path | None = None):
    """cls from the saved block with the values `given` on the command line (keyed by field path, as ("run",
    "device")) over it. Giving one of a pair of rivals (a class's _RIVALS, as --tau-rel clears a saved --tau)
    clears the other."""
    d = {k: v for k, v in saved.items() if k not in getattr(cls, "_SAVED_EXTRA", ())}
    if where == "model":
        _refuse_code(d, given, path)
    for field_path, value in given.items():
        if value is None:
            continue
        at = d
        for name in field_path[:-1]:
            at[name] = dict(at.get(name) or {})
            at = at[name]
        at[field_path[-1]] = value
        for rival in getattr(cls, "_RIVALS", {}).get(field_path[-1], ()):
            if given.get((rival,)) is None:
                d[rival] = None
    try:
        return fields.from_dict(cls, d, f"options.{where}")
    except OptionError as e:
        raise OptionError(f"--options {path or 'FILE'}: {e}") from None


def _refuse_code(saved: dict, given: dict, path: Path | None) -> None:
    """A saved result may not make icr import, execute or unpickle code (as a sidecar may not): your own
    architecture's code and --trust-pickle come from the command line only, given again to run them again."""
    if saved.get("trust_pickle") and not given.get(("trust_pickle",)):
        raise OptionError(f"--options {path}: the saved run had --trust-pickle, which lets a pickle run its code; a "
                          "file may not decide that. If you trust the checkpoint, pass --trust-pickle again.")
    arch = saved.get("arch")
    if isinstance(arch, str) and ":" in arch and not given.get(("arch",)):
        raise OptionError(f"--options {path}: the saved run read the network with --arch {arch}, which is code to "
                          f"import and run; a file may not make icr run code. Pass --arch {arch} again to run it.")
