"""Completions (bash, zsh, fish), the man page and docs/JSON.md's score tables: generated (from the CLI and the
statistics' declarations), committed, current, and working in the real shells (zsh and fish tests skip where those
shells are not installed)."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _load_docgen():
    """dev/docgen.py is a development script, not part of the installed package: load it by path."""
    import importlib.util
    import sys
    spec = importlib.util.spec_from_file_location("docgen", REPO / "dev" / "docgen.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["docgen"] = mod   # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


docgen = _load_docgen()
BASH = REPO / "completions" / "icr.bash"


def test_committed_copies_are_current():
    """Fails when the CLI (or the statistics' declarations) changed and the completions, the man page or
    docs/JSON.md's generated tables were not regenerated."""
    assert docgen.stale() == [], "regenerate with: python dev/docgen.py"


def test_tree_has_every_command_and_choice():
    root = docgen.tree()
    names = {c.name for c in root.walk()}
    assert {"icr score", "icr sweep", "icr timeline", "icr extract", "icr cache clear", "icr cache info"} <= names
    opts = {n: o for c in root.walk() if c.name == "icr extract" for o in c.opts for n in o.names}
    assert opts["--arch"].choices == ["edm", "dit", "sit", "repa"]
    assert "crop-flip" in opts["--augment"].choices and opts["--data"].path and opts["--resize"].flag
    score = next(c for c in root.walk() if c.name == "icr score")
    assert score.args[0].path and {"--help", "-h", "--no-cache"} <= {n for o in score.opts for n in o.names}


def _bash(script: str) -> str:
    r = subprocess.run(["bash", "--norc", "--noprofile", "-c", f"source {BASH}\n{script}"], capture_output=True,
                       text=True, cwd=REPO, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


_COMPLETE = 'c() { COMP_WORDS=("$@"); COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); COMPREPLY=(); _icr; ' \
            'printf "%s\\n" "${COMPREPLY[@]}"; echo ---; }\n'


def test_bash_completes_commands_options_choices_and_paths():
    out = _bash("complete -p icr\n" + _COMPLETE + "\n".join([
        "c icr sw", "c icr score --est", "c icr score --estimator ''", "c icr extract x --arch ''",
        "c icr cache ''", "c icr cache clear --kind t", "c icr score READ", "c icr sweep --data x --sig",
        "c icr info --data-range"]))
    first, *rest = out.split("---\n")
    assert first.splitlines()[0] == "complete -F _icr icr" and first.splitlines()[1:] == ["sweep"]
    est, values, arch, cache, kind, path, sig, none = [r.split() for r in rest[:8]]
    assert est == ["--estimator"] and values == ["paper", "plugin"]
    assert arch == ["edm", "dit", "sit", "repa"] and cache == ["clear", "info", "path"]
    assert kind == ["timeline-points"] and path == ["README.md"]
    assert sig == ["--sigmas"] and none == []          # info has no --data-range


@pytest.mark.skipif(shutil.which("fish") is None, reason="fish is not installed")
def test_fish_completes():
    script = (f"source {REPO / 'completions' / 'icr.fish'}; complete -C'icr sw'; echo ---; "
              "complete -C'icr cache clear --kind t'; echo ---; complete -C'icr score --estimator '")
    r = subprocess.run(["fish", "--no-config", "-c", script], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    sw, kind, est = [[ln.split("\t")[0] for ln in part.strip().splitlines()] for part in r.stdout.split("---")]
    assert sw == ["sweep"] and kind == ["timeline-points"] and est == ["paper", "plugin"]


_ZPTY = r"""
zmodload zsh/zpty
zpty -b z 'zsh -f -i'
zpty -w z 'PS1="> "; fpath=(%s $fpath); autoload -Uz compinit; compinit -u -D; echo READY'
zpty -r -m z out '*READY*'
zpty -w -n z $'icr sw\t'
zpty -r -m z out '*icr sweep*'
print -r -- "$out"
zpty -d z
"""


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed")
def test_zsh_completes():
    r = subprocess.run(["zsh", "-f", "-c", _ZPTY % (REPO / "completions")], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert "icr sweep" in re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|[\x00-\x08]", "", r.stdout)


@pytest.mark.skipif(shutil.which("groff") is None, reason="groff is not installed")
def test_man_page_renders_without_warnings():
    r = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z", str(REPO / "man" / "icr.1")], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and r.stdout == "" and r.stderr == "", r.stderr


def test_man_page_covers_commands_exit_codes_and_environment():
    page = (REPO / "man" / "icr.1").read_text()
    sections = re.findall(r"^\.SH (.+)$", page, re.M)
    assert sections == ["NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "COMMANDS", "EXIT STATUS", "ENVIRONMENT",
                        "FILES", "EXAMPLES", "SEE ALSO"]
    text = page.replace("\\-", "-")
    for c in docgen.tree().walk():
        if c.words != ["icr"]:
            assert f'.SS "{c.name}"' in text
        for o in c.opts:
            assert all(n in text for n in o.names), (c.name, o.names)
    # Every exit code the CLI uses, and every environment variable icr reads, is documented.
    source = "\n".join(p.read_text() for p in (REPO / "icrcli").rglob("*.py"))
    codes = set(re.findall(r"sys\.exit\((\d+)\)", source)) | set(re.findall(r"^EXIT_\w+ = (\d+)", source, re.M))
    assert codes >= {"1", "2", "3", "130"}
    exit_part = text.split(".SH EXIT STATUS")[1].split(".SH")[0]
    assert codes <= set(re.findall(r"\\fB(\d+)\\fR", exit_part)) | {"0"}
    consts = dict(re.findall(r'^(\w+) = "([A-Z][A-Z0-9_]+)"', source, re.M))
    read = {consts.get(m, m.strip("\"'")) for m in re.findall(r"environ\.get\(([^,)]+)", source)}
    read |= set(re.findall(r'getenv\("(\w+)"', source))
    env_part = text.split(".SH ENVIRONMENT")[1].split(".SH")[0]
    assert read and {"ICR_CACHE_DIR", "ICR_MAX_MEMBER_BYTES"} <= read
    assert all(f"\\fB{v}\\fR" in env_part for v in read), read
