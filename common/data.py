"""Files and datalists: atomic NIfTI/JSON/NPZ writing, validating readers, and the datalist
format every bundle reads (``training`` / ``validation`` / ``test`` lists, paths relative to the
dataset folder), plus the small helpers the bundle configs call to turn a datalist or one study
into MONAI items.

Determinism: no timestamps are written (gzip ``mtime=0`` without a file name, zip entries dated
1980-01-01, JSON without dates). Every write goes to a temporary name in the target folder and
is renamed into place, so an interruption leaves no half-written file under a final name.
"""

from __future__ import annotations

import gzip
import io
import json
import math
import os
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from common.errors import InputError, MissingFileError

PathLike = str | os.PathLike

__all__ = [
    "DATALIST_KEYS",
    "DATALIST_NAME",
    "NiftiVolume",
    "as_int",
    "NiftiHeader",
    "atomic_write_bytes",
    "centred_affine",
    "check_nifti_file",
    "check_same_grid",
    "is_nifti_path",
    "is_path_value",
    "load_datalist",
    "read_datalist",
    "read_json",
    "read_nifti",
    "read_npz",
    "validate_datalist",
    "write_datalist",
    "write_json",
    "write_nifti",
    "write_npz",
]

DATALIST_KEYS = ("training", "validation", "test")
DATALIST_NAME = "datalist.json"
#: Suffixes that mark a datalist value as a file path (relative to the dataset folder).
PATH_SUFFIXES = (".nii.gz", ".nii", ".npz", ".npy", ".pt", ".mha", ".mhd", ".nrrd", ".dcm", ".json", ".png")
_TMP_PREFIX = ".tmp-"
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


