"""Option sets declared once (issue 17 point 1): each is a frozen dataclass, checked on construction with one
sentence (an OptionError, which is a ValueError and a UserError), and the CLI's options are generated from its
fields; which options are keyed is a property of the field, and the scans' keys are the ones they always were."""

import dataclasses

import click
import pytest
import typer

from icrcli import fields
from icrcli.cli.main import app
from icrcli.errors import OptionError, UserError
from icrcli.features.options import RunOptions, ViewOptions
from icrcli.models.options import ModelOptions
from icrcli.scans.options import MemorizationOptions, ProbeOptions
from icrcli.stats.options import ScoreOptions


def _command(name: str) -> click.Command:
    return typer.main.get_command(app).commands[name]


def _option(cmd: click.Command, flag: str) -> click.Option:
    found = [p for p in cmd.params if flag in getattr(p, "opts", ())]
    assert found, f"{cmd.name} has no {flag}"
    return found[0]


@pytest.mark.parametrize("command, cls, renamed", [
    ("extract", ViewOptions, {}), ("extract", RunOptions, {}), ("sweep", ModelOptions, {}),
    ("timeline", ScoreOptions, {}), ("score", ScoreOptions, {}), ("probe", ProbeOptions, {}),
    ("sweep", ProbeOptions, {"split": "--probe-split", "folds": "--probe-folds", "seed": None}),  # --seed: views
    ("memorization", MemorizationOptions, {})])
def test_cli_options_are_the_fields(command, cls, renamed):
    """Each command-line field of an option set is an option of the command with the field's help, default and
    range: the one declaration is what --help shows."""
    cmd = _command(command)
    for f in dataclasses.fields(cls):
        s = fields.spec(f)
        if f.name in renamed and renamed[f.name] is None:
            continue
        flag = renamed.get(f.name) or s.flag or "--" + f.name.replace("_", "-")
        if not s.cli or not any(flag in getattr(p, "opts", ()) for p in cmd.params):
            continue
        opt = _option(cmd, flag)
        assert opt.help == fields.help_text(s)
        default = opt.default.value if hasattr(opt.default, "value") else opt.default
        if f.default is not dataclasses.MISSING and s.cli_type is None:
            assert default == f.default, f.name
        if s.min is not None:
            assert opt.min == s.min
        if s.choices:
            assert tuple(e.value for e in opt.type_descriptor.annotation) == s.choices


def test_scan_commands_take_every_view_and_model_option():
    for command in ("extract", "sweep", "timeline"):
        names = {o for p in _command(command).params for o in getattr(p, "opts", ())}
        for cls in (ViewOptions, RunOptions, ModelOptions):
            for f in dataclasses.fields(cls):
                s = fields.spec(f)
                if s.cli and not dataclasses.is_dataclass(fields.hints(cls)[f.name]):
                    assert (s.flag or "--" + f.name.replace("_", "-")) in names, (command, f.name)


@pytest.mark.parametrize("build, words", [
    (lambda: ViewOptions(views=1), "views = 1: expected a whole number >= 2"),
    (lambda: ViewOptions(images=1), "images = 1: expected a whole number >= 2"),
    (lambda: ViewOptions(dtype="float64"), "dtype = 'float64': expected one of float32, bfloat16, float16"),
    (lambda: ViewOptions(seed=-1), "seed = -1"),
    (lambda: ViewOptions(augment="crop:pad=x"), "crop"),
    (lambda: ViewOptions(augment="bogus"), "bogus"),
    (lambda: RunOptions(batch_size=0), "batch_size = 0: expected a whole number >= 1"),
    (lambda: ModelOptions(param="score-sde"), "param = 'score-sde': expected one of edm"),
    (lambda: ModelOptions(class_label=-1), "class_label = -1"),
    (lambda: ModelOptions(arch_args=["model_channels"]), "expected name=value"),
    (lambda: ProbeOptions(split=1.5), "split = 1.5: expected a number in [0.05, 0.95]"),
    (lambda: ProbeOptions(protocol="mean"), "protocol = 'mean': expected one of paper, view-mean"),
    (lambda: ProbeOptions(knn=0), "knn = 0"),
    (lambda: MemorizationOptions(criterion="l1"), "criterion = 'l1': expected one of ratio, cosine"),
    (lambda: MemorizationOptions(samples=0), "samples = 0"),
    (lambda: ScoreOptions(confidence=1.5), "confidence = 1.5"),
    (lambda: ScoreOptions(ci="yes"), "ci = 'yes': expected True or False"),
    (lambda: RunOptions(device=0), "device = 0: expected a string"),
])
def test_construction_checks_with_one_sentence(build, words):
    with pytest.raises(OptionError) as e:
        build()
    assert isinstance(e.value, ValueError) and isinstance(e.value, UserError)
    assert words in str(e.value)
    assert "\n" not in str(e.value) and str(e.value).endswith(".")


