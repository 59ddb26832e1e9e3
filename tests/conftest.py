import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests/reference.py and friends

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


class Ran:
    def __init__(self, code, out, err):
        self.code, self.out, self.err = code, out, err

    @property
    def json(self):
        return json.loads(self.out)


@pytest.fixture
def icr(capsys, monkeypatch):
    """Run the real console entry point in-process: icr("score", "f.h5") -> Ran(code, stdout, stderr)."""
    from icrcli.cli.main import main

    def run(*args):
        monkeypatch.setattr(sys, "argv", ["icr", *map(str, args)])
        capsys.readouterr()
        try:
            main()
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        out, err = capsys.readouterr()
        return Ran(code, out, err)

    return run