# ----------------------------------------------------------------------------------------
# argument checking
# ----------------------------------------------------------------------------------------
def as_int(name: str, value: Any, minimum: int | None = None) -> int:
    """Return ``value`` as an int, or raise ValueError naming ``name``.

    Accepts ints, integral floats (fire passes ``--n 1e2`` as ``100.0``) and decimal strings
    (fire passes ``--seed 007`` as ``'007'``); refuses bools, fractions, NaN and other text.
    """
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be an integer, got the boolean {value!r}")
    if isinstance(value, (int, np.integer)):
        out = int(value)
    elif isinstance(value, (float, np.floating)):
        if not math.isfinite(value) or value != int(value):
            raise ValueError(f"{name} must be an integer, got {value!r}")
        out = int(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            out = int(text, 10)
        except ValueError:
            try:
                as_float = float(text)
            except ValueError:
                raise ValueError(f"{name} must be an integer, got the text {value!r}") from None
            return as_int(name, as_float, minimum)
    else:
        raise ValueError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    if minimum is not None and out < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {out}")
    return out


# ----------------------------------------------------------------------------------------
# atomic writing
# ----------------------------------------------------------------------------------------
def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and
    ``os.replace``, so readers see either the old file or the whole new one. A file that
    already holds exactly ``data`` is left untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data:
        return path
    fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX + path.name + ".", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _json_ready(obj: Any) -> Any:
    """Tuples, numpy scalars/arrays and paths as plain JSON types."""
    if isinstance(obj, Mapping):
        return {str(k): _json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_ready(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _json_ready(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return obj


def write_json(path: PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON (trailing newline), atomically."""
    text = json.dumps(_json_ready(obj), indent=2, allow_nan=False) + "\n"
    return atomic_write_bytes(path, text.encode("utf-8"))


def read_json(path: PathLike) -> Any:
    """Read a JSON file; a missing file raises FileNotFoundError and invalid JSON a
    ValueError naming the file, line and column."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path}: file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not UTF-8 text ({e})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None


# ----------------------------------------------------------------------------------------
# NIfTI
# ----------------------------------------------------------------------------------------
class NiftiVolume(NamedTuple):
    """A NIfTI image read by :func:`read_nifti`: ``array`` [X, Y, Z] as stored (float32,
    int16, ...), ``affine`` 4x4 (RAS, mm)."""

    array: np.ndarray
    affine: np.ndarray

    @property
    def spacing_mm(self) -> tuple[float, ...]:
        """Voxel size in mm along each array axis (column norms of the affine)."""
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))


def centred_affine(shape: Sequence[int], spacing_mm: Sequence[float]) -> np.ndarray:
    """Affine diag(sx, sy, sz, 1) with the volume centred on the origin (CONTEXT layout)."""
    if len(shape) != 3 or len(spacing_mm) != 3:
        raise ValueError(f"shape and spacing_mm need 3 entries, got {tuple(shape)} and {tuple(spacing_mm)}")
    affine = np.diag([float(s) for s in spacing_mm] + [1.0])
    affine[:3, 3] = -(np.asarray(shape, dtype=float) - 1.0) / 2.0 * np.asarray(spacing_mm, dtype=float)
    return affine


_NIFTI_DTYPES = {np.dtype(t) for t in ("float32", "float64", "int16", "uint8", "int32", "uint16")}


def write_nifti(
    path: PathLike,
    array: Any,
    affine: np.ndarray | None = None,
    spacing_mm: Sequence[float] | None = None,
    dtype: Any = None,
    compresslevel: int = 6,
) -> Path:
    """Write a 3D (or 4D) array as NIfTI-1, atomically and byte-reproducibly.

    Args:
        path: ``.nii.gz`` (gzip without time stamp or file name) or ``.nii``.
        array: [X, Y, Z(, T)] numpy array or torch tensor (moved to CPU).
        affine: 4x4 voxel-to-RAS (mm); default :func:`centred_affine` of ``spacing_mm``.
        spacing_mm: voxel size; used when ``affine`` is None (default 1 mm), else checked
            against the affine's column norms.
        dtype: stored type (float32, int16, ...); default the array's own when it is one of
            float32/float64/int16/uint8/int32/uint16, else float32. Integer types refuse
            values that are not integers or do not fit.

    Both qform and sform are set (code 1, scanner) to ``affine``; units mm and s.
    """
    import nibabel as nib

    path = Path(path)
    if hasattr(array, "detach"):
        array = array.detach().cpu().numpy()
    array = np.asarray(array)
    if array.ndim not in (3, 4):
        raise ValueError(f"{path}: array must be 3D [X, Y, Z] or 4D, got shape {array.shape}")
    dtype = np.dtype(dtype) if dtype is not None else (array.dtype if array.dtype in _NIFTI_DTYPES else np.dtype(np.float32))
    if dtype not in _NIFTI_DTYPES:
        raise ValueError(f"{path}: unsupported NIfTI dtype {dtype}")
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        if array.size and (not np.all(np.isfinite(array)) or array.min() < info.min or array.max() > info.max):
            raise ValueError(f"{path}: values outside the range of {dtype} ({array.min()}..{array.max()})")
        if np.issubdtype(array.dtype, np.floating) and not np.array_equal(array, np.round(array)):
            raise ValueError(f"{path}: non-integer values cannot be stored as {dtype}")
    elif not np.all(np.isfinite(array)):
        raise ValueError(f"{path}: array holds NaN or Inf")
    if affine is None:
        affine = centred_affine(array.shape[:3], spacing_mm if spacing_mm is not None else (1.0, 1.0, 1.0))
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
        raise ValueError(f"{path}: affine must be a finite 4x4 matrix, got shape {affine.shape}")
    if spacing_mm is not None:
        norms = np.linalg.norm(affine[:3, :3], axis=0)
        if not np.allclose(norms, np.asarray(spacing_mm, dtype=float), rtol=1e-5):
            raise ValueError(f"{path}: spacing_mm {tuple(spacing_mm)} disagrees with the affine ({tuple(norms)})")
    img = nib.Nifti1Image(np.ascontiguousarray(array.astype(dtype, copy=False)), affine)
    img.header.set_data_dtype(dtype)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    # No intensity scaling: the stored numbers are the values (nibabel may otherwise rescale ints).
    img.header["scl_slope"] = 1.0
    img.header["scl_inter"] = 0.0
    raw = img.to_bytes()
    if path.name.endswith(".gz"):
        raw = gzip.compress(raw, compresslevel=compresslevel, mtime=0)
    elif not path.name.endswith(".nii"):
        raise ValueError(f"{path}: NIfTI file name must end with .nii or .nii.gz")
    return atomic_write_bytes(path, raw)


def read_nifti(path: PathLike, allow_nonfinite: bool = False) -> NiftiVolume:
    """Read and validate a NIfTI file.

    Raises:
        MissingFileError: the file does not exist (a FileNotFoundError).
        InputError: the file is not NIfTI, is truncated or corrupt, or (unless
            ``allow_nonfinite``) holds NaN/Inf; the message names the file (a ValueError).
    """
    import nibabel as nib

    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path}: NIfTI file not found")
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        img = nib.Nifti1Image.from_bytes(raw)
        array = np.asanyarray(img.dataobj)
    except Exception as e:  # nibabel/gzip/zlib raise many types for bad files
        raise InputError(f"{path}: not a readable NIfTI file (corrupt or truncated?): {type(e).__name__}: {_one_line(e)}") from None
    if not allow_nonfinite and np.issubdtype(array.dtype, np.floating):
        bad = ~np.isfinite(array)
        if bad.any():
            idx = tuple(int(i) for i in np.argwhere(bad)[0])
            raise InputError(f"{path}: {int(bad.sum())} NaN/Inf voxel(s), first at index {idx}")
    affine = img.affine
    if affine is None or not np.all(np.isfinite(affine)):
        raise InputError(f"{path}: missing or non-finite affine")
    return NiftiVolume(array, np.asarray(affine, dtype=np.float64))


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


def is_nifti_path(path: PathLike) -> bool:
    """True for a ``.nii`` or ``.nii.gz`` file name."""
    return str(path).lower().endswith((".nii", ".nii.gz"))


class NiftiHeader(NamedTuple):
    """What :func:`check_nifti_file` learns from a NIfTI file without keeping its voxels:
    ``shape`` (the 3 spatial sizes) and ``affine`` (4x4, RAS, mm)."""

    path: Path
    shape: tuple[int, int, int]
    affine: np.ndarray

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))  # type: ignore[return-value]

    @property
    def axcodes(self) -> str:
        import nibabel as nib

        return "".join(str(c) for c in nib.aff2axcodes(self.affine))


