"""Shell completions (bash, zsh, fish) and the man page, generated from the CLI's own command tree (every
command, option, choice and path argument), and the score result's tables of docs/JSON.md, generated from the
statistics' declarations (icrcli/stats/statistics.py), so they cannot drift from them.

    python dev/docgen.py            rewrite completions/icr.bash, completions/_icr, completions/icr.fish,
                                           man/icr.1 and docs/JSON.md's generated tables in the repository
    python dev/docgen.py --check    exit 1 if a committed copy differs from what the CLI gives now

tests/test_completions.py runs the check. Free-text values get no completion, except these hints: --arch
offers the built-in architectures, --device its usual values, and options that name files complete paths.
"""

from __future__ import annotations

import re
import sys
import textwrap
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import get_args, get_origin

REPO = Path(__file__).resolve().parents[1]
FILES = {"bash": "completions/icr.bash", "zsh": "completions/_icr", "fish": "completions/icr.fish",
         "man": "man/icr.1", "json": "docs/JSON.md"}
PATH_OPTIONS = {"--output", "--vae"}            # str-typed (they also take '-' or a folder) but name files
DEVICES = ("auto", "cpu", "cuda")

EXIT_STATUS = [
    ("0", "Success."),
    ("1", "An unexpected error: a bug or an environment problem icr did not foresee (please report it; --debug "
          "shows the traceback)."),
    ("2", "A usage or input error: a bad option value, a missing or unreadable file, an output that would replace "
          "an input. The message says what is wrong and what to do."),
    ("3", "icr timeline: a --fail-on-rise or --fail-above gate failed (the result is still written; the reason is "
          "printed on stderr even with --quiet)."),
    ("4", "icr timeline --watch --idle: nothing new arrived for the --idle duration, and no gate failed."),
    ("130", "Interrupted (Ctrl-C). An interrupted extraction keeps its finished chunks: the same command resumes; "
            "sweep and timeline first write the JSON of what they finished."),
    ("143", "Terminated (SIGTERM, as CI runners and timeout send): handled as Ctrl-C."),
]
ENVIRONMENT = [
    ("ICR_CACHE_DIR", "The cache folder (default: the per-user cache folder, e.g. ~/.cache/icr). See FILES."),
    ("ICR_MAX_MEMBER_BYTES", "The most bytes icr reads of one member of an image archive (.zip/.tar), checked on "
                             "its declared size and again while reading (default 64 MiB); a larger member is "
                             "refused, naming it."),
    ("ICR_CACHE_SECRET", "The secret (at least 16 characters) that signs and checks every cache entry, for CI "
                         "runners that share a cache; default: the file ~/.config/icr/cache-secret, made on first "
                         "use with mode 0600. An entry signed with another secret is recomputed."),
    ("OMP_WAIT_POLICY", "How torch's OpenMP threads wait for work. When another process is runnable as icr starts, "
                        "icr sets PASSIVE (a waiting thread sleeps), so a busy machine does not slow it down many "
                        "times over; on a quiet one the runtime's own spinning is kept. Set this, GOMP_SPINCOUNT or "
                        "KMP_BLOCKTIME yourself and your choice stands."),
    ("NO_COLOR", "When set, progress, summaries and --help are plain text: no colours, bold or italics (as when "
                 "stderr is not a terminal)."),
    ("ICR_PROGRESS_EVERY", "When stderr is not a terminal, progress is a plain line at most this often, in seconds "
                           "(default 30)."),
    ("TMPDIR", "Where --no-cache keeps its temporary cache while a command runs."),
    ("CUDA_VISIBLE_DEVICES", "Which GPUs --device auto and cuda can see (read by torch)."),
    ("RANK", "Set by torchrun: this process's rank; extract, sweep and timeline split their work across the ranks "
             "and rank 0 alone prints and writes the result (README 'Scale out')."),
    ("WORLD_SIZE", "Set by torchrun: how many ranks split the work (1 when unset: one process)."),
    ("LOCAL_RANK", "Set by torchrun: the rank on its node; --device auto and cuda mean cuda:LOCAL_RANK."),
]
FILES_SECTION = [
    ("$ICR_CACHE_DIR/features/", "Feature files (one per extraction request), and the chunks and locks of "
                                 "extractions in progress."),
    ("$ICR_CACHE_DIR/scores/", "icr score results, keyed by the feature file's content and the scoring options."),
    ("$ICR_CACHE_DIR/sweeps/, $ICR_CACHE_DIR/timeline-points/", "Finished sweeps and timeline points."),
    ("$ICR_CACHE_DIR/samples/", "Samples drawn by icr memorization."),
    ("$ICR_CACHE_DIR/hashes.sqlite", "The memo of file hashes, keyed by path, size, mtime, inode and ctime."),
    ("~/.config/icr/cache-secret", "The per-user secret of the cache's authentication codes (mode 0600; outside "
                                   "the cache folder, so a copied or restored cache cannot forge answers)."),
    ("CHECKPOINT.icr.json, icr.json", "Sidecars next to a checkpoint (or in its folder) that say how to read it."),
]


