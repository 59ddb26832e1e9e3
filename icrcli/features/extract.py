"""`icr extract` as a library: run plans (icrcli.features.plan) into feature files.

Resumable and shared: rows are computed in chunks of whole images; a process claims a chunk, computes it
and saves it in `OUT.parts/` (icrcli.features.chunks), so any number of processes can fill one extraction
and a killed one (kill -9 included) loses only the chunks it was computing. The process that finds every
chunk finished assembles the feature file in one pass, in row order, so it is byte-identical to an
uninterrupted single-process run's. On Ctrl-C the finished prefix of chunks is assembled as a partial file
(complete = false) and the chunks are kept: the same command resumes.

`extract_levels` runs plans that differ in sigma, layers or augmentation in one pass over the data: each chunk
is decoded once, augmented (and VAE-encoded) once per augmentation, then noised and run once per (augmentation,
sigma) with every layer tapped there; each plan's file is byte-identical to extracting that plan alone.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from icrcli import __version__, cache, dist
from icrcli.errors import UserError
from icrcli.features.chunks import ChunkStore
from icrcli.features.compute import compute_levels, prepare_rows
from icrcli.features.featurefile import write_feature_file
from icrcli.features.plan import DTYPES, NOISE_RNG, Plan, RunOptions, same_views  # noqa: F401  (re-exported)
from icrcli.features.prefetch import prefetch
from icrcli.progress import SILENT, Reporter
from icrcli.models.taps import LARGE_DIM

_POLL_S = 0.5   # while other processes finish their last chunks, look again this often


def output_path(p: Plan, output: str | Path | None = None) -> Path:
    """Where the features of p go: `output` (-o) if given, else p's entry in the content-addressed cache."""
    return Path(output) if output else cache.cached_path(p.key)


def parts_path(out: Path) -> Path:
    """The folder of finished chunks next to an output."""
    return out.with_name(out.name + ".parts")


def extract(p: Plan, out: str | Path, run: RunOptions | None = None, reporter: Reporter = SILENT,
            ranks: bool = False) -> dict:
    """Extract p into `out` (resuming, or joining other processes, if possible). Returns the JSON summary.
    ranks: every rank of a torchrun job calls this with the same plan and output (see extract_levels)."""
    return extract_levels([p], [out], run, reporter, ranks)[0]


@dataclass
class _Level:
    plan: Plan
    out: Path
    store: ChunkStore
    summary: dict | None = None
    computed: list = field(default_factory=list)


def extract_levels(plans: list[Plan], outs: list[str | Path], run: RunOptions | None = None,
                   reporter: Reporter = SILENT, ranks: bool = False) -> list[dict]:
    """Extract plans that differ in sigma, layers or augmentation (same loaded model and data, same request
    otherwise: plan.same_views) into their outputs, in one pass over the data. Each level is cached, resumed and
    shared between processes on its own. Returns one summary per plan, in order.

    ranks: every rank of a torchrun job calls this with the same plans and outputs (on a file system they all
    see). Rank r computes the chunks r, r+W, ... first (then helps with any left free), rank 0 alone shows the
    whole job's progress and assembles the files, the others wait for it."""
    if len(plans) != len(outs) or not plans:
        raise ValueError("extract_levels: one output per plan, at least one plan")
    same_views(plans)
    run = run or RunOptions()
    t0 = time.perf_counter()
    levels = [_Level(p, Path(o), ChunkStore(parts_path(Path(o)), p.n_chunks)) for p, o in zip(plans, outs)]
    split = ranks and dist.world_size() > 1
    active = []
    if split and run.overwrite and dist.rank() != 0:
        # --overwrite discards what is there once: rank 0 starts the stores afresh, the others then join them.
        dist.barrier("rank 0 starts the extraction afresh (--overwrite)")
        for lv in levels:
            lv.store.open(lv.plan.config, lv.plan.key, overwrite=False)
        active = levels
    for lv in levels if not active else []:
        if _existing(lv.out, lv.plan.key, run.overwrite, reporter.warn) or not _join(lv, run, reporter):
            lv.summary = _summary(lv.plan, lv.out, cached=True, seconds=time.perf_counter() - t0)
        else:
            active.append(lv)
    if split and run.overwrite and dist.rank() == 0:
        dist.barrier("rank 0 starts the extraction afresh (--overwrite)")
    if active:
        _fill(active, run, reporter, split)
        for lv in active:
            if not split or dist.rank() == 0:
                _finish(lv)
            lv.summary = _summary(lv.plan, lv.out, cached=False, seconds=time.perf_counter() - t0)
    if split:
        dist.barrier("rank 0 assembles the feature files")
    return [lv.summary for lv in levels]


