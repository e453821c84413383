"""Loaders for the user's own data files: MNIST idx, CIFAR-10 binary batches, ``.npz`` and image folders.

Nothing here unpickles: ``.npz`` files are read with ``allow_pickle=False`` and CIFAR-10 is read
from its *binary* version. Every loader validates shape, dtype and labels, verifies a checksum
when one is given or known (``datasets/checksums.json``), and raises :class:`DatasetError`.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import struct
import zipfile
from pathlib import Path

import numpy as np

from .data import validate_arrays
from ..infra.errors import DatasetError

KNOWN_CHECKSUMS_FILE = Path(__file__).resolve().parents[2] / "datasets" / "checksums.json"

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".pgm", ".ppm")


def known_checksums() -> dict:
    if not KNOWN_CHECKSUMS_FILE.exists():
        return {}
    table = json.loads(KNOWN_CHECKSUMS_FILE.read_text())
    return {k: v for k, v in table.items() if not k.startswith("_")}


def verify_checksum(path: str | Path, expected: str | None = None, algorithm: str = "sha256") -> str | None:
    """Check ``path`` against ``expected`` (or the known digest for its file name).

    Returns the digest checked, or None when no digest is known for the file.
    """
    path = Path(path)
    if expected is None:
        entry = known_checksums().get(path.name)
        if entry is None:
            return None
        expected, algorithm = entry["digest"], entry["algorithm"]
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    if h.hexdigest() != expected.lower():
        raise DatasetError(f"{path.name}: {algorithm} is {h.hexdigest()}; expected {expected} (file corrupt or not the one named)")
    return expected


def _require_file(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"dataset file {str(path)!r} does not exist or is not a file")
    return path


def read_idx(path: str | Path, sha256: str | None = None) -> np.ndarray:
    """Read an idx file (MNIST's format), gzip-compressed or raw."""
    path = _require_file(path)
    verify_checksum(path, sha256)
    try:
        raw = gzip.open(path, "rb").read() if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as exc:
        raise DatasetError(f"{path.name}: cannot decompress ({exc}); expected a gzip idx file") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DatasetError(f"{path.name}: not an idx file (bad magic number); expected MNIST idx format")
    dtype, ndim = np.dtype(_IDX_DTYPES[raw[2]]), raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetError(f"{path.name}: truncated idx header")
    dims = struct.unpack(">" + "I" * ndim, raw[4:header])
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DatasetError(f"{path.name}: holds {len(raw) - header} data bytes; expected {expected} for shape {dims}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def load_mnist_idx(images: str | Path, labels: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """MNIST-style images (N, H, W) uint8 and labels (N,) -> float32 (N, 1, H, W) in [0, 1], int64."""
    x = read_idx(images)
    y = read_idx(labels)
    if x.ndim != 3:
        raise DatasetError(f"{Path(images).name}: images have shape {x.shape}; expected (N, rows, cols)")
    if y.ndim != 1:
        raise DatasetError(f"{Path(labels).name}: labels have shape {y.shape}; expected (N,)")
    y = y.astype(np.int64)
    validate_arrays(x, y, name=Path(images).name, num_classes=10)
    return (x.astype(np.float32) / 255.0)[:, None], y


def load_cifar10_binary(*batch_files: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10 *binary* batches (``data_batch_N.bin``): records of 1 label byte + 3072 pixel bytes."""
    if not batch_files:
        raise DatasetError("no CIFAR-10 batch files given; expected one or more data_batch_N.bin files")
    xs, ys = [], []
    for f in batch_files:
        path = _require_file(f)
        verify_checksum(path)
        raw = np.fromfile(path, dtype=np.uint8)
        if raw.size == 0 or raw.size % 3073:
            raise DatasetError(f"{path.name}: {raw.size} bytes is not a whole number of 3073-byte CIFAR-10 records")
        rec = raw.reshape(-1, 3073)
        ys.append(rec[:, 0].astype(np.int64))
        xs.append(rec[:, 1:].reshape(-1, 3, 32, 32))
    x, y = np.concatenate(xs), np.concatenate(ys)
    validate_arrays(x, y, name="CIFAR-10", num_classes=10)
    return x.astype(np.float32) / 255.0, y


def load_npz(path: str | Path, sha256: str | None = None, x_key: str = "x", y_key: str = "y") -> tuple[np.ndarray, np.ndarray | None]:
    """An ``.npz`` holding arrays ``x`` (N, ...) and optionally ``y`` (N,); never unpickles."""
    path = _require_file(path)
    verify_checksum(path, sha256)
    try:
        with np.load(path, allow_pickle=False) as archive:
            keys = set(archive.files)
            if x_key not in keys:
                raise DatasetError(f"{path.name}: has arrays {sorted(keys)}; expected an array named {x_key!r}")
            x = archive[x_key]
            y = archive[y_key] if y_key in keys else None
    except DatasetError:
        raise
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise DatasetError(f"{path.name}: holds object arrays that need pickle; expected plain numeric arrays") from None
        raise DatasetError(f"{path.name}: cannot read ({exc}); expected a numpy .npz archive") from None
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise DatasetError(f"{path.name}: cannot read ({exc}); expected a numpy .npz archive") from None
    validate_arrays(x, y, name=path.name)
    return x.astype(np.float32), (None if y is None else y.astype(np.int64))


def load_image_folder(root: str | Path, size: tuple[int, int] | None = None, grayscale: bool = False) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``root/<class name>/<image>``: one sub-folder per class, sorted names give the label index."""
    from PIL import Image, UnidentifiedImageError

    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"image folder {str(root)!r} does not exist; expected a folder of class sub-folders")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not classes:
        raise DatasetError(f"image folder {str(root)!r} has no class sub-folders; expected root/<class>/<image>")
    xs, ys = [], []
    for label, cls in enumerate(classes):
        for img_path in sorted((root / cls).iterdir()):
            if img_path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            try:
                with Image.open(img_path) as img:
                    img = img.convert("L" if grayscale else "RGB")
                    if size is not None:
                        img = img.resize((size[1], size[0]))
                    arr = np.asarray(img, dtype=np.float32) / 255.0
            except (UnidentifiedImageError, OSError) as exc:
                raise DatasetError(f"{img_path}: cannot decode image ({exc.__class__.__name__}); expected one of {IMAGE_SUFFIXES}") from None
            arr = arr[None] if grayscale else arr.transpose(2, 0, 1)
            if xs and arr.shape != xs[0].shape:
                raise DatasetError(f"{img_path}: shape {arr.shape} differs from {xs[0].shape}; pass size=(H, W) to resize")
            xs.append(arr)
            ys.append(label)
    if not xs:
        raise DatasetError(f"image folder {str(root)!r} holds no images; expected files ending in {IMAGE_SUFFIXES}")
    x, y = np.stack(xs), np.asarray(ys, dtype=np.int64)
    validate_arrays(x, y, name=root.name, num_classes=len(classes))
    return x, y, classes
