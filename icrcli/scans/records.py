"""Scan records in the cache: a finished sweep, or one timeline point, stored as JSON under a key made from the
content hashes of its inputs and every option that shapes it. Found again without loading a network (nor
importing torch), so a repeated scan answers at once; a corrupt entry is reported once and recomputed."""

from __future__ import annotations

from pathlib import Path

from icrcli import __version__, cache, fields
from icrcli.errors import UserError
from icrcli.models.archsource import arch_source_sha256, is_user_arch
from icrcli.models.options import sidecar_candidates

SCHEMA = 1
# What a scan record holds beyond its schema: 2 since every level carries jackknife replicates and the ties with
# the minimum, and probes follow the paper's protocol (issue 18). Keyed, so a record made before answers no
# request made after. 3 since each record's score has intervals for trace_s, trace_xi and effective_rank (issue 17;
# stats.result.CONTENTS).
CONTENTS = 3
# Which options are part of a key is declared on each option's field (icrcli.fields: `keyed`); the run options
# (batch size, device) and the name of the --indices file never are.


def sidecar_hashes(checkpoint: Path) -> dict:
    """The content of the sidecars that could shape how the checkpoint is read (CKPT.icr.json, icr.json)."""
    out = {}
    for cand in sidecar_candidates(checkpoint):
        if cand.is_file():
            out[cand.name] = cache.file_sha256(cand)
    return out


def checkpoint_identity(checkpoint: Path, mopts) -> dict:
    """What identifies a network: its bytes, its sidecars', its VAE's, your own architecture's source (--arch
    file.py:Class or module:build, icrcli.models.archsource), and how it is to be read."""
    if not checkpoint.exists():
        from icrcli.models.registry import checkpoint_formats
        raise UserError(f"{checkpoint}: no such checkpoint. Pass {checkpoint_formats()}.")
    m = fields.keyed(mopts)
    vae = m.get("vae")
    out = {"checkpoint_sha256": cache.content_sha256(checkpoint), "sidecars": sidecar_hashes(checkpoint),
           "vae_sha256": cache.content_sha256(Path(vae)) if vae else None, "model_options": m}
    if is_user_arch(mopts.arch):    # only then: every other record keeps its key
        out["arch_source_sha256"] = arch_source_sha256(mopts.arch)
    return out


def data_identity(data: Path) -> str:
    """The content hash of a data set's bytes: its file's (memoised by the hash memo, so free on a repeat), or
    every file's in its folder; an IDX images file with its idx1 labels file beside it (the labels a probe reads).
    Opens nothing: that is load_data's work, once, when something is computed."""
    if not data.exists():
        raise UserError(f"{data}: no such data. Pass a folder of images, a .zip/.tar, .npy/.npz, CIFAR or MNIST "
                        "files.")
    from icrcli.data.labelfiles import label_file
    labels = label_file(data) if data.is_file() else None
    if labels is not None:
        return cache.tree_sha256([data, labels], data.parent)
    return cache.content_sha256(data)


def record_key(kind: str, parts: dict) -> str:
    return cache.config_key({"kind": kind, "schema": SCHEMA, "contents": CONTENTS, "version": __version__, **parts})


def load(kind: str, key: str, warn=None) -> dict | None:
    """The cached record, or None; a damaged one is said once through `warn` and removed, to be recomputed."""
    rec, note = cache.read_entry(kind, key, lambda v: isinstance(v, dict) and v.get("schema") == SCHEMA)
    if note is not None and warn is not None:
        warn(note)
    return rec


def save(kind: str, key: str, record: dict) -> None:
    cache.write_entry(kind, key, record)


def entry_path(kind: str, key: str) -> Path:
    return cache.entry_path(kind, key)


def from_cache(record: dict, entry: str) -> dict:
    """A record (a sweep, a level, a point) as answered from the cache entry `entry`: it says so."""
    return {**record, "cached": True, "cache_entry": entry}