@pytest.mark.parametrize("bad", [{"views": 1}, {"images": 1}, {"dtype": "float64"}, {"chunk_images": 0},
                                 {"t_mode": "step"}, {"pool": "max"}, {"seed": -1}, {"augment": "bogus"}])
def test_a_request_is_checked_by_the_view_options(bad):
    """features.plan.Request (a view request at one sigma) has no checks of its own for the view fields: it is
    refused with the very sentence ViewOptions gives for the same value (one check, one message)."""
    from icrcli.features.plan import Request
    with pytest.raises(UserError) as views:
        ViewOptions(**bad)
    with pytest.raises(UserError) as request:      # the augmentation: its own parse, with the same sentence
        Request(sigma=0.5, **bad)
    assert str(request.value) == str(views.value)


def test_options_are_frozen_and_normalised():
    v = ViewOptions(layer=["a", "b"], augment=["crop"], indices=[3, 1])
    assert v.layer == ("a", "b") and v.augment == "crop" and v.indices == (3, 1)
    assert ViewOptions(augment=["crop", "digits"]).augment == ("crop", "digits")
    assert ViewOptions(augment=[]).augment == "paper" and ViewOptions(layer=[]).layer is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        v.views = 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        ModelOptions().arch = "edm"
    assert ModelOptions(arch_args=["model_channels=16", "n=(1,2)"]).arch_args == {"model_channels": 16, "n": (1, 2)}


def test_indices_file_is_read_and_not_keyed(tmp_path):
    f = tmp_path / "idx.txt"
    f.write_text("5\n2\n9\n")
    v = ViewOptions(indices=f)
    assert v.indices == (5, 2, 9) and v.indices_file == str(f)
    assert v.keyed()["indices"] == [5, 2, 9] and "indices_file" not in v.keyed()
    with pytest.raises(UserError, match="no such file"):
        ViewOptions(indices=tmp_path / "none.txt")


# What the scans' keys and results held as their "views" before the option sets were dataclasses (the CLI's dict
# of option values without batch_size, device and the indices' file name): keys made before still answer.
LEGACY_DEFAULT_VIEWS = {"layer": None, "views": 2, "images": 4096, "augment": "paper", "indices": None, "seed": 0,
                        "dtype": "float32", "pool": "mean", "resize": False, "chunk_images": 256,
                        "t_mode": "nearest", "skip_bad_images": False}


def test_keyed_fields_are_what_keys_always_held():
    assert ViewOptions().keyed() == LEGACY_DEFAULT_VIEWS
    v = ViewOptions(layer=["a"], augment=["crop", "digits"], views=4, run=RunOptions(batch_size=7, device="cpu"))
    assert v.keyed() == {**LEGACY_DEFAULT_VIEWS, "layer": ["a"], "augment": ["crop", "digits"], "views": 4}
    assert fields.keyed(ScoreOptions(tau=0.5)) == dataclasses.asdict(ScoreOptions(tau=0.5))
    assert fields.keyed(ModelOptions(arch="edm")) == dataclasses.asdict(ModelOptions(arch="edm"))