def check_nifti_file(path: PathLike, what: str = "image") -> NiftiHeader:
    """Check a NIfTI file before anything is computed from it, cheaply (its voxels are streamed,
    not kept): readable header, every voxel byte the header announces present (a truncated
    ``.nii`` or ``.nii.gz`` is refused; gzip's checksum is verified), one 3D volume (trailing
    dimensions of size 1 allowed), a finite affine with non-zero voxel sizes.

    Raises:
        MissingFileError: no such file.
        InputError: naming the file and the problem (``what`` says what the file should be).
    """
    import nibabel as nib

    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path}: {what} not found")
    try:
        img = nib.load(str(path))
        header = img.header
        shape = tuple(int(n) for n in img.shape)
        expected = int(header.get_data_offset()) + int(np.prod(shape, dtype=np.int64)) * np.dtype(header.get_data_dtype()).itemsize
        if path.name.lower().endswith(".gz"):
            found = 0
            with gzip.open(path, "rb") as f:  # reads to the end: EOFError when truncated, BadGzipFile on a bad CRC
                while block := f.read(1 << 22):
                    found += len(block)
        else:
            found = path.stat().st_size
        affine = np.asarray(img.affine, dtype=np.float64)
    except Exception as e:  # nibabel/gzip/zlib raise many types for bad files
        raise InputError(f"{path}: not a readable NIfTI file (corrupt or truncated?): {type(e).__name__}: {_one_line(e)}") from None
    if found < expected:
        raise InputError(f"{path}: truncated NIfTI file: {found} of the {expected} bytes its header announces")
    spatial = shape[:3]
    if len(shape) < 3 or any(n != 1 for n in shape[3:]):
        kind = f"{len(shape)}D" if len(shape) != 4 else f"4D ({shape[3]} frames or channels)"
        raise InputError(f"{path}: {what} must be one 3D volume, got a {kind} image of shape {shape}")
    if not np.all(np.isfinite(affine)) or np.any(np.linalg.norm(affine[:3, :3], axis=0) == 0):
        raise InputError(f"{path}: {what} has a missing, non-finite or degenerate affine (voxel size 0)")
    return NiftiHeader(path, spatial, affine)  # type: ignore[arg-type]


