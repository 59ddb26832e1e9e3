"""Each choice list is declared once, with its option (icrcli.fields), and the modules that act on the values read
it from there; --help needs no torch."""

from icrcli.data import augment
from icrcli.data.augment_spec import POLICIES
from icrcli.features import extract, options as view_options
from icrcli.models import noise, options as model_options, taps
from icrcli.scans import options as check_options
from icrcli.stats import estimators, options as score_options


def test_modules_read_the_declared_choices():
    assert estimators.ESTIMATORS is score_options.ESTIMATORS
    assert noise.PARAMS is model_options.PARAMS
    assert taps.POOLS is view_options.POOLS
    assert extract.DTYPES is view_options.DTYPES
    from icrcli.scans.probe import PROTOCOLS
    assert PROTOCOLS is check_options.PROTOCOLS
    assert augment.POLICIES is POLICIES and all(p in view_options.AUGMENT_HELP for p in POLICIES)


def test_every_flow_convention_has_its_meaning():
    """--time-convention's choices are the keys of the table that says what each means."""
    assert set(noise.FLOW_CONVENTIONS) == set(model_options.TIME_CONVENTIONS)


def test_help_does_not_import_torch():
    import subprocess
    import sys
    code = "import sys; from icrcli.cli.main import app; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