def test_run_options_never_reach_a_key(tmp_path):
    """Whether a field is keyed is declared on it: the run options change no scan key, a view option does."""
    from icrcli.scans.sweep import sweep_key
    ck, data = tmp_path / "ck.pt", tmp_path / "d.npy"
    ck.write_bytes(b"weights")
    data.write_bytes(b"images")

    def key(v):
        return sweep_key(ck, data, [0.5], ModelOptions(), v, ScoreOptions())
    base = key(ViewOptions())
    assert key(ViewOptions(run=RunOptions(batch_size=3, device="cpu"))) == base
    assert key(ViewOptions(seed=1)) != base
    assert all(not fields.spec(f).keyed for f in dataclasses.fields(RunOptions))


# Score options that touch every field (the ridge both ways, the interval, the blocks, the directions).
SCORE_CASES = [ScoreOptions(), ScoreOptions(tau=0.5), ScoreOptions(estimator="plugin", tau_rel=1e-2),
               ScoreOptions(ci=True, ci_groups=7, confidence=0.9), ScoreOptions(skip_nonfinite=True, allow_partial=True,
                                                                              block_images=5, top=3)]


@pytest.mark.parametrize("sopts", SCORE_CASES)
def test_scan_keys_hold_the_score_options_as_before(tmp_path, sopts):
    """The scans key the score options by their fields' `keyed` declaration; the keys are byte for byte the ones
    made when they held dataclasses.asdict(sopts) (the formula written out again here), so cached scans still
    answer."""
    from icrcli.scans import records
    from icrcli.scans.split import Split
    from icrcli.scans.sweep import sweep_key
    from icrcli.scans.timeline import Checks, point_key
    ck, data = tmp_path / "ck.pt", tmp_path / "d.npy"
    ck.write_bytes(b"weights")
    data.write_bytes(b"images")
    m, v = ModelOptions(), ViewOptions(seed=3)
    old_sweep = {**records.checkpoint_identity(ck, m), "data_sha256": records.data_identity(data),
                 "sigmas": [0.5, 2.0], "views": v.keyed(), "score": dataclasses.asdict(sopts), "probe": None,
                 **Split().key()}
    assert sweep_key(ck, data, [0.5, 2.0], m, v, sopts) == records.record_key("sweeps", old_sweep)
    checks = Checks(memorization=4)
    old_point = {**records.checkpoint_identity(ck, m), "data_sha256": "ab" * 32, "sigma": 0.5, "views": v.keyed(),
                 "score": dataclasses.asdict(sopts), "checks": dataclasses.asdict(checks)}
    assert point_key(ck, "ab" * 32, 0.5, m, v, sopts, checks) == records.record_key("timeline-points", old_point)


def test_timeline_memorization_steps_are_the_memorization_default():
    """A timeline's memorization check draws its samples as `icr memorization` does by default (one declaration)."""
    from icrcli.scans.timeline import Checks
    assert Checks().memorization_steps == MemorizationOptions().steps


def test_cli_and_python_refuse_with_the_same_sentence(icr, tmp_path):
    """A bad --augment is the OptionError ViewOptions raises, as exit 2 (before anything is loaded)."""
    with pytest.raises(OptionError) as e:
        ViewOptions(augment="crop:pad=x")
    (tmp_path / "ck.pt").write_bytes(b"x")
    (tmp_path / "d.npy").write_bytes(b"x")
    r = icr("extract", tmp_path / "ck.pt", "--data", tmp_path / "d.npy", "--sigma", "0.5", "--augment",
            "crop:pad=x")
    assert r.code == 2
    assert str(e.value) in " ".join(r.err.split())


def test_from_dict_round_trips_and_names_unknown_options():
    v = ViewOptions(layer=["a"], augment=["crop", "digits"], indices=[1, 2, 3], seed=4)
    assert fields.from_dict(ViewOptions, v.keyed()) == dataclasses.replace(v, indices_file=None)
    assert fields.from_dict(ViewOptions, fields.to_dict(v)) == v
    with pytest.raises(OptionError, match="unknown option 'veiws'"):
        fields.from_dict(ViewOptions, {"veiws": 2})
