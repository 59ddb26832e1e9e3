"""icrcli.data.images: every source format round-trips pixels and labels exactly; errors name the file."""

import gzip
import json
import pickle
import struct
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from icrcli.errors import UserError
from icrcli.data.images import labels_from_dirs, open_images, subset_indices, to_channels

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, size=(6, 8, 10, 3), dtype=np.uint8)  # NHWC, H=8, W=10 (non-square on purpose)
GREY = RNG.integers(0, 256, size=(4, 7, 7), dtype=np.uint8)
CLASSES = ["zebra", "ant", "ant", "moth", "zebra", "moth"]  # sorted names -> ant 0, moth 1, zebra 2
EXPECTED_LABELS = np.array([["ant", "moth", "zebra"].index(c) for c in CLASSES])


def _png_bytes(a: np.ndarray) -> bytes:
    buf = __import__("io").BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def _class_files() -> dict[str, bytes]:
    """Archive names -> PNG bytes, under a common top folder like the CIFAR tar (test/<class>/NNNN)."""
    return {f"split/{c}/{i:04d}.png": _png_bytes(RGB[i]) for i, c in enumerate(CLASSES)}


def _sorted_order():
    """Position of each RGB image in the set: entries are sorted by path."""
    names = list(_class_files())
    return [names.index(n) for n in sorted(names)]


def _check_class_set(s):
    order = _sorted_order()
    assert (len(s), s.channels, s.height, s.width) == (6, 3, 8, 10)
    np.testing.assert_array_equal(s.get(range(6)), RGB[order].transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(s.labels, EXPECTED_LABELS[order])
    assert s.class_names == ["ant", "moth", "zebra"]
    assert s.get([0]).dtype == np.uint8


def test_folder_with_class_subfolders(tmp_path):
    for name, data in _class_files().items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)
    (tmp_path / "split" / "notes.txt").write_text("not an image")
    s = open_images(tmp_path)
    _check_class_set(s)
    assert all(p.suffix == ".png" for p in s.source_files()) and len(s.source_files()) == 6
    assert "6 images" in s.describe() and "3 classes" in s.describe()


def test_zip_and_tar_and_targz_match_the_folder(tmp_path):
    files = _class_files()
    with zipfile.ZipFile(tmp_path / "d.zip", "w") as z:
        for n, b in files.items():
            z.writestr(n, b)
    for mode, name in (("w", "d.tar"), ("w:gz", "d.tar.gz")):
        with tarfile.open(tmp_path / name, mode) as t:
            for n, b in files.items():
                info = tarfile.TarInfo(n)
                info.size = len(b)
                t.addfile(info, __import__("io").BytesIO(b))
    for name in ("d.zip", "d.tar", "d.tar.gz"):
        s = open_images(tmp_path / name)
        _check_class_set(s)
        assert s.source_files() == [tmp_path / name]
        # reversed and repeated indices come back in the order asked
        np.testing.assert_array_equal(s.get([5, 0, 5]), s.get(range(6))[[5, 0, 5]])


def test_archive_set_survives_pickling(tmp_path):
    with zipfile.ZipFile(tmp_path / "d.zip", "w") as z:
        for n, b in _class_files().items():
            z.writestr(n, b)
    s = open_images(tmp_path / "d.zip")
    s.get([0])  # opens the handle, which must not travel
    copy = pickle.loads(pickle.dumps(s))
    np.testing.assert_array_equal(copy.get(range(6)), s.get(range(6)))


def test_grey_folder_without_classes_stays_one_channel(tmp_path):
    for i, a in enumerate(GREY):
        Image.fromarray(a).save(tmp_path / f"{i}.png")
    s = open_images(tmp_path)
    assert s.channels == 1 and s.labels is None
    np.testing.assert_array_equal(s.get(range(4))[:, 0], GREY)
    f = s.get_float([1, 2])
    assert f.dtype == np.float32 and f.min() >= 0 and f.max() <= 1
    np.testing.assert_allclose(f[:, 0] * 255, GREY[1:3], atol=1e-4)


