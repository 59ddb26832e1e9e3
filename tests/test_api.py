"""The Python API (icrcli.score, icrcli.Accumulator, ScoreOptions, ScoreResult) as a notebook would call it,
against the CLI's JSON and a dense float64 reference."""

import numpy as np
import pytest

import icrcli
import reference


def _strip(d):
    """What legitimately differs between an array and a file of the same numbers: where they came from."""
    return {k: v for k, v in d.items() if k not in ("input", "cache_entry")}


@pytest.fixture
def h():
    return reference.views(np.random.default_rng(3), n=240, k=3, d=10).astype(np.float32)


def test_score_of_an_array_is_the_clis_json(icr, tmp_path, h):
    np.save(tmp_path / "h.npy", h)
    ran = icr("score", tmp_path / "h.npy", "--ci", "-o", "-")
    assert ran.code == 0, ran.err
    r = icrcli.score(h, ci=True)
    assert _strip(r.to_dict()) == _strip(ran.json)
    assert r.icr == pytest.approx(reference.icr(h.astype(np.float64))[0], rel=1e-9)
    assert r.icr_ci[0] < r.icr < r.icr_ci[1]
    assert r.eigenvalues.shape == (10,) and np.all(np.diff(r.eigenvalues) <= 0)


def test_score_of_a_file_and_of_a_torch_tensor(tmp_path, h):
    torch = pytest.importorskip("torch")
    np.save(tmp_path / "h.npy", h)
    by_file = icrcli.score(tmp_path / "h.npy")
    by_tensor = icrcli.score(torch.from_numpy(h))
    assert by_tensor.icr == pytest.approx(by_file.icr, rel=1e-12)
    assert by_tensor.to_dict()["input"]["path"] == "<array>"
    assert by_tensor.cached is False and by_file.cached is False
    assert icrcli.score(tmp_path / "h.npy").cached is True     # a file is answered from the cache, and says so
    # bfloat16 tensors are widened exactly, not refused
    bf = torch.from_numpy(h).to(torch.bfloat16)
    assert icrcli.score(bf).icr == pytest.approx(reference.icr(bf.float().numpy().astype(np.float64))[0], rel=1e-9)


@pytest.mark.parametrize("ci", [False, True])
@pytest.mark.parametrize("kind", ["numpy", "torch64", "torch32"])
def test_accumulator_equals_score_of_the_concatenation(h, ci, kind):
    torch = pytest.importorskip("torch")
    acc = icrcli.Accumulator(10, ci=ci, ci_groups=7)
    for a in range(0, len(h), 37):       # batches that do not divide N or the group count
        b = h[a:a + 37]
        acc.update(b if kind == "numpy" else torch.from_numpy(b).to(
            torch.float64 if kind == "torch64" else torch.float32))
    whole = icrcli.score(h, ci=ci, ci_groups=7)
    got = acc.result()
    assert got.icr == pytest.approx(whole.icr, rel=1e-9)
    np.testing.assert_allclose(got.eigenvalues, whole.eigenvalues, rtol=1e-9, atol=1e-12)
    if ci:
        np.testing.assert_allclose(got.icr_ci, whole.icr_ci, rtol=1e-9)
    assert got.n_images == len(h)


def test_accumulator_merge_is_the_concatenation(h):
    first = icrcli.Accumulator(10, ci=True, ci_groups=5).update(h[:101])
    second = icrcli.Accumulator(10, ci=True, ci_groups=5).update(h[101:170]).update(h[170:])
    merged = first.merge(second).result()
    whole = icrcli.score(h, ci=True, ci_groups=5)
    assert merged.icr == pytest.approx(whole.icr, rel=1e-9)
    np.testing.assert_allclose(merged.icr_ci, whole.icr_ci, rtol=1e-9)


def test_accumulator_is_invariant_to_batch_order_without_ci(h):
    fwd = icrcli.Accumulator(10)
    rev = icrcli.Accumulator(10)
    for a in range(0, len(h), 50):
        fwd.update(h[a:a + 50])
    for a in reversed(range(0, len(h), 50)):
        rev.update(h[a:a + 50])
    assert fwd.result().icr == pytest.approx(rev.result().icr, rel=1e-12)


@pytest.mark.parametrize("kwargs, words", [
    (dict(ci=True, ci_groups=1), "at least 2 groups"),
    (dict(confidence=1.5), "coverage must lie in"),
    (dict(tau_rel=-1), "ridge must be a finite number >= 0"),
    (dict(tau=float("nan")), "ridge must be a finite number >= 0"),
    (dict(estimator="mle"), "not one of paper, plugin"),
    (dict(block_images=0), "whole number >= 1"),
])
def test_options_are_checked_with_the_clis_sentences(kwargs, words):
    with pytest.raises(ValueError, match=words) as e:
        icrcli.ScoreOptions(**kwargs)
    from icrcli.errors import UserError
    assert isinstance(e.value, UserError)    # so the CLI turns it into exit 2


def test_accumulator_refuses_what_score_would(h):
    acc = icrcli.Accumulator(10)
    with pytest.raises(ValueError, match="no images yet"):
        acc.result()
    with pytest.raises(Exception, match="D = 9"):
        acc.update(h[:, :, :9])
    bad = h[:5].copy()
    bad[2, 1, 3] = np.nan
    with pytest.raises(Exception, match="NaN or Inf"):
        acc.update(bad)
    with pytest.raises(Exception, match="identical"):
        icrcli.Accumulator(10).update(np.repeat(h[:, :1], 2, axis=1)).result()


def test_result_round_trips_and_reads_typed(h):
    r = icrcli.score(h)
    again = icrcli.ScoreResult.from_dict(r.to_dict())
    assert again.to_dict() == r.to_dict()
    assert isinstance(r.icr, float) and isinstance(r.dim, int) and r.icr_ci is None
    assert r.trace_s == pytest.approx(r["trace_s"])
    with pytest.raises(ValueError):
        icrcli.ScoreResult.from_dict({"sweep": []})


def test_importing_icrcli_stays_light():
    import subprocess
    import sys
    code = "import sys, icrcli; print('numpy' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]
