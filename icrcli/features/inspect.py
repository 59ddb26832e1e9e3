"""`icr info`: what a feature file holds, for people and for scripts."""

from __future__ import annotations

from pathlib import Path

from icrcli.errors import UserError
from icrcli.features.featurefile import FEATURES_GROUP, FORMAT_NAME, _h5_candidates, open_features, open_hdf5


def describe(path: str | Path) -> dict:
    path = Path(path)
    if path.suffix == ".npy":
        src = open_features(path)
        return {"path": str(path), "kind": "npy", "datasets": {"<array>": _ds(src)}, "complete": True,
                "provenance": {}}
    import h5py
    if not path.exists() or not h5py.is_hdf5(path):
        open_features(path)  # raises the standard message
    with open_hdf5(path) as f:
        names = _h5_candidates(f)
    if not names:
        raise UserError(f"{path} holds no rank-3 (N, K, D) dataset.")
    datasets = {}
    for name in names:
        src = open_features(path, name)
        datasets[name] = _ds(src)
    layers = [n[len(FEATURES_GROUP) + 1:] for n in names if n.startswith(FEATURES_GROUP + "/")]
    return {"path": str(path), "kind": FORMAT_NAME if src.attrs.get("format") == FORMAT_NAME else "hdf5",
            "layers": layers, "datasets": datasets, "complete": src.complete,
            "rows_done": src.attrs.get("rows_done"), "provenance": src.attrs}


def _ds(src) -> dict:
    n, k, d = src.shape
    return {"n_images": n, "n_views": k, "dim": d, "dtype": str(src.dtype), "attrs": src.layer_attrs}


def render(info: dict) -> str:
    lines = [f"{info['path']}  ({info['kind']}, {'complete' if info['complete'] else 'INCOMPLETE'})"]
    for name, d in info["datasets"].items():
        lines.append(f"  {name}: N={d['n_images']} images x K={d['n_views']} views x D={d['dim']} ({d['dtype']})")
    prov = info.get("provenance") or {}
    for k in sorted(prov):
        if k != "config":
            lines.append(f"  {k}: {prov[k]}")
    return "\n".join(lines)