def test_one_colour_image_among_grey_makes_the_set_colour(tmp_path):
    for i, a in enumerate(GREY[:3]):
        Image.fromarray(a).save(tmp_path / f"{i}.png")
    colour = RNG.integers(0, 256, size=(7, 7, 3), dtype=np.uint8)
    Image.fromarray(colour).save(tmp_path / "3.png")
    s = open_images(tmp_path)
    assert s.channels == 3
    np.testing.assert_array_equal(s.get([0])[0], np.stack([GREY[0]] * 3))  # grey repeated, not dropped
    np.testing.assert_array_equal(s.get([3])[0], colour.transpose(2, 0, 1))


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_npy_both_layouts_memory_mapped(tmp_path, layout):
    arr = RGB if layout == "NHWC" else RGB.transpose(0, 3, 1, 2).copy()
    np.save(tmp_path / "x.npy", arr)
    s = open_images(tmp_path / "x.npy")
    assert (len(s), s.channels, s.height, s.width) == (6, 3, 8, 10) and s.labels is None
    assert isinstance(s._array, np.memmap)
    np.testing.assert_array_equal(s.get([4, 1]), RGB[[4, 1]].transpose(0, 3, 1, 2))


def test_npy_grey_3d_and_float_ranges(tmp_path):
    np.save(tmp_path / "g.npy", GREY)
    s = open_images(tmp_path / "g.npy")
    assert s.channels == 1
    np.testing.assert_array_equal(s.get([2])[0, 0], GREY[2])
    unit = GREY.astype(np.float32) / 255
    for name, arr in (("unit", unit), ("signed", unit * 2 - 1), ("byte", GREY.astype(np.float64))):
        np.save(tmp_path / f"{name}.npy", arr)
        s = open_images(tmp_path / f"{name}.npy")
        assert s.dtype == np.float32
        np.testing.assert_allclose(s.get_float(range(4))[:, 0], unit, atol=1e-6)