def _join(lv: _Level, run: RunOptions, reporter: Reporter) -> bool:
    """Open lv's chunk store, unless the output was finished meanwhile (then False)."""
    lv.out.parent.mkdir(parents=True, exist_ok=True)
    with cache.exclusive(lv.out, on_wait=lambda: reporter.waiting(f"another icr run is writing {lv.out}")):
        if _existing(lv.out, lv.plan.key, run.overwrite):
            return False
        lv.store.open(lv.plan.config, lv.plan.key, run.overwrite)
        lv.store.drop_unverified(list(lv.plan.layers), reporter.warn)
    return True


def _claims(active: list[_Level], split: bool = False):
    """One pass over the chunks, claiming each for the levels where it is free: yields (c, [levels]). split: this
    rank's chunks (rank, rank + W, ...) first, then the others (the chunks of a rank that is slow or died)."""
    n = active[0].plan.n_chunks
    order = range(n)
    if split:
        r, w = dist.rank(), dist.world_size()
        order = [*range(r, n, w), *(c for c in range(n) if c % w != r)]
    for c in order:
        mine = [lv for lv in active if lv.store.claim(c)]
        if mine:
            yield c, mine


def _fill(active: list[_Level], run: RunOptions, reporter: Reporter, split: bool = False) -> None:
    """Compute every chunk of every active level that no other process computes; wait for those that do
    (and take over the chunks of any that die). split: see extract_levels."""
    p0 = active[0].plan
    n = len(p0.indices)

    def finished_rows() -> int:
        return sum(len(p0.chunk_rows(c)) for lv in active if lv.store.alive() for c in lv.store.finished())

    done = finished_rows()
    if done:
        reporter.resumed(done, n * len(active))
    labels = p0.data.labels
    warned = waited = False
    shown = [done]                  # rows the bar shows: ours as computed, other ranks' as their chunks land

    def advance(k: int) -> None:
        shown[0] += k
        reporter.advance(k)

    looked = [0.0]

    def others() -> None:           # the whole job's progress on rank 0's bar (looked up at most once a second)
        if split and time.monotonic() - looked[0] >= 1.0:
            looked[0] = time.monotonic()
            if (extra := finished_rows() - shown[0]) > 0:
                advance(extra)

    reporter.start("extracting", n * len(active), done)
    try:
        while True:
            def load(item):     # decoded once; augmentation parameters for the levels that claimed the chunk
                return prepare_rows(p0, p0.chunk_rows(item[0]), [lv.plan.request.augment for lv in item[1]])
            for (c, mine), prepared in prefetch(_claims(active, split), load):
                feats = compute_levels([lv.plan for lv in mine], prepared, run.batch_size, advance)
                if not warned:
                    _warn_large(feats[0], reporter)
                    warned = True
                index = p0.indices[prepared.rows]
                lab = labels[index] if labels is not None else None
                for lv, f in zip(mine, feats):
                    lv.store.write(c, f, index, lab)
                    lv.computed.append(c)
                others()
            if all(lv.store.complete() or not lv.store.alive() for lv in active):
                return
            if not waited and not split:
                reporter.waiting("waiting for other icr runs to finish their chunks ...")
            waited = True
            time.sleep(_POLL_S)
            others()
    except KeyboardInterrupt:
        reporter.finish()
        for lv in active:
            lv.store.release_all()
            _keep_partial(lv, reporter)
        raise
    finally:
        for lv in active:
            lv.store.release_all()
        reporter.finish()


def _keep_partial(lv: _Level, reporter: Reporter) -> None:
    """After Ctrl-C: the finished prefix as a partial feature file, and a word on how to resume."""
    p = lv.plan
    prefix = lv.store.prefix() if lv.store.alive() else []
    rows = sum(len(p.chunk_rows(c)) for c in prefix)
    written = False
    if prefix and not _existing(lv.out, p.key, False):
        try:
            with cache.exclusive(lv.out, timeout=5):
                if not _existing(lv.out, p.key, False):
                    _assemble(p, lv.out, lv.store, prefix)
                    written = True
        except UserError:
            pass  # another process is writing the file; the chunks are kept all the same
    done = sum(len(p.chunk_rows(c)) for c in lv.store.finished()) if lv.store.alive() else len(p.indices)
    where = f"the first {rows} rows are in {lv.out} (complete = false), " if written else ""
    reporter.interrupted(f"sigma={p.sigma:g}: {done} of {len(p.indices)} images done; {where}finished chunks are "
                         f"kept in {lv.store.parts}. Run the same command again to resume.")


