"""The CLI spells its choices out (so --help needs no torch); they must equal what the modules accept."""

from icrcli.data import augment
from icrcli.cli import options as cli
from icrcli.stats import estimators
from icrcli.features import extract
from icrcli.models import noise
from icrcli.models import taps


def _values(enum) -> set[str]:
    return {m.value for m in enum}


def test_cli_choices_match_the_modules():
    assert _values(cli.Estimator) == set(estimators.ESTIMATORS)
    assert _values(cli.Param) == set(noise.PARAMS)
    assert set(cli.AUGMENT_POLICIES.split()) == set(augment.POLICIES)  # --augment is POLICY[:strengths]
    assert all(p in cli.AUGMENT_HELP for p in augment.POLICIES)
    assert _values(cli.Pool) == set(taps.POOLS)
    assert _values(cli.DType) == set(extract.DTYPES)
    assert _values(cli.TimeConvention) == set(noise.FLOW_CONVENTIONS)
    from icrcli.scans.probe import PROTOCOLS
    assert _values(cli.ProbeProtocol) == set(PROTOCOLS)


def test_help_does_not_import_torch():
    import subprocess
    import sys
    code = "import sys; from icrcli.cli.main import app; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_view_option_defaults_for_programs_match_the_cli():
    """features.plan.view_options (the scans' defaults without the CLI) names the CLI's view options, with the
    CLI's defaults."""
    from icrcli.cli.options import _VIEW_GROUP, view_options as cli_view_options
    from icrcli.features.plan import view_options
    cli = cli_view_options(**{name: default for name, _, default in _VIEW_GROUP})  # as the command hands them on
    cli.pop("indices_file")
    assert view_options() == cli