# ---------------------------------------------------------------------------------------------- the tree
@dataclass
class Opt:
    names: list[str]
    help: str
    flag: bool = False
    multiple: bool = False
    choices: list[str] | None = None
    path: bool = False
    metavar: str = ""
    default: str | None = None


@dataclass
class Arg:
    metavar: str
    help: str
    path: bool


@dataclass
class Cmd:
    words: list[str]                      # ["icr", "cache", "clear"]
    help: str
    opts: list[Opt] = field(default_factory=list)
    args: list[Arg] = field(default_factory=list)
    subs: list["Cmd"] = field(default_factory=list)

    @property
    def name(self) -> str:
        return " ".join(self.words)

    def walk(self):
        yield self
        for s in self.subs:
            yield from s.walk()

    @property
    def short(self) -> str:
        """The first sentence of the help, plain."""
        return _first_sentence(plain(self.description()[0]), ".:") if self.description() else ""

    def description(self) -> list[str]:
        """The help's paragraphs before "Examples:"."""
        text = self.help.split("Examples:")[0]
        return [p.strip() for p in re.split(r"\n\s*\n", textwrap.dedent(text)) if p.strip()]

    def examples(self) -> list[str]:
        if "Examples:" not in self.help:
            return []
        return [ln.strip() for ln in self.help.split("Examples:", 1)[1].splitlines() if ln.strip()]


def plain(text: str) -> str:
    """Help text without its markdown: `code`, **bold**, and the escaped brackets rich needs."""
    return re.sub(r"\\([\[\]])", r"\1", text.replace("`", "").replace("**", ""))


def _base_type(annotation):
    if get_origin(annotation) in (list, tuple):
        return get_args(annotation)[0], True
    return annotation, False


def _default(p) -> str | None:
    d = p.default
    if d is None or d is False or isinstance(d, (list, tuple)) or callable(d):
        return None
    return str(d.value if isinstance(d, Enum) else d)


def _command(cmd, words: list[str], help_names: list[str]) -> Cmd:
    from typer.core import TyperArgument
    node = Cmd(words, cmd.help or "")
    for p in cmd.params:
        if getattr(p, "hidden", False):
            continue
        ann, multiple = _base_type(p.type_descriptor.annotation)
        is_path = isinstance(ann, type) and issubclass(ann, Path)
        if isinstance(p, TyperArgument):
            node.args.append(Arg(p.metavar or p.name.upper(), plain(p.help or ""), is_path))
            continue
        choices = [e.value for e in ann] if isinstance(ann, type) and issubclass(ann, Enum) else None
        names = [*p.opts, *p.secondary_opts]
        if "--arch" in names:
            from icrcli.models.registry import BUILTIN_ARCHS
            choices = list(BUILTIN_ARCHS)
        elif "--device" in names:
            choices = list(DEVICES)
        elif "--augment" in names and choices is None:   # POLICY[:strengths]: the policies complete
            from icrcli.data.augment import POLICIES
            choices = list(POLICIES)
        is_path = is_path or bool(PATH_OPTIONS & set(names))
        metavar = p.metavar or ("|".join(choices) if choices else ("PATH" if is_path else _metavar(ann)))
        metavar = metavar.replace("\\", "")
        node.opts.append(Opt(names, plain(p.help or ""), flag=bool(getattr(p, "is_flag", False)),
                             multiple=multiple, choices=choices, path=is_path, metavar=metavar, default=_default(p)))
    node.opts.append(Opt(help_names, "Show the help and exit.", flag=True))
    for name, sub in sorted(getattr(cmd, "commands", {}).items()):
        if not getattr(sub, "hidden", False):
            node.subs.append(_command(sub, [*words, name], help_names))
    return node