def test_npz_images_and_labels(tmp_path):
    y = np.array([3, 1, 4, 1, 5, 9])
    np.savez_compressed(tmp_path / "d.npz", x=RGB, y=y)
    s = open_images(tmp_path / "d.npz")
    np.testing.assert_array_equal(s.get(range(6)), RGB.transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(s.labels, y)
    assert s.labels.dtype == np.int64
    np.savez(tmp_path / "other.npz", pictures=GREY)  # the only 3-D array is taken as the images
    assert len(open_images(tmp_path / "other.npz")) == 4


def _cifar_batch(path: Path, n: int, key: bytes = b"labels") -> tuple[np.ndarray, list[int]]:
    data = RNG.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    labels = [int(v) for v in RNG.integers(0, 10, size=n)]
    with open(path, "wb") as f:
        pickle.dump({b"batch_label": b"x", key: labels, b"data": data}, f)
    return data, labels


def test_cifar_pickle_batches(tmp_path):
    d1, l1 = _cifar_batch(tmp_path / "data_batch_1", 3)
    d2, l2 = _cifar_batch(tmp_path / "data_batch_2", 2)
    _cifar_batch(tmp_path / "test_batch", 4)
    s = open_images(tmp_path)  # a CIFAR folder means its training batches
    assert (len(s), s.channels, s.height, s.width) == (5, 3, 32, 32)
    x = s.get(range(5))
    data = np.concatenate([d1, d2])
    # CIFAR row layout: value of pixel (row i, column j) of channel c is at c*1024 + i*32 + j
    for n, c, i, j in [(0, 0, 0, 0), (1, 2, 31, 5), (4, 1, 7, 30)]:
        assert x[n, c, i, j] == data[n, c * 1024 + i * 32 + j]
    np.testing.assert_array_equal(s.labels, l1 + l2)
    t = open_images(tmp_path / "test_batch")
    assert len(t) == 4


def test_cifar100_fine_labels(tmp_path):
    _, labels = _cifar_batch(tmp_path / "train", 3, key=b"fine_labels")
    (tmp_path / "meta").write_bytes(pickle.dumps({b"fine_label_names": [b"a"]}))
    s = open_images(tmp_path)
    np.testing.assert_array_equal(s.labels, labels)


class _Evil:
    def __reduce__(self):
        return (open, ("/tmp/icr-should-not-exist", "w"))


def test_cifar_loader_runs_no_code_from_the_pickle(tmp_path):
    with open(tmp_path / "data_batch_1", "wb") as f:
        pickle.dump({b"data": _Evil(), b"labels": [0]}, f)
    with pytest.raises(UserError, match="data_batch_1.*not a CIFAR python batch"):
        open_images(tmp_path)
    assert not Path("/tmp/icr-should-not-exist").exists()


def _idx(dims: tuple, data: np.ndarray) -> bytes:
    return bytes([0, 0, 8, len(dims)]) + struct.pack(f">{len(dims)}i", *dims) + data.tobytes()


@pytest.mark.parametrize("gz", [True, False])
def test_idx_images_with_labels(tmp_path, gz):
    labels = np.array([7, 2, 1, 0], dtype=np.uint8)
    suffix = ".gz" if gz else ""
    write = gzip.compress if gz else (lambda b: b)
    (tmp_path / f"t10k-images-idx3-ubyte{suffix}").write_bytes(write(_idx((4, 7, 7), GREY)))
    (tmp_path / f"t10k-labels-idx1-ubyte{suffix}").write_bytes(write(_idx((4,), labels)))
    s = open_images(tmp_path)
    assert (len(s), s.channels, s.height, s.width) == (4, 1, 7, 7)
    np.testing.assert_array_equal(s.get(range(4))[:, 0], GREY)
    np.testing.assert_array_equal(s.labels, labels)
    assert [p.name for p in s.source_files()] == [f"t10k-images-idx3-ubyte{suffix}", f"t10k-labels-idx1-ubyte{suffix}"]


def test_idx_truncated_is_refused(tmp_path):
    (tmp_path / "a-images-idx3-ubyte").write_bytes(_idx((4, 7, 7), GREY)[:-5])
    with pytest.raises(UserError, match="a-images-idx3-ubyte.*truncated"):
        open_images(tmp_path / "a-images-idx3-ubyte")


def test_nvlabs_zip_labels_come_from_dataset_json(tmp_path):
    # EDM dataset_tool layout: 00000/img00000000.png ...; the sub-folder is NOT a class.
    names = [f"{i // 3:05d}/img{i:08d}.png" for i in range(6)]
    labels = [4, 0, 9, 9, 2, 1]
    with zipfile.ZipFile(tmp_path / "ds.zip", "w") as z:
        for n, a in zip(names, RGB):
            z.writestr(n, _png_bytes(a))
        z.writestr("dataset.json", json.dumps({"labels": [[n, l] for n, l in zip(names, labels)]}))
    s = open_images(tmp_path / "ds.zip")
    np.testing.assert_array_equal(s.labels, labels)
    np.testing.assert_array_equal(s.get(range(6)), RGB.transpose(0, 3, 1, 2))
    with zipfile.ZipFile(tmp_path / "nolabels.zip", "w") as z:
        for n, a in zip(names, RGB):
            z.writestr(n, _png_bytes(a))
        z.writestr("dataset.json", json.dumps({"labels": None}))
    assert open_images(tmp_path / "nolabels.zip").labels is None


def test_csv_digit_tables(tmp_path):
    pix = RNG.integers(0, 17, size=(5, 64))
    table = np.concatenate([pix, np.arange(5)[:, None]], axis=1)
    with gzip.open(tmp_path / "d.csv.gz", "wt") as f:
        np.savetxt(f, table, fmt="%d", delimiter=",")
    s = open_images(tmp_path / "d.csv.gz")
    assert (len(s), s.channels, s.height, s.width) == (5, 1, 8, 8)
    np.testing.assert_array_equal(s.get(range(5)).reshape(5, 64), np.round(pix * 255 / 16).astype(np.uint8))
    np.testing.assert_array_equal(s.labels, np.arange(5))
    np.savetxt(tmp_path / "bad.csv", np.ones((3, 10)), fmt="%d", delimiter=",")  # 9 pixels + label: fine
    assert open_images(tmp_path / "bad.csv").height == 3
    np.savetxt(tmp_path / "bad.csv", np.ones((3, 11)), fmt="%d", delimiter=",")  # 10 pixels: not square
    with pytest.raises(UserError, match="bad.csv.*S\\*S"):
        open_images(tmp_path / "bad.csv")


# ----------------------------------------------------------------------------- errors

def test_missing_path(tmp_path):
    with pytest.raises(UserError, match="nope.npy' does not exist"):
        open_images(tmp_path / "nope.npy")


def test_unknown_format_lists_what_is_supported(tmp_path):
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(UserError, match=r"x\.txt' is not a supported image source.*Supported inputs:.*\.npy"):
        open_images(tmp_path / "x.txt")


def test_corrupt_image_is_named(tmp_path):
    Image.fromarray(GREY[0]).save(tmp_path / "a.png")
    (tmp_path / "b.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(UserError, match="cannot decode image 'b.png'"):
        open_images(tmp_path).get([0, 1])


def test_empty_folder_and_empty_array(tmp_path):
    (tmp_path / "sub").mkdir()
    with pytest.raises(UserError, match="no images .* found in"):
        open_images(tmp_path / "sub")
    np.save(tmp_path / "e.npy", np.zeros((0, 8, 8, 3), np.uint8))
    with pytest.raises(UserError, match="e.npy' holds no images"):
        open_images(tmp_path / "e.npy")


def test_mixed_sizes_are_refused(tmp_path):
    Image.fromarray(GREY[0]).save(tmp_path / "a.png")
    Image.fromarray(RGB[0]).save(tmp_path / "b.png")
    with pytest.raises(UserError, match="mixes image sizes: 'a.png' is 7x7 but 'b.png' is 10x8"):
        open_images(tmp_path)


def test_bad_arrays(tmp_path):
    np.save(tmp_path / "f.npy", np.full((2, 5, 5), 300.0))
    with pytest.raises(UserError, match=r"f.npy' holds float pixels in \[300, 300\]"):
        open_images(tmp_path / "f.npy")
    np.save(tmp_path / "s.npy", np.zeros((2, 5, 5, 7), np.uint8))
    with pytest.raises(UserError, match="no channel axis"):
        open_images(tmp_path / "s.npy")
    np.savez(tmp_path / "l.npz", images=GREY, labels=np.arange(3))
    with pytest.raises(UserError, match="4 images but labels of shape"):
        open_images(tmp_path / "l.npz")


# ----------------------------------------------------------------------------- helpers

def test_labels_from_dirs_rules():
    assert labels_from_dirs(["a.png", "b.png"]) == (None, None)
    assert labels_from_dirs(["x/a.png", "b.png"]) == (None, None)  # mixed depth: no labels
    labels, classes = labels_from_dirs(["r/dog/1.png", "r/cat/2.png", "r/cat/deep/3.png"])
    assert classes == ["cat", "dog"] and labels.tolist() == [1, 0, 0]


def test_to_channels():
    import torch
    grey = GREY[:, None]
    np.testing.assert_array_equal(to_channels(grey, 3), np.concatenate([grey] * 3, axis=1))
    rgb = RGB.transpose(0, 3, 1, 2)
    luma = np.clip(np.rint(0.299 * rgb[:, 0] + 0.587 * rgb[:, 1] + 0.114 * rgb[:, 2]), 0, 255)
    np.testing.assert_array_equal(to_channels(rgb, 1)[:, 0], luma)
    t = torch.from_numpy(rgb).float() / 255
    np.testing.assert_allclose(to_channels(t, 1)[:, 0].numpy(), luma / 255, atol=0.5 / 255 + 1e-6)
    assert to_channels(t, 3) is t
    with pytest.raises(ValueError):
        to_channels(grey, 2)


def test_subset_indices():
    a = subset_indices(1000, 100, seed=3)
    assert len(a) == 100 and len(np.unique(a)) == 100 and np.all(np.diff(a) > 0) and a.max() < 1000
    np.testing.assert_array_equal(a, subset_indices(1000, 100, seed=3))
    assert not np.array_equal(a, subset_indices(1000, 100, seed=4))
    assert set(a) <= set(subset_indices(1000, 300, seed=3))  # nested as n grows
    np.testing.assert_array_equal(subset_indices(50, 80, seed=1), np.arange(50))
    np.testing.assert_array_equal(subset_indices(50, None, seed=1), np.arange(50))


# ----------------------------------------------------------------------------- real data

needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"shared data folder {DATA} is absent")


@needs_data
def test_real_mnist_idx():
    s = open_images(DATA / "mnist-test")
    assert (len(s), s.channels, s.height, s.width) == (10000, 1, 28, 28)
    # published MNIST test-set class counts
    assert np.bincount(s.labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert s.labels[:3].tolist() == [7, 2, 1]  # the well-known first test digits
    x = s.get([0, 9999])
    assert x.dtype == np.uint8 and x.max() == 255 and x[:, :, 0, 0].max() == 0


@pytest.mark.slow
@needs_data
def test_real_cifar_tar():
    s = open_images(DATA / "cifar10-test" / "cifar10_test_jpg.tar")
    assert (len(s), s.channels, s.height, s.width) == (10000, 3, 32, 32)
    assert s.class_names == sorted(["airplane", "automobile", "bird", "cat", "deer",
                                    "dog", "frog", "horse", "ship", "truck"])
    assert np.bincount(s.labels).tolist() == [1000] * 10
    x = s.get_float(subset_indices(len(s), 64, seed=0))
    assert x.shape == (64, 3, 32, 32) and 0.3 < x.mean() < 0.7


@needs_data
def test_real_csv_tables():
    m = open_images(DATA / "mnist5k" / "mnist_5k.csv.gz")
    assert (len(m), m.height, m.width) == (5000, 28, 28) and np.bincount(m.labels).tolist() == [500] * 10
    d = open_images(DATA / "digits" / "digits.csv.gz")
    assert (len(d), d.channels, d.height, d.width) == (1797, 1, 8, 8) and d.get(range(len(d))).max() == 255


# ----------------------------------------------------------------------------- archive members: caps

def _zip_with_zeros(path: Path, zeros: int, lie_as: int | None = None) -> Path:
    """a.png (a real image) and b.png: `zeros` zero bytes deflated (a zip bomb in miniature). lie_as: write
    that uncompressed size into b.png's local and central headers instead of the true one."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("a.png", _png_bytes(RGB[0]))
        z.writestr("b.png", bytes(zeros))
        offset = z.getinfo("b.png").header_offset
    if lie_as is not None:
        raw = bytearray(path.read_bytes())
        struct.pack_into("<I", raw, offset + 22, lie_as)            # local header: uncompressed size
        central = raw.index(b"PK\x01\x02")
        while raw[central + 46:central + 51] != b"b.png":
            central = raw.index(b"PK\x01\x02", central + 4)
        struct.pack_into("<I", raw, central + 24, lie_as)           # central directory: uncompressed size
        path.write_bytes(bytes(raw))
    return path


def _peak_bytes(fn) -> int:
    """Peak of Python-allocated memory while fn() runs (zlib's output buffers included)."""
    import tracemalloc
    tracemalloc.start()
    try:
        fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def test_zip_member_over_the_cap_is_refused_on_its_declared_size(tmp_path, monkeypatch):
    from icrcli.data import images
    monkeypatch.setattr(images, "MAX_MEMBER_BYTES", 1 << 20)
    bomb = _zip_with_zeros(tmp_path / "bomb.zip", 16 << 20)
    assert bomb.stat().st_size < 100_000                                    # 16 MiB of zeros, deflated

    def open_it():
        with pytest.raises(UserError, match=r"'b\.png' in '.*bomb\.zip' holds 16777216 bytes, more than the "
                                            r"1048576 bytes icr reads per archive member.*ICR_MAX_MEMBER_BYTES"):
            open_images(bomb)
    assert _peak_bytes(open_it) < 1 << 20                                   # refused before reading the member
    monkeypatch.setenv(images.MEMBER_ENV, str(32 << 20))                     # raised by the user: then it is read
    with pytest.raises(UserError, match="cannot decode image 'b.png'"):
        open_images(bomb)


def test_zip_member_whose_header_lies_is_never_read_past_its_size(tmp_path, monkeypatch):
    from icrcli.data import images
    monkeypatch.setattr(images, "MAX_MEMBER_BYTES", 1 << 20)
    bomb = _zip_with_zeros(tmp_path / "liar.zip", 16 << 20, lie_as=1000)

    def open_it():
        with pytest.raises(UserError, match=r"cannot read 'b\.png' from '.*liar\.zip' \(BadZipFile"):
            open_images(bomb)
    assert _peak_bytes(open_it) < 4 << 20           # a read piece or two, not the 16 MiB the member holds


def test_read_capped_stops_at_the_cap_whatever_the_stream_holds():
    from icrcli.data.images import _READ_PIECE, read_capped

    class Endless:
        """A member stream that never ends, counting what is taken from it."""
        taken, largest = 0, 0

        def read(self, n):
            self.taken += n
            self.largest = max(self.largest, n)
            return bytes(n)

    cap = 3 * _READ_PIECE + 5
    f = Endless()
    with pytest.raises(UserError, match="'m.png' in 'x.zip' holds more than"):
        read_capped(f, cap, "m.png", "x.zip")
    assert f.taken == cap + 1 and f.largest <= _READ_PIECE                # never more than the cap held
    assert read_capped(__import__("io").BytesIO(b"abc"), 3, "m", "x") == b"abc"   # at the cap: fine


def test_targz_member_over_the_cap_is_refused_before_it_is_read(tmp_path, monkeypatch):
    from icrcli.data import images
    monkeypatch.setattr(images, "MAX_MEMBER_BYTES", 1 << 20)
    path = tmp_path / "bomb.tar.gz"
    with tarfile.open(path, "w:gz") as tf:
        for name, data in (("a.png", _png_bytes(RGB[0])), ("b.png", bytes(16 << 20))):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, __import__("io").BytesIO(data))

    def open_it():
        with pytest.raises(UserError, match=r"'b\.png' in '.*bomb\.tar\.gz' holds 16777216 bytes"):
            open_images(path)
    assert _peak_bytes(open_it) < 4 << 20           # gzip's and tarfile's own buffers, not the 16 MiB member


def test_bad_member_env_value_is_a_user_error(tmp_path, monkeypatch):
    from icrcli.data import images
    monkeypatch.setenv(images.MEMBER_ENV, "lots")
    with pytest.raises(UserError, match="ICR_MAX_MEMBER_BYTES='lots': expected a positive number"):
        open_images(_zip_with_zeros(tmp_path / "z.zip", 10))


# ----------------------------------------------------------------------------- undecodable images

def _folder_with_bad(tmp_path: Path) -> Path:
    for i, name in enumerate(["a.png", "c.png", "e.png"]):
        Image.fromarray(RGB[i]).save(tmp_path / name)
    (tmp_path / "b.png").write_bytes(b"\x89PNG not really")
    (tmp_path / "d.png").write_bytes(_png_bytes(RGB[3])[:40])             # truncated mid-stream
    return tmp_path


def test_undecodable_images_are_refused_by_default_and_reported_with_skip(tmp_path):
    from icrcli.data.images import UndecodableImage
    folder = _folder_with_bad(tmp_path)
    with pytest.raises(UndecodableImage, match="cannot decode image 'b.png'.*--skip-bad-images") as e:
        open_images(folder)
    assert e.value.name == "b.png" and isinstance(e.value, UserError)
    s = open_images(folder, skip_bad_images=True)
    kept, bad = s.decodable(range(len(s)))
    assert kept.tolist() == [0, 2, 4] and kept.dtype == np.int64
    assert [(i, n) for i, n, _ in bad] == [(1, "b.png"), (3, "d.png")]
    assert all("cannot decode image" in why for _, _, why in bad)
    np.testing.assert_array_equal(s.get(kept), RGB[:3].transpose(0, 3, 1, 2))
    assert s.decodable([4, 0])[0].tolist() == [4, 0]                       # order kept, as given


def test_damaged_zip_member_is_reported_as_undecodable(tmp_path):
    path = tmp_path / "d.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for i in range(3):
            z.writestr(f"{i}.png", _png_bytes(RGB[i]))
        offset = z.getinfo("1.png").header_offset
    raw = bytearray(path.read_bytes())
    raw[offset + 60] ^= 0xFF                                                # inside 1.png's deflate stream
    path.write_bytes(bytes(raw))
    with pytest.raises(UserError, match=r"'1\.png'"):
        open_images(path).get([0, 1, 2])
    s = open_images(path, skip_bad_images=True)
    kept, bad = s.decodable([0, 1, 2])
    assert kept.tolist() == [0, 2] and [n for _, n, _ in bad] == ["1.png"]


def test_skip_bad_images_needs_one_good_image_and_still_refuses_mixed_sizes(tmp_path):
    (tmp_path / "x").mkdir()
    for name in ("a.png", "b.png"):
        (tmp_path / "x" / name).write_bytes(b"not an image")
    with pytest.raises(UserError, match="none of the 2 images in '.*x' can be decoded"):
        open_images(tmp_path / "x", skip_bad_images=True)
    (tmp_path / "y").mkdir()
    Image.fromarray(GREY[0]).save(tmp_path / "y" / "a.png")
    Image.fromarray(RGB[0]).save(tmp_path / "y" / "b.png")
    (tmp_path / "y" / "c.png").write_bytes(b"junk")
    with pytest.raises(UserError, match="mixes image sizes"):
        s = open_images(tmp_path / "y", skip_bad_images=True)
        s.decodable(range(len(s)))


def test_arrays_are_always_decodable(tmp_path):
    np.save(tmp_path / "a.npy", RGB)
    kept, bad = open_images(tmp_path / "a.npy", skip_bad_images=True).decodable([5, 1])
    assert kept.tolist() == [5, 1] and bad == []
