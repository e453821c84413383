import gzip
import hashlib
import struct

import numpy as np
import pytest
from PIL import Image

import workbench as wb
from workbench.tasks.loaders import read_idx, verify_checksum


def _write_idx(path, arr, gz=False):
    code = {np.uint8: 0x08}[arr.dtype.type]
    raw = bytes([0, 0, code, arr.ndim]) + struct.pack(">" + "I" * arr.ndim, *arr.shape) + arr.tobytes()
    path.write_bytes(gzip.compress(raw, mtime=0) if gz else raw)
    return path


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx_round_trip(tmp_path, gz):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    labels = np.array([0, 1, 2, 9, 4], dtype=np.uint8)
    suffix = ".gz" if gz else ""
    x, y = wb.tasks.load_mnist_idx(_write_idx(tmp_path / f"img-idx3-ubyte{suffix}", images, gz), _write_idx(tmp_path / f"lbl-idx1-ubyte{suffix}", labels, gz))
    assert x.shape == (5, 1, 28, 28) and x.dtype == np.float32 and x.max() <= 1.0
    np.testing.assert_array_equal(x[:, 0] * 255, images.astype(np.float32))
    np.testing.assert_array_equal(y, labels)


def test_idx_errors(tmp_path):
    with pytest.raises(wb.infra.DatasetError, match="does not exist"):
        read_idx(tmp_path / "missing")
    (tmp_path / "junk").write_bytes(b"not an idx file at all")
    with pytest.raises(wb.infra.DatasetError, match="bad magic number"):
        read_idx(tmp_path / "junk")
    good = _write_idx(tmp_path / "t", np.zeros((4, 3, 3), np.uint8))
    (tmp_path / "trunc").write_bytes(good.read_bytes()[:-5])
    with pytest.raises(wb.infra.DatasetError, match="expected 36 for shape"):
        read_idx(tmp_path / "trunc")
    (tmp_path / "bad.gz").write_bytes(b"\x1f\x8b broken gzip")
    with pytest.raises(wb.infra.DatasetError, match="cannot decompress"):
        read_idx(tmp_path / "bad.gz")
    labels = _write_idx(tmp_path / "l", np.array([3, 12], np.uint8))
    with pytest.raises(wb.infra.DatasetError, match="labels include 12; expected class indices below 10"):
        wb.tasks.load_mnist_idx(_write_idx(tmp_path / "i", np.zeros((2, 4, 4), np.uint8)), labels)


def test_known_checksum_is_verified_by_file_name(tmp_path):
    fake = tmp_path / "train-labels-idx1-ubyte.gz"  # a name with a published MD5
    fake.write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x01\x05", mtime=0))
    with pytest.raises(wb.infra.DatasetError, match="md5 is .* expected d53e105ee54ea40749a09fcbcd1e9432"):
        read_idx(fake)


def test_explicit_sha256(tmp_path):
    p = _write_idx(tmp_path / "x", np.zeros((2, 2), np.uint8))
    digest = hashlib.sha256(p.read_bytes()).hexdigest()
    assert verify_checksum(p, digest) == digest
    with pytest.raises(wb.infra.DatasetError, match="sha256 is"):
        read_idx(p, sha256="0" * 64)


def test_cifar10_binary(tmp_path):
    rng = np.random.default_rng(1)
    rec = np.concatenate([rng.integers(0, 10, (3, 1)), rng.integers(0, 256, (3, 3072))], axis=1).astype(np.uint8)
    (tmp_path / "data_batch_1.bin").write_bytes(rec.tobytes())
    x, y = wb.tasks.load_cifar10_binary(tmp_path / "data_batch_1.bin")
    assert x.shape == (3, 3, 32, 32) and list(y) == list(rec[:, 0])
    (tmp_path / "broken.bin").write_bytes(rec.tobytes()[:-1])
    with pytest.raises(wb.infra.DatasetError, match="not a whole number of 3073-byte"):
        wb.tasks.load_cifar10_binary(tmp_path / "broken.bin")
    with pytest.raises(wb.infra.DatasetError, match="no CIFAR-10 batch files"):
        wb.tasks.load_cifar10_binary()


def test_npz_validation_and_no_pickle(tmp_path):
    np.savez(tmp_path / "ok.npz", x=np.ones((4, 3), np.float32), y=np.array([0, 1, 1, 0]))
    x, y = wb.tasks.load_npz(tmp_path / "ok.npz")
    assert x.shape == (4, 3) and y.dtype == np.int64
    np.savez(tmp_path / "obj.npz", x=np.array([{"a": 1}, None], dtype=object))
    with pytest.raises(wb.infra.DatasetError, match="need pickle"):
        wb.tasks.load_npz(tmp_path / "obj.npz")
    np.savez(tmp_path / "nan.npz", x=np.array([[np.nan, 1.0]]))
    with pytest.raises(wb.infra.DatasetError, match="NaN or inf"):
        wb.tasks.load_npz(tmp_path / "nan.npz")
    np.savez(tmp_path / "lab.npz", x=np.ones((2, 2)), y=np.array([0.5, 1.0]))
    with pytest.raises(wb.infra.DatasetError, match="labels have dtype float64; expected integer"):
        wb.tasks.load_npz(tmp_path / "lab.npz")
    np.savez(tmp_path / "len.npz", x=np.ones((3, 2)), y=np.array([0, 1]))
    with pytest.raises(wb.infra.DatasetError, match=r"labels have shape \(2,\) for 3 inputs"):
        wb.tasks.load_npz(tmp_path / "len.npz")
    np.savez(tmp_path / "nox.npz", data=np.ones((3, 2)))
    with pytest.raises(wb.infra.DatasetError, match="expected an array named 'x'"):
        wb.tasks.load_npz(tmp_path / "nox.npz")
    (tmp_path / "corrupt.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(wb.infra.DatasetError, match="cannot read"):
        wb.tasks.load_npz(tmp_path / "corrupt.npz")


def test_image_folder(tmp_path):
    for cls, value in (("cat", 10), ("dog", 200)):
        (tmp_path / cls).mkdir()
        for i in range(2):
            Image.fromarray(np.full((6, 5, 3), value + i, np.uint8)).save(tmp_path / cls / f"{i}.png")
    x, y, classes = wb.tasks.load_image_folder(tmp_path)
    assert classes == ["cat", "dog"] and x.shape == (4, 3, 6, 5) and list(y) == [0, 0, 1, 1]
    x, _, _ = wb.tasks.load_image_folder(tmp_path, size=(4, 4), grayscale=True)
    assert x.shape == (4, 1, 4, 4)
    (tmp_path / "dog" / "bad.png").write_bytes(b"not a png")
    with pytest.raises(wb.infra.DatasetError, match="cannot decode image"):
        wb.tasks.load_image_folder(tmp_path)
    with pytest.raises(wb.infra.DatasetError, match="has no class sub-folders"):
        wb.tasks.load_image_folder(tmp_path / "cat")