def _metavar(ann) -> str:
    return {int: "INT", float: "FLOAT"}.get(ann, "TEXT")


def tree() -> Cmd:
    """The command tree of `icr` as typer builds it (every command registered)."""
    import typer.main

    from icrcli.cli.main import app
    cmd = typer.main.get_command(app)
    return _command(cmd, ["icr"], list(app.info.context_settings.get("help_option_names", ["--help"])))


# ---------------------------------------------------------------------------------------------- bash
def _value_opts(c: Cmd) -> list[str]:
    return [n for o in c.opts if not o.flag for n in o.names]


def bash(root: Cmd) -> str:
    cmds = list(root.walk())
    groups = [c for c in cmds if c.subs]
    out = ["# bash completion for icr. Generated from the CLI by `python dev/docgen.py`: do not edit.",
           "# Install: source this file from ~/.bashrc, or copy it to ~/.local/share/bash-completion/completions/icr",
           "",
           "_icr() {",
           '    local cur="${COMP_WORDS[COMP_CWORD]}" prev="" path="icr" w i skip=0',
           "    COMPREPLY=()",
           "    for ((i = 1; i < COMP_CWORD; i++)); do",
           '        w="${COMP_WORDS[i]}"',
           "        if ((skip)); then skip=0; continue; fi",
           '        case "$path $w" in']
    subs = [s.name for c in groups for s in c.subs]
    out.append("            " + "|".join(f'"{s}"' for s in subs) + ') path="$path $w" ;;')
    takes = [f'"{c.name} {n}"' for c in cmds for n in _value_opts(c)]
    out.append("            " + "|".join(takes) + ") skip=1 ;;")
    out += ["        esac",
            "    done",
            '    if ((skip)); then',
            '        prev="${COMP_WORDS[COMP_CWORD-1]}"',
            '        case "$path $prev" in']
    for c in cmds:
        for o in c.opts:
            if o.flag:
                continue
            keys = "|".join(f'"{c.name} {n}"' for n in o.names)
            if o.choices:
                out.append(f'            {keys}) mapfile -t COMPREPLY < <(compgen -W "{" ".join(o.choices)}" -- "$cur") ;;')
            elif o.path:
                out.append(f'            {keys}) compopt -o filenames 2>/dev/null; mapfile -t COMPREPLY < <(compgen -f -- "$cur") ;;')
    out += ["        esac",
            "        return 0",
            "    fi",
            '    if [[ $cur == -* ]]; then',
            '        case "$path" in']
    for c in cmds:
        names = " ".join(n for o in c.opts for n in o.names)
        out.append(f'            "{c.name}") mapfile -t COMPREPLY < <(compgen -W "{names}" -- "$cur") ;;')
    out += ["        esac",
            "        return 0",
            "    fi",
            '    case "$path" in']
    for c in groups:
        out.append(f'        "{c.name}") mapfile -t COMPREPLY < <(compgen -W "{" ".join(s.words[-1] for s in c.subs)}" -- "$cur") ;;')
    paths = [c for c in cmds if any(a.path for a in c.args)]
    if paths:
        out.append("        " + "|".join(f'"{c.name}"' for c in paths)
                   + ') compopt -o filenames 2>/dev/null; mapfile -t COMPREPLY < <(compgen -f -- "$cur") ;;')
    out += ["    esac",
            "}",
            "complete -F _icr icr",
            ""]
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------- zsh
def _zq(text: str) -> str:
    """Single-quoted for zsh."""
    return "'" + text.replace("'", "'\\''") + "'"