def check_same_grid(first: NiftiHeader, second: NiftiHeader, what: str = "paired images", atol_mm: float = 0.01) -> None:
    """Refuse two images that should lie voxel by voxel on one grid (e.g. a NAC PET and its CT)
    but do not: InputError naming both files and the first difference (shape, voxel size,
    orientation, position)."""
    a, b = first, second
    names = f"{b.path}: {what} {a.path.name} and {b.path.name} are not on the same grid"
    if a.shape != b.shape:
        raise InputError(f"{names}: shape {a.shape} vs {b.shape}; resample one onto the other first")
    if not np.allclose(a.spacing_mm, b.spacing_mm, rtol=1e-4, atol=1e-4):
        sa, sb = (tuple(round(s, 4) for s in h.spacing_mm) for h in (a, b))
        raise InputError(f"{names}: voxel size {sa} vs {sb} mm; resample one onto the other first")
    if a.axcodes != b.axcodes:
        raise InputError(f"{names}: orientation {a.axcodes} vs {b.axcodes}; reorient one to the other first")
    if not np.allclose(a.affine, b.affine, atol=atol_mm, rtol=0):
        shift = np.asarray(b.affine[:3, 3] - a.affine[:3, 3]).round(3).tolist()
        raise InputError(f"{names}: affines differ (origin shift {shift} mm, or direction); resample one onto the other first")


# ----------------------------------------------------------------------------------------
# NPZ (raw data such as sinograms)
# ----------------------------------------------------------------------------------------
def write_npz(path: PathLike, arrays: Mapping[str, Any], compress: bool = True) -> Path:
    """Write named arrays as a NumPy ``.npz`` archive (``numpy.load`` reads it), atomically
    and byte-reproducibly (zip entries dated 1980-01-01, sorted by name)."""
    path = Path(path)
    if not path.name.endswith(".npz"):
        raise ValueError(f"{path}: file name must end with .npz")
    buf = io.BytesIO()
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(buf, "w", compression=method) as zf:
        for name in sorted(arrays):
            value = arrays[name]
            if hasattr(value, "detach"):
                value = value.detach().cpu().numpy()
            value = np.asarray(value)
            if value.dtype == object:
                raise ValueError(f"{path}: array {name!r} has dtype object")
            member = io.BytesIO()
            np.lib.format.write_array(member, value, allow_pickle=False)  # keeps 0-d shape
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_DATE)
            info.compress_type = method
            info.external_attr = 0o644 << 16
            zf.writestr(info, member.getvalue())
    return atomic_write_bytes(path, buf.getvalue())


def read_npz(path: PathLike, allow_nonfinite: bool = False) -> dict[str, np.ndarray]:
    """Read all arrays of an ``.npz`` file; errors name the file (missing, corrupt, NaN/Inf)."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path}: file not found")
    try:
        with np.load(path, allow_pickle=False) as z:
            out = {k: z[k] for k in z.files}
    except Exception as e:
        raise InputError(f"{path}: not a readable .npz file (corrupt or truncated?): {type(e).__name__}: {_one_line(e)}") from None
    if not allow_nonfinite:
        for k, v in out.items():
            if np.issubdtype(v.dtype, np.floating) and not np.all(np.isfinite(v)):
                raise InputError(f"{path}: array {k!r} holds NaN/Inf")
    return out


# ----------------------------------------------------------------------------------------
# datalists
# ----------------------------------------------------------------------------------------
def is_path_value(value: Any) -> bool:
    """True for a datalist value naming a file (a string ending in one of PATH_SUFFIXES)."""
    return isinstance(value, str) and value.lower().endswith(PATH_SUFFIXES)


def _entry_paths(entry: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(key, path) pairs of an entry's file-valued fields (strings or lists of strings)."""
    out = []
    for key, value in entry.items():
        values = value if isinstance(value, list) else [value]
        out.extend((key, v) for v in values if is_path_value(v))
    return out


