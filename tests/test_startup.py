"""Start-up: what `icr` imports. Heavy modules only where they are used (torch for commands that run a network,
scipy.stats for the interval, the statistics only when a score is computed), rich's pretty tracebacks never.
(The times themselves are measured by bench/startup.py, not asserted here.)"""

import json
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

_RUN = """
import json, sys
from icrcli.cli.main import main
sys.argv = ["icr", *sys.argv[1:]]
try:
    main()
except SystemExit as e:
    assert not e.code, e.code
mods = ("torch", "scipy", "scipy.stats", "scipy.linalg", "numpy", "h5py", "rich.traceback")
print(json.dumps({m: m in sys.modules for m in mods}), file=sys.stderr)
"""


def _imports(*args, env=None) -> dict:
    p = subprocess.run([sys.executable, "-c", _RUN, *map(str, args)], capture_output=True, text=True, env=env,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stderr.strip().splitlines()[-1])


@pytest.mark.slow
def test_help_imports_neither_torch_nor_the_statistics():
    for args in (["--help"], ["score", "--help"], ["sweep", "--help"], ["cache", "clear", "--help"]):
        m = _imports(*args)
        assert not m["torch"] and not m["scipy"] and not m["numpy"], (args, m)


@pytest.mark.slow
def test_score_imports_what_it_uses_and_a_cached_score_nothing_heavy(tmp_path):
    f = tmp_path / "f.h5"
    with h5py.File(f, "w") as h:
        h["features"] = np.random.default_rng(0).normal(size=(64, 2, 16)).astype(np.float32)
    env = {**os.environ, "ICR_CACHE_DIR": str(tmp_path / "cache")}
    computed = _imports("score", f, "-q", "-o", tmp_path / "a.json", env=env)
    assert computed["scipy.linalg"] and computed["h5py"]
    assert not computed["torch"] and not computed["scipy.stats"] and not computed["rich.traceback"]
    with_ci = _imports("score", f, "-q", "--ci", "--ci-groups", "4", env=env)
    assert with_ci["scipy.stats"] and not with_ci["torch"]           # the interval's t quantile
    cached = _imports("score", f, "-q", "-o", tmp_path / "b.json", env=env)
    assert not any(cached.values()), cached                          # answered from the score cache
    a, b = (json.loads((tmp_path / n).read_text()) for n in ("a.json", "b.json"))
    assert (a.pop("cached"), b.pop("cached")) == (False, True) and a == b      # the same answer, said as cached


def test_every_command_module_is_registered_by_name():
    """main.COMMANDS (the entry point imports only the command it runs) names every module that registers one."""
    from pathlib import Path

    from icrcli.cli import main as entry
    cli = Path(entry.__file__).parent
    registering = {p.stem for p in cli.glob("*.py") if p.stem != "app"
                   and ("@app.command" in p.read_text() or "app.add_typer" in p.read_text())}
    assert registering == set(entry.COMMANDS.values())
    import typer.main
    assert set(typer.main.get_command(entry.app).commands) == set(entry.COMMANDS)


@pytest.mark.slow
def test_one_command_run_registers_only_that_command():
    code = ("import sys; from icrcli.cli.main import main; sys.argv = ['icr', 'cache', 'path']\n"
            "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code\nprint(sorted(m for m in sys.modules if m.startswith('icrcli.cli.')), file=sys.stderr)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    loaded = p.stderr.strip().splitlines()[-1]
    assert "icrcli.cli.cache_cmd" in loaded and "icrcli.cli.sweep" not in loaded and "icrcli.cli.extract" not in loaded