def _finish(lv: _Level) -> None:
    """The last process to find every chunk done assembles the file and removes the chunks and the lock."""
    p = lv.plan
    with cache.exclusive(lv.out):
        if lv.store.alive() and lv.store.complete():
            _assemble(p, lv.out, lv.store, list(range(p.n_chunks)))
            lv.store.remove()
        elif not _existing(lv.out, p.key, False):
            raise UserError(f"{lv.store.parts} was removed before {lv.out} was complete (another icr run with "
                            "--overwrite?). Run the same command again.")
        Path(f"{lv.out}.lock").unlink(missing_ok=True)


def in_cache(out: Path, key: str) -> bool:
    """Whether `out` is the cache's entry for `key` (sealed with an authentication code, icrcli.seal), not a -o."""
    return out.resolve() == cache.cached_path(key).resolve()


def _existing(out: Path, key: str, overwrite: bool, warn=None) -> bool:
    """True if `out` is already the finished result of this exact request. A cache entry whose authentication code
    does not verify is said through `warn`, removed, and made again (False)."""
    if not out.exists() or overwrite:
        return False
    try:
        import h5py
        with h5py.File(out, "r") as f:
            same = f.attrs.get("config_key") == key
            complete = bool(f.attrs.get("complete", False))
    except OSError:
        raise UserError(f"{out} exists and is not a readable feature file. Choose another -o, or pass "
                        "--overwrite to replace it.") from None
    if same and complete:
        if in_cache(out, key) and (note := cache.check_file(out, key)) is not None:
            if warn is not None:
                warn(note)
            return False
        return True
    if same:
        return False  # an interrupted run of this request: resume
    raise UserError(f"{out} exists and holds features from a different configuration; icr never mixes them. "
                    "Choose another -o, or pass --overwrite to replace it.")


def _warn_large(feats: dict, reporter: Reporter) -> None:
    for name, f in feats.items():
        d = f.shape[-1]
        if d > LARGE_DIM:
            reporter.warn(f"layer {name} gives D = {d} features per view: `icr score` needs two {d}x{d} float64 "
                          f"matrices ({2 * d * d * 8 / 2**30:.1f} GiB) and a D^3 eigensolve. Consider --pool mean.")


def _assemble(p: Plan, out: Path, store: ChunkStore, finished: list[int]) -> None:
    """Write the feature file from the finished chunks (all of them: complete; a prefix: marked incomplete)."""
    if not finished:
        return
    layers = list(p.layers)
    first = store.read(finished[0], layers)
    dims = {name: v.shape[-1] for name, v in first["features"].items()}
    r = p.request
    attrs = {
        "config_key": p.key, "config": p.config, "sigma": p.sigma, "seed": r.seed,
        "augment": r.augment, "layers": layers, "pool": r.pool,
        "checkpoint_sha256": p.config["checkpoint_sha256"], "data_sha256": p.config["data_sha256"],
        "checkpoint": p.denoiser.description.get("checkpoint", ""), "data": str(p.images.path),
        "arch": p.config["arch"] or "", "compute_dtype": r.dtype, **p.record(),
    }

    def gen():
        for c in finished:
            part = first if c == finished[0] else store.read(c, layers)
            yield {"start": c * r.chunk_images, **part}

    try:
        with cache.atomic_write(out) as tmp:
            write_feature_file(tmp, dims, len(p.indices), r.views, "float32", attrs, gen(), r.chunk_images)
            if in_cache(out, p.key):
                cache.seal_file(tmp, out, p.key)
    except OSError as e:
        raise UserError(f"Writing {out} failed ({e.strerror or e}): is the disk full? Every computed chunk is kept "
                        f"in {store.parts}; free some space and run the same command again to finish.") from None


def _summary(p: Plan, out: Path, cached: bool, seconds: float) -> dict:
    return {"features": str(out), "cached": cached, "config_key": p.key, "n_images": len(p.indices),
            "n_views": p.request.views, "layers": list(p.layers), "sigma": p.sigma,
            "images_requested": p.request.images, "data_images": len(p.data),
            "seconds": round(seconds, 3), "version": __version__}
