"""`icr score`: stream a feature file, accumulate view moments, solve the eigenproblem, report ICR."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from icrcli import __version__
from icrcli.stats import diagnostics
from icrcli.stats import eigensolve
from icrcli.errors import UserError
from icrcli.features.featurefile import FeatureSource, layer_dataset, open_features
from icrcli.stats.jackknife import jackknife
from icrcli.stats.moments import ViewMoments, empty, from_block, merge, merge_all, work_buffer
from icrcli.stats.options import ScoreOptions  # noqa: F401  (re-exported)
from icrcli.stats.result import NOT_RESULT_OPTIONS, build_result
from icrcli.stats.statistics import JACKKNIFED, compute, interval_of, replicate

# Dense D x D statistics: past this the covariances alone outgrow a workstation's memory.
MAX_DIM = 32768


@dataclass
class Accumulated:
    groups: list[ViewMoments]
    total: ViewMoments
    n_skipped: int


def check_source(src: FeatureSource, opts: ScoreOptions) -> None:
    n, k, d = src.shape
    if not src.complete and not opts.allow_partial:
        raise UserError(
            f"{src.path} is marked incomplete ({src.attrs.get('rows_done', '?')} of "
            f"{src.attrs.get('n_images', '?')} images written): its extraction was interrupted. Re-run the same "
            "`icr extract` command to finish it, or pass --allow-partial to score the rows written so far.")
    if k < 2:
        raise UserError(f"{src.path} has K = {k} view per image; ICR needs at least two views per image "
                        "(extract with --views 2 or more).")
    if n < 2:
        raise UserError(f"{src.path} has N = {n} image(s); ICR needs at least two images.")
    if d < 1:
        raise UserError(f"{src.path} has D = 0 features per view; nothing to score.")
    if d > MAX_DIM:
        raise UserError(f"{src.path} has D = {d} features per view; dense D x D covariances would need "
                        f"{2 * d * d * 8 / 2**30:.0f} GiB. Pool the features (icr extract --pool mean).")
    if opts.ci and _jackknife_bytes(d, opts.ci_groups) > _physical_memory() / 2:
        raise UserError(f"--ci with {opts.ci_groups} groups at D = {d} keeps about "
                        f"{_jackknife_bytes(d, opts.ci_groups) / 2**30:.1f} GiB of D x D statistics, more than half "
                        "of this machine's memory. Lower --ci-groups (10 still gives a usable interval), or pool the "
                        "features to fewer dimensions.")
    if opts.ci and n < 2 * opts.ci_groups:
        raise UserError(f"--ci with {opts.ci_groups} groups needs at least {2 * opts.ci_groups} images, "
                        f"the file has {n}. Lower --ci-groups.")


def _jackknife_bytes(d: int, groups: int) -> int:
    """Per-group moments plus the prefix/suffix merges of the jackknife: about 3G + 2 pairs of D x D float64."""
    return (3 * groups + 2) * 2 * d * d * 8


def _physical_memory() -> float:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return float("inf")


def accumulate(src: FeatureSource, opts: ScoreOptions, progress: Callable[[int], None] | None = None,
               rows: np.ndarray | None = None, at_least: int = 2) -> Accumulated:
    """One streaming pass: per-group moments (one group unless --ci), merged in a fixed order. Image i goes to
    group i mod G, i its row in the file, or rows[i] where the file holds some rows of a larger whole (a shard:
    the groups are then the whole's, and the shards' groups merge into them)."""
    _, k, d = src.shape
    g = opts.ci_groups if opts.ci else 1
    groups = [empty(k, d) for _ in range(g)]
    skipped = 0
    work = work_buffer(k, d)  # float64 contrasts, reused per block
    try:
        for a, block in src.iter_blocks(opts.block_images):
            where = np.arange(a, a + len(block)) if rows is None else rows[a:a + len(block)]
            skipped += _add_block(groups, where, block, src, opts, work)
            if progress:
                progress(len(block))
    except OSError as e:  # a damaged HDF5 chunk (truncation is caught when the file is opened)
        raise UserError(f"{src.path}: reading the features failed ({e}): the file is damaged. Copy it again, or "
                        "re-run the `icr extract` that wrote it.") from None
    total = merge_all(groups)
    if total.n < at_least:
        raise UserError(f"{src.path}: fewer than two images left after skipping {skipped} with NaN/Inf values.")
    return Accumulated(groups, total, skipped)


def _add_block(groups: list[ViewMoments], where: np.ndarray, block: np.ndarray, src: FeatureSource,
               opts: ScoreOptions, work: np.ndarray) -> int:
    """Merge block (b, K, D), whose images are `where` (b,), into the groups (image i goes to group i mod G).
    Returns how many images were skipped for NaN/Inf."""
    g, skipped = len(groups), 0
    consecutive = len(where) < 2 or where[-1] - where[0] == len(where) - 1
    for j in range(g):
        if consecutive:
            pick = slice((j - int(where[0])) % g, None, g) if len(where) else slice(0, 0)  # a view, no copy
        else:
            pick = np.flatnonzero(where % g == j)
        part = block[pick]
        if not len(part):
            continue
        with np.errstate(invalid="ignore", over="ignore"):
            m = from_block(part, work)
        # NaN/Inf anywhere in an image reaches its mean over views: check the small (n, D) summary.
        if not (np.isfinite(m.mean_s).all() and np.isfinite(m.w_xi).all()):
            part, bad = _drop_nonfinite(part, where[pick], src, opts)
            skipped += bad
            if not len(part):
                continue
            m = from_block(part, work)
        groups[j] = merge(groups[j], m)
    return skipped


def _drop_nonfinite(part: np.ndarray, images: np.ndarray, src: FeatureSource,
                    opts: ScoreOptions) -> tuple[np.ndarray, int]:
    good = np.isfinite(part).all(axis=(1, 2))
    if not opts.skip_nonfinite:
        bad = int(images[int(np.argmin(good))])
        raise UserError(f"{src.path}: image {bad} (row {bad} of the feature array) has NaN or Inf features. "
                        "Check the extraction (e.g. float16 overflow: extract with --dtype float32), or pass "
                        "--skip-nonfinite to leave such images out.")
    return part[good], int((~good).sum())


def statistics(m: ViewMoments, opts: ScoreOptions, vectors: bool = False) -> tuple[dict, eigensolve.Spectrum]:
    """ICR, spectrum and companion statistics of accumulated moments (every row of stats.statistics.TABLE), and
    the plain-language warnings."""
    stats, p = compute(m, opts, vectors)
    stats["warnings"] = diagnostics.condition_warnings(p.condition, m.dim, m.n, m.n_views, p.ridge[0])
    return stats, p.spectrum


def check_views_differ(m: ViewMoments, src: FeatureSource | None, where: str = "", attrs: dict | None = None) -> None:
    """All-zero W: every view of every image is the same, so there is no residual to compare against."""
    if np.any(m.w_xi):
        return
    where, attrs = (str(src.path), src.attrs) if src is not None else (where, attrs or {})
    how = ""
    if "sigma" in attrs or "augment" in attrs:
        how = f" (this file: sigma = {attrs.get('sigma', '?')}, augment = {attrs.get('augment', '?')})"
    raise UserError(f"{where}: every view of each image is identical{how}, so the views carry no nuisance: "
                    "Sigma_xi is zero and ICR is undefined. Extract views that differ: noise (--sigma > 0), an "
                    "augmentation (--augment paper), or both.")


def score_source(src: FeatureSource, opts: ScoreOptions,
                 progress: Callable[[int], None] | None = None) -> tuple[dict, np.ndarray | None]:
    """The JSON-ready result for one (N, K, D) source, and the top Fisher directions (top, D) if asked."""
    check_source(src, opts)
    acc = accumulate(src, opts, progress)
    check_views_differ(acc.total, src)
    return result_of(acc, opts, source=source_of(src), provenance=provenance_of(src))


def source_of(src: FeatureSource) -> dict:
    return {"path": str(src.path), "dataset": src.dataset, "shape": list(src.shape), "dtype": str(src.dtype),
            "complete": src.complete}


def provenance_of(src: FeatureSource) -> dict:
    return {**src.attrs, "layer": src.layer_attrs} if (src.attrs or src.layer_attrs) else {}


def result_of(acc: Accumulated, opts: ScoreOptions, source: dict, provenance: dict) -> tuple[dict, np.ndarray | None]:
    """The JSON-ready result of accumulated moments (one file's, or merged from shards or statistics files), and
    the top Fisher directions (top, D) if asked."""
    stats, spec = statistics(acc.total, opts, vectors=opts.top > 0)
    interval = None
    if opts.ci:
        jack = jackknife(acc.groups, lambda m: replicate(m, opts),
                         {s.name: stats[s.name] for s in JACKKNIFED}, opts.confidence)
        interval = interval_of(jack, len(acc.groups), opts.confidence)
    result = build_result(
        stats, warnings=stats["warnings"], n_skipped=acc.n_skipped, interval=interval, source=source,
        provenance=provenance,
        options={k: v for k, v in asdict(opts).items() if k not in NOT_RESULT_OPTIONS},
        version=__version__)
    directions = spec.directions[:, : opts.top].T.copy() if opts.top > 0 else None
    return result, directions


def score_moments(groups: list[ViewMoments], opts: ScoreOptions):
    """The ScoreResult of moments accumulated in memory (icrcli.Accumulator)."""
    from icrcli.stats.result import ScoreResult
    total = merge_all(groups)
    if total.n < 2:
        raise UserError(f"{total.n} image(s) accumulated; ICR needs at least two images.")
    if opts.ci and total.n < 2 * opts.ci_groups:
        raise UserError(f"ci with {opts.ci_groups} groups needs at least {2 * opts.ci_groups} images, "
                        f"{total.n} were accumulated. Lower ci_groups.")
    if not np.any(total.w_xi):
        raise UserError("every view of each image is identical, so Sigma_xi is zero and ICR is undefined: draw "
                        "views that differ (noise, an augmentation, or both).")
    result, _ = result_of(Accumulated(groups, total, 0), opts,
                          source={"path": "<accumulator>", "dataset": None, "shape": [total.n, total.n_views, total.dim],
                                  "dtype": "float64", "complete": True}, provenance={})
    return ScoreResult({**result, "cached": False, "cache_entry": None})


def open_source(path: str | Path, dataset: str | None = None, layer: str | None = None,
                follow_external: bool = False) -> FeatureSource:
    if dataset and layer:
        raise UserError("Give either --dataset or --layer, not both.")
    return open_features(path, layer_dataset(layer) if layer else dataset, follow_external)


def score_file(path: str | Path, dataset: str | None = None, layer: str | None = None,
               opts: ScoreOptions | None = None, progress: Callable[[int], None] | None = None,
               use_cache: bool = True, warn: Callable[[str], None] | None = None, follow_external: bool = False):
    """Python entry point: `score_file("feats.h5")[0]["icr"]`. Returns (result dict, directions or None).

    Answered from the score cache (icrcli.stats.scorecache: keyed by the file's content and opts) unless
    use_cache is False or directions are asked for (opts.top > 0: computed, never cached). result["cached"] says
    which. follow_external: read what an HDF5 file points to in other files (refused otherwise)."""
    from icrcli.stats.scorecache import cached_score
    opts = opts or ScoreOptions()
    return cached_score(path, dataset, layer, opts,
                        lambda: score_source(open_source(path, dataset, layer, follow_external), opts, progress),
                        use_cache, warn, follow_external)
