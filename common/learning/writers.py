"""Image writers for MONAI's ``SaveImage``/``SaveImaged`` that never leave a half-written file
under the final name (DESIGN 7): each writes to a temporary name in the target folder (same
extension, so the backend picks the same format) and renames it into place with ``os.replace``.
A run killed mid-write leaves the old file (or none) and at most a ``.tmp-*`` file beside it.

Bundle configs pass them as ``SaveImaged``'s ``writer``; a string there is looked up as a dotted
path, so configs give the class itself::

    "writer": "$(@common, load_module('common.learning.writers'))[1].AtomicNibabelWriter"
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from monai.data import ITKWriter, NibabelWriter

__all__ = ["AtomicITKWriter", "AtomicNibabelWriter", "TMP_PREFIX", "temporary_name"]

TMP_PREFIX = ".tmp-"
_EXTENSIONS = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".png")


def temporary_name(path: str | os.PathLike) -> Path:
    """A new empty file beside ``path`` whose name ends like ``path`` (``.nii.gz`` ...)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ext = next((e for e in _EXTENSIONS if path.name.lower().endswith(e)), path.suffix)
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX + path.name[: len(path.name) - len(ext)] + ".", suffix=ext, dir=path.parent)
    os.close(fd)
    return Path(tmp)


class _AtomicWrite:
    def write(self, filename, verbose: bool = False, **kwargs):  # type: ignore[no-untyped-def]
        final = Path(filename)
        tmp = temporary_name(final)
        try:
            super().write(str(tmp), verbose=verbose, **kwargs)  # type: ignore[misc]
            os.chmod(tmp, 0o644)
            os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


class AtomicITKWriter(_AtomicWrite, ITKWriter):
    """MONAI's ``ITKWriter``, writing through a temporary name."""


class AtomicNibabelWriter(_AtomicWrite, NibabelWriter):
    """MONAI's ``NibabelWriter`` (``SaveImaged``'s first choice for NIfTI), writing through a temporary name."""