def validate_datalist(
    datalist: Any, dataset_dir: PathLike, source: str | None = None, check_files: bool = True
) -> None:
    """Check a datalist: a dict with list(s) under ``training``/``validation``/``test``,
    each entry a dict; file-valued fields (names ending .nii.gz, .nii, .npz, ...) relative to
    ``dataset_dir``, inside it, and (``check_files``) existing. Raises InputError (a ValueError) naming
    ``source`` (the file) and the first problems found."""
    where = source or "datalist"
    dataset_dir = Path(dataset_dir)
    if not isinstance(datalist, dict):
        raise InputError(f"{where}: top level must be a JSON object, got {type(datalist).__name__}")
    present = [k for k in DATALIST_KEYS if k in datalist]
    if not present:
        raise InputError(f"{where}: none of the keys {list(DATALIST_KEYS)} found (keys: {sorted(datalist)})")
    problems: list[str] = []
    for key in present:
        entries = datalist[key]
        if not isinstance(entries, list):
            problems.append(f"{key!r} must be a list, got {type(entries).__name__}")
            continue
        for i, entry in enumerate(entries):
            at = f"{key}[{i}]"
            if not isinstance(entry, dict):
                problems.append(f"{at} must be an object, got {type(entry).__name__}")
                continue
            paths = _entry_paths(entry)
            if not paths:
                problems.append(f"{at} has no file path (values ending in {', '.join(PATH_SUFFIXES[:3])}, ...)")
            for field, rel in paths:
                p = Path(rel)
                if p.is_absolute():
                    problems.append(f"{at}.{field}: path {rel!r} must be relative to the dataset folder")
                elif ".." in p.parts:
                    problems.append(f"{at}.{field}: path {rel!r} leaves the dataset folder")
                elif check_files and not (dataset_dir / p).is_file():
                    problems.append(f"{at}.{field}: file {rel!r} not found in {dataset_dir}")
    if problems:
        more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
        raise InputError(f"{where}: " + "; ".join(problems[:10]) + more)


def write_datalist(path: PathLike, datalist: Mapping[str, Any], check_files: bool = True) -> Path:
    """Validate (paths relative to the file's folder) and write a datalist atomically."""
    path = Path(path)
    datalist = _json_ready(datalist)
    validate_datalist(datalist, path.parent, source=str(path), check_files=check_files)
    return write_json(path, datalist)


def read_datalist(path: PathLike, check_files: bool = True) -> dict[str, list[dict[str, Any]]]:
    """Read and validate a datalist (paths relative to its folder); the three keys
    ``training``/``validation``/``test`` are always present in the result."""
    path = Path(path)
    if path.is_dir():
        path = path / DATALIST_NAME
    datalist = read_json(path)
    validate_datalist(datalist, path.parent, source=str(path), check_files=check_files)
    return {**datalist, **{k: datalist.get(k, []) for k in DATALIST_KEYS}}


def load_datalist(dataset_dir: PathLike, key: str = "training", datalist_name: str = DATALIST_NAME) -> list[dict[str, Any]]:
    """Entries of ``dataset_dir/datalist.json`` under ``key`` with file paths made absolute
    (what MONAI datasets take). Raises ValueError for an unknown key."""
    if key not in DATALIST_KEYS:
        raise ValueError(f"key must be one of {list(DATALIST_KEYS)}, got {key!r}")
    dataset_dir = Path(dataset_dir).resolve()
    if not (dataset_dir / datalist_name).is_file():
        raise MissingFileError(
            f"{dataset_dir / datalist_name}: no datalist; give --dataset_dir DIR holding a {datalist_name} "
            "(python -m scripts make_dataset --out DIR writes one), or --input_image PATH to run inference on one study"
        )
    entries = read_datalist(dataset_dir / datalist_name)[key]
    out = []
    for entry in entries:
        new = dict(entry)
        for field, value in entry.items():
            if isinstance(value, list):
                new[field] = [str(dataset_dir / v) if is_path_value(v) else v for v in value]
            elif is_path_value(value):
                new[field] = str(dataset_dir / value)
        out.append(new)
    return out
