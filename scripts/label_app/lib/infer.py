"""MONAI Label's bundle infer task for bundles whose output is an image (HU, SUV, Bq/mL, Gy/s).

:class:`ImageBundleInferTask` is ``monailabel.tasks.infer.bundle.BundleInferTask`` (it reads the
bundle's ``network_def``, ``preprocessing``, ``inferer`` and ``postprocessing``, drops the bundle's
``SaveImaged`` and appends MONAI Label's ``Restored``) with four changes for image generation:

- type ``others`` and no labels: the stock task calls every bundle a segmentation and takes the
  output's ``channel_def`` for label names;
- the result is written as float32 NIfTI by nibabel, with the input's affine and no cast, whatever
  ``result_dtype`` a request asks for (an integer type would truncate HU, SUV or Gy/s);
- the bundle's per-study facts (``study_facts`` in ``inference.json``, e.g.
  ``dose_reduction_factor``, ``units``, ``weight_kg``, ``injected_Bq``) are request parameters
  with the config's defaults, shown in ``/info/`` so a client's options panel lists them;
- string-valued ``image_*`` entries of the request (MONAI Label's ``image_path``) are hidden while
  the preprocessing runs: MONAI 1.6's ``Spacingd`` calls ``.update()`` on every ``image_*`` key.
"""

from __future__ import annotations

import logging
from typing import Any

from lib.bundles import NIFTI_EXTS, study_facts
from monailabel.interfaces.tasks.infer_v2 import InferType
from monailabel.tasks.infer.bundle import BundleInferTask
from monailabel.transform.writer import Writer

logger = logging.getLogger(__name__)

RESULT_DTYPE = "float32"


class ImageBundleInferTask(BundleInferTask):
    """A bundle whose ``pred`` is an image; see the module docstring.

    Args:
        path: the bundle folder (``<app>/model/<name>``).
        conf: the server's ``--conf`` pairs.
        kwargs: passed to ``BundleInferTask``.
    """

    def __init__(self, path: str, conf: dict[str, str], **kwargs: Any) -> None:
        self.facts: dict[str, str] = {}
        super().__init__(path, conf, type=InferType.OTHERS, **kwargs)
        self.labels = {}
        if not self.valid:
            return
        self.facts = study_facts(self.bundle_config.config)
        for param in self.facts:
            self._config[param] = self._default(param)

    def _default(self, param: str) -> Any:
        try:
            return self.bundle_config.get_parsed_content(param, instantiate=True) if param in self.bundle_config else None
        except Exception as e:  # noqa: BLE001 - an unparsable default is shown as none, the request must give it
            logger.warning(f"{self.bundle_path}: default of {param!r} not readable ({e}); clients must send it")
            return None

    def run_pre_transforms(self, data: dict[str, Any], transforms):
        for param, key in self.facts.items():
            if param != key and data.get(param) is not None:
                data[key] = data[param]
        hidden = {k: data.pop(k) for k in list(data) if k.startswith(f"{self.key_image}_") and isinstance(data[k], str)}
        try:
            data = super().run_pre_transforms(data, transforms)
        finally:
            data.update(hidden)
        return data

    def writer(self, data: dict[str, Any], extension: str | None = None, dtype: Any = None):
        data["result_dtype"] = RESULT_DTYPE
        ext = extension or data.get("result_extension") or ""
        path = str(data.get("image_path") or "")
        if ext not in NIFTI_EXTS:
            ext = next((e for e in NIFTI_EXTS if path.endswith(e)), ".nii.gz")
        data["result_extension"] = ext
        return Writer(label=self.output_label_key, json=self.output_json_key, nibabel=True)(data)
