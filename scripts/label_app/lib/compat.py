"""Two import fixes that let MONAI Label 0.8.5 run in this repository's environment.

1. ``pydicom._storage_sopclass_uids`` (:func:`alias_pydicom_storage_uids`). MONAI Label's server
   imports ``pydicom_seg`` 0.4.1 (``monailabel.app`` -> ``endpoints.infer`` ->
   ``datastore.utils.convert``), which does ``from pydicom._storage_sopclass_uids import
   SegmentationStorage``. pydicom 3 moved those UIDs into ``pydicom.uid``, and the environment
   needs pydicom 3 (``pytomography`` 3.4, the benchmark peer, requires ``pydicom>=3.0.1``;
   ``dicomweb-client`` 0.61 and ``pynetdicom`` 3 use it too). So plain ``monailabel
   start_server`` fails here before any app loads (``No module named
   'pydicom._storage_sopclass_uids'``); ``python -m scripts.label_app start_server`` maps the old
   module name to ``pydicom.uid`` and then runs MONAI Label's own ``start_server``.

2. torchvision's operators (:func:`ensure_torchvision_imports`). PyPI's Linux wheels of
   torchvision are CUDA builds: beside the CPU wheel of torch their C extension
   (``torchvision/_C.so``) cannot load (it links ``libtorch_cuda.so``), torchvision goes on
   without its operators, and ``torchvision/_meta_registrations.py`` then fails with
   ``RuntimeError: operator torchvision::nms does not exist``. MONAI Label's
   ``monailabel.tasks.infer.bundle`` imports ``torchvision.utils``. When the extension does not
   load, the schemas of the two operators that ``_meta_registrations`` registers unconditionally
   (``nms``, ``qnms``) are defined without kernels, so the pure-Python part imports; nothing this
   app runs calls them. Where torchvision matches torch (a CUDA torch, or a CPU torchvision) the
   extension loads and nothing is defined.

Both are no-ops where they are not needed, and both run before MONAI Label imports anything.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

_OLD_UIDS = "pydicom._storage_sopclass_uids"
_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
_LIBRARY = None  # keeps the schema definitions alive


def alias_pydicom_storage_uids() -> str:
    """Make ``pydicom._storage_sopclass_uids`` importable; returns "present", "aliased" or "absent"."""
    if importlib.util.find_spec("pydicom") is None:
        return "absent"
    try:
        importlib.import_module(_OLD_UIDS)
        return "present"  # pydicom 2
    except ModuleNotFoundError:
        import pydicom.uid

        sys.modules[_OLD_UIDS] = pydicom.uid
        return "aliased"


def ensure_torchvision_imports() -> str:
    """Make ``import torchvision`` work; returns "imported", "absent", "registered", "extension"
    (its operators load) or "schemas" (defined here)."""
    global _LIBRARY
    if "torchvision" in sys.modules:
        return "imported"
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        return "absent"  # MONAI Label's own import error will name it
    if torch._C._jit_get_schemas_for_operator("torchvision::nms"):
        return "registered"  # by its extension or by an earlier call
    extension = next(iter(sorted(Path(spec.origin).parent.glob("_C.*"))), None)
    reason = "no _C extension"
    if extension is not None:
        try:
            torch.ops.load_library(str(extension))
            return "extension"
        except (OSError, RuntimeError) as e:
            reason = str(e).splitlines()[0]
    logger.info(f"torchvision's C extension does not load beside torch {torch.__version__} ({reason}); defining nms/qnms schemas")
    _LIBRARY = torch.library.Library("torchvision", "FRAGMENT")
    for schema in _SCHEMAS:
        _LIBRARY.define(schema)
    return "schemas"


def apply() -> dict[str, str]:
    """Both fixes; returns what each did."""
    return {"pydicom": alias_pydicom_storage_uids(), "torchvision": ensure_torchvision_imports()}