def _ze(text: str) -> str:
    """A description or message inside an _arguments spec: the characters _arguments gives meaning escaped."""
    return re.sub(r"([\[\]:\\])", r"\\\1", text)


def _zsh_spec(o: Opt) -> list[str]:
    help_ = _ze(_first_sentence(o.help))
    meta = _ze(o.metavar)
    if o.flag:
        action = ""
    elif o.choices:
        action = f":{meta}:({' '.join(o.choices)})"
    elif o.path:
        action = f":{meta}:_files"
    else:
        action = f":{meta}: "
    specs = []
    for n in o.names:
        star = "*" if o.multiple else ""
        sep = "" if o.flag else ("=" if n.startswith("--") else "+")
        specs.append(_zq(f"{star}{n}{sep}[{help_}]{action}"))
    return specs


def _zsh_fn(c: Cmd) -> list[str]:
    fn = "_" + "_".join(c.words).replace("-", "_")
    specs = [s for o in c.opts for s in _zsh_spec(o)]
    lines = [f"{fn}() {{"]
    if c.subs:
        lines += ["    local curcontext=\"$curcontext\" state line",
                  "    _arguments -C \\"]
        lines += [f"        {s} \\" for s in specs]
        lines += ["        '1: :->cmds' '*:: :->args'",
                  "    case $state in",
                  "        cmds)",
                  "            local -a cmds",
                  "            cmds=(" + " ".join(_zq(f"{s.words[-1]}:{_ze(s.short)}") for s in c.subs) + ")",
                  "            _describe -t commands 'icr command' cmds ;;",
                  "        args)",
                  "            case $line[1] in"]
        for s in c.subs:
            lines.append(f"                {s.words[-1]}) {'_' + '_'.join(s.words).replace('-', '_')} ;;")
        lines += ["            esac ;;", "    esac"]
    else:
        args = [_zq(f"{i + 1}:{_ze(a.metavar)}:{'_files' if a.path else ' '}") for i, a in enumerate(c.args)]
        lines += ["    _arguments \\"] + [f"        {s} \\" for s in specs + args]
        lines[-1] = lines[-1][:-2]
    lines.append("}")
    return lines


def zsh(root: Cmd) -> str:
    out = ["#compdef icr",
           "# zsh completion for icr. Generated from the CLI by `python dev/docgen.py`: do not edit.",
           "# Install: copy to a folder on $fpath (e.g. ~/.zfunc, with fpath+=~/.zfunc before compinit in ~/.zshrc).",
           ""]
    for c in root.walk():
        out += _zsh_fn(c) + [""]
    out += ['_icr "$@"', ""]
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------- fish
def _fq(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def fish(root: Cmd) -> str:
    cmds = list(root.walk())
    subs = [s.name for c in cmds for s in c.subs]
    takes = [f"{c.name} {n}" for c in cmds for n in _value_opts(c)]
    out = ["# fish completion for icr. Generated from the CLI by `python dev/docgen.py`: do not edit.",
           "# Install: copy to ~/.config/fish/completions/icr.fish",
           "",
           "set -g __icr_commands " + " ".join(_fq(s) for s in subs),
           "set -g __icr_value_options " + " ".join(_fq(t) for t in takes),
           "",
           "# The command being completed (e.g. 'icr cache clear'), from the words before the cursor.",
           "function __icr_path",
           "    set -l path icr",
           "    set -l skip 0",
           "    for w in (commandline -opc)[2..-1]",
           "        if test $skip = 1",
           "            set skip 0",
           "        else if contains -- \"$path $w\" $__icr_commands",
           "            set path \"$path $w\"",
           "        else if contains -- \"$path $w\" $__icr_value_options",
           "            set skip 1",
           "        end",
           "    end",
           "    echo $path",
           "end",
           "",
           "function __icr_is",
           "    test (__icr_path) = \"$argv[1]\"",
           "end",
           "",
           "complete -c icr -f"]
    for c in cmds:
        cond = f"-n {_fq('__icr_is ' + repr_fish(c.name))}"
        for s in c.subs:
            out.append(f"complete -c icr {cond} -a {s.words[-1]} -d {_fq(s.short)}")
        for o in c.opts:
            parts = [f"complete -c icr {cond}"]
            for n in o.names:
                parts.append(f"-l {n[2:]}" if n.startswith("--") else f"-s {n[1:]}")
            if o.choices:
                parts.append(f"-x -a {_fq(' '.join(o.choices))}")
            elif o.path:
                parts.append("-r -F")
            elif not o.flag:
                parts.append("-x")
            parts.append(f"-d {_fq(_first_sentence(o.help))}")
            out.append(" ".join(parts))
        if any(a.path for a in c.args):
            out.append(f"complete -c icr {cond} -F")
    out.append("")
    return "\n".join(out)


def repr_fish(name: str) -> str:
    return f'"{name}"'


def _first_sentence(text: str, ends: str = ".") -> str:
    """Up to the first sentence end outside parentheses ("(App. B.6)" does not end one)."""
    text = " ".join(text.split())
    depth = 0
    for i, ch in enumerate(text):
        depth += (ch == "(") - (ch == ")")
        if ch in ends and depth <= 0 and (i + 1 == len(text) or text[i + 1] == " "):
            return text[:i]
    return text.rstrip(".")


# ---------------------------------------------------------------------------------------------- man
def _r(text: str) -> str:
    """Text for roff: backslashes and hyphens escaped, non-ASCII as \\[uXXXX], no line starting with . or '."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    text = "".join(c if ord(c) < 128 else f"\\[u{ord(c):04X}]" for c in text)
    return "\n".join(("\\&" + ln) if ln[:1] in (".", "'") else ln for ln in text.splitlines())


def _man_text(text: str) -> str:
    """Help prose for roff: `code` in bold."""
    text = " ".join(plain(text.replace("`", "\x00")).split())
    parts = text.split("\x00")
    return "".join(_r(p) if i % 2 == 0 else f"\\fB{_r(p)}\\fR" for i, p in enumerate(parts))


def _synopsis(c: Cmd) -> str:
    args = " ".join(f"\\fI{_r(a.metavar)}\\fR" for a in c.args)
    return f".B {_r(c.name)}\n[\\fIOPTIONS\\fR]" + (" \\fICOMMAND\\fR" if c.subs else "") + (f" {args}" if args else "")


def _opt_lines(o: Opt) -> list[str]:
    names = ", ".join(f"\\fB{_r(n)}\\fR" for n in o.names)
    value = "" if o.flag else f" \\fI{_r(o.metavar)}\\fR"
    extra = []
    if o.default is not None and not o.flag:
        extra.append(f"Default: {o.default}.")
    if o.multiple:
        extra.append("Repeatable.")
    return [".TP", names + value, _man_text(" ".join([o.help, *extra]))]


def man(root: Cmd) -> str:
    from icrcli import __version__
    leaves = [c for c in root.walk() if not c.subs]
    out = ['.\\" Generated from the CLI by `python dev/docgen.py`: do not edit.',
           f'.TH ICR 1 "" "icr {__version__}" "User Commands"',
           ".SH NAME",
           "icr \\- the Invariant Contamination Ratio of diffusion\\-model features",
           ".SH SYNOPSIS"]
    for c in leaves:
        out += [_synopsis(c), ".br"]
    out[-1:] = []
    out += [".SH DESCRIPTION"]
    for para in root.description():
        out += [".PP", _man_text(para)]
    out += [".SH OPTIONS"]
    for o in root.opts:
        out += _opt_lines(o)
    out += [".SH COMMANDS"]
    for c in root.walk():
        if c is root:
            continue
        out += [f'.SS "{_r(c.name)}"', _synopsis(c)]
        for para in c.description():
            out += [".PP", _man_text(para)]
        for a in c.args:
            out += [".TP", f"\\fI{_r(a.metavar)}\\fR", _man_text(a.help)]
        for o in c.opts if not c.subs else []:
            out += _opt_lines(o)
    out += [".SH EXIT STATUS"]
    for code, text in EXIT_STATUS:
        out += [".TP", f"\\fB{code}\\fR", _man_text(text)]
    out += [".SH ENVIRONMENT"]
    for name, text in ENVIRONMENT:
        out += [".TP", f"\\fB{_r(name)}\\fR", _man_text(text)]
    out += [".SH FILES"]
    for name, text in FILES_SECTION:
        out += [".TP", f"\\fI{_r(name)}\\fR", _man_text(text)]
    out += [".SH EXAMPLES"]
    for c in leaves:
        for ex in c.examples():
            out += [".PP", ".nf", _r(ex), ".fi"]
    out += [".SH SEE ALSO",
            "The README (installation, the cache, completions) and docs/JSON.md (every command's JSON result) "
            "in the icr repository.",
            ""]
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------- docs/JSON.md
# Its tables of the score result are generated between these marks (the rest of the file is written by hand).
JSON_BEGIN = re.compile(r"<!-- generated by dev/docgen\.py \((\w+)\)[^>]*-->\n")
JSON_END = "<!-- end of generated table -->"
# The keys `icr score` adds on the command line (cli/score.py), after the cache's.
SCORE_CLI_KEYS = (("directions", "str", "*(optional, `--directions`)* the .npy the top Fisher directions were saved to"),
                  ("stats", "str", "*(optional, `--stats-out`)* the statistics file written"))


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def result_table(command: str) -> str:
    """The key table of a score result (stats/statistics.py TABLE and the keys around it), with what the cache
    (and for `score` the command line) adds."""
    from icrcli.stats import result, scorecache
    from icrcli.stats.statistics import TABLE, interval_rows
    rows = [*result.HEAD]
    for s in TABLE:
        rows.append((s.name, s.type, s.doc))
        rows += interval_rows(s)
    rows += result.TAIL
    if command == "score":
        rows += [*scorecache.KEYS, *SCORE_CLI_KEYS]
    elif command == "merge":
        rows += scorecache.MERGE_KEYS
    else:
        raise ValueError(f"no generated table {command!r} in docs/JSON.md: score or merge")
    return "\n".join(["| key | type | meaning |", "|---|---|---|",
                      *(f"| `{k}` | {_cell(t)} | {_cell(doc)} |" for k, t, doc in rows)]) + "\n"


def json_doc(text: str) -> str:
    """docs/JSON.md with each generated table (between its marks) made anew."""
    out, at = [], 0
    for m in JSON_BEGIN.finditer(text):
        end = text.find(JSON_END, m.end())
        if end < 0:
            raise ValueError(f"{FILES['json']}: the table begun by {m.group(0).strip()} has no {JSON_END}")
        out += [text[at:m.end()], result_table(m.group(1))]
        at = end
    if not out:
        raise ValueError(f"{FILES['json']}: no generated table marks; see dev/docgen.py")
    return "".join(out) + text[at:]


# ---------------------------------------------------------------------------------------------- files
def generate(base: Path = REPO) -> dict[str, str]:
    """{relative path: text} of every generated file (docs/JSON.md: the one under `base`, its tables made anew)."""
    root = tree()
    return {FILES["bash"]: bash(root), FILES["zsh"]: zsh(root), FILES["fish"]: fish(root), FILES["man"]: man(root),
            FILES["json"]: json_doc((base / FILES["json"]).read_text())}


def stale(base: Path = REPO) -> list[str]:
    """The generated files whose committed copy under `base` differs from what the CLI gives now."""
    return [rel for rel, text in generate(base).items()
            if not (base / rel).is_file() or (base / rel).read_text() != text]


def write(base: Path = REPO) -> list[str]:
    written = []
    for rel, text in generate(base).items():
        path = base / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.is_file() or path.read_text() != text:
            path.write_text(text)
            written.append(rel)
    return written


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["--check"]:
        bad = stale()
        for rel in bad:
            print(f"{rel} is stale: run `python dev/docgen.py`", file=sys.stderr)
        return 1 if bad else 0
    if argv:
        print(__doc__, file=sys.stderr)
        return 2
    for rel in write():
        print(f"wrote {rel}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
