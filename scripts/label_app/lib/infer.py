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
  the preprocessing runs: MONAI 1.6's ``Spacingd`` calls ``.update()`` on every ``image_*`` key;
- a request runs the bundle as its command line runs one study: the config's ``input_image`` is the
  study's file (so ids that depend on it, e.g. ``datalist`` and ``input_root``, need no dataset
  folder, and a bundle that reads a sparse acquisition from ``--input_image`` reads it so here too);
- a bundle that loads a second image (``ct`` of ``dose_rate_prediction``,
  :func:`lib.bundles.extra_images`) gets it from the request parameter ``input_<key>``, a file the
  app has already found (``main.py``): it fills the item's ``<key>`` and the config's ``input_<key>``,
  as ``--input_ct`` does on the command line.

A bundle whose ``pred`` is written by a saver of its own (``SaveProjectionsd`` of
``spect_projection_completion``: NIfTI plus a JSON sidecar; :func:`lib.bundles.own_saver`) keeps
that saver: its ``output_dir`` is a folder of this task's own, the answer is the NIfTI the saver
wrote there (the bundle's own file, as its ``inference`` run writes it) and the JSON it wrote beside
it comes back in the response's params as ``sidecar``. One request at a time per bundle (the
config holds the request's study).
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import shutil
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from lib.bundles import NIFTI_EXTS, WEIGHTS, extra_images, own_saver, study_facts
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
        self.extra_images: dict[str, str] = {}
        self.saver: str | None = None
        self.output_dir: Path | None = None
        self._lock = threading.Lock()
        super().__init__(path, conf, type=InferType.OTHERS, **kwargs)
        self.labels = {}
        if not self.valid:
            return
        # MONAI Label offers every models/*.pt as a network; the dose bundle's VSV kernel is not one
        self._config["model_filename"] = [f for f in self._config.get("model_filename", []) if f in WEIGHTS]
        self.facts = study_facts(self.bundle_config.config)
        for param in self.facts:
            self._config[param] = self._default(param)
        self.extra_images = extra_images(self.bundle_config.config)
        for param in self.extra_images:
            self._config[param] = None  # listed in /info/; each request names its image
        self.saver = own_saver(self.bundle_config.config)
        if self.saver is not None:
            self.add_post_restore = False  # the answer is the saver's file, not pred
            self.output_dir = Path(tempfile.mkdtemp(prefix=f"nm_label_{Path(path).name}_"))
            atexit.register(shutil.rmtree, self.output_dir, ignore_errors=True)
            self.bundle_config["output_dir"] = str(self.output_dir)

    def _default(self, param: str) -> Any:
        try:
            return self.bundle_config.get_parsed_content(param, instantiate=True) if param in self.bundle_config else None
        except Exception as e:  # noqa: BLE001 - an unparsable default is shown as none, the request must give it
            logger.warning(f"{self.bundle_path}: default of {param!r} not readable ({e}); clients must send it")
            return None

    def __call__(self, request, callbacks=None):
        with self._lock:
            if self.output_dir is not None:  # what a failed request left
                shutil.rmtree(self.output_dir, ignore_errors=True)
                self.output_dir.mkdir(parents=True, exist_ok=True)
            return super().__call__(request, callbacks)

    def pre_transforms(self, data=None):
        d = data or {}
        inputs = {"input_image": d.get(self.key_image), **{p: d.get(p) for p in self.extra_images}}
        for config_id, path in inputs.items():
            if isinstance(path, str) and config_id in self.bundle_config and self.bundle_config[config_id] != path:
                self.bundle_config[config_id] = path  # re-parses the config on its next use
        try:
            return super().pre_transforms(data)
        finally:
            _drop_repeats()

    def post_transforms(self, data=None):
        try:
            return super().post_transforms(data)
        finally:
            _drop_repeats()

    def run_pre_transforms(self, data: dict[str, Any], transforms):
        for param, key in {**self.facts, **self.extra_images}.items():
            if param != key and data.get(param) is not None:
                data[key] = data[param]
        hidden = {k: data.pop(k) for k in list(data) if k.startswith(f"{self.key_image}_") and isinstance(data[k], str)}
        try:
            data = super().run_pre_transforms(data, transforms)
        finally:
            data.update(hidden)
        return data

    def writer(self, data: dict[str, Any], extension: str | None = None, dtype: Any = None):
        if self.output_dir is not None:
            return self._saved_answer()
        data["result_dtype"] = RESULT_DTYPE
        ext = extension or data.get("result_extension") or ""
        path = str(data.get("image_path") or "")
        if ext not in NIFTI_EXTS:
            ext = next((e for e in NIFTI_EXTS if path.endswith(e)), ".nii.gz")
        data["result_extension"] = ext
        return Writer(label=self.output_label_key, json=self.output_json_key, nibabel=True)(data)

    def _saved_answer(self) -> tuple[str, dict[str, Any]]:
        """The NIfTI the bundle's own saver wrote (moved out of ``output_dir``, so MONAI Label
        deletes it once sent) and ``{"sidecar": ...}``, the JSON it wrote beside it."""
        assert self.output_dir is not None
        written = sorted(p for p in self.output_dir.rglob("*") if p.is_file())
        images = [p for p in written if p.name.endswith(NIFTI_EXTS)]
        if len(images) != 1:
            raise RuntimeError(f"{self.saver} of {self.bundle_path} wrote {len(images)} NIfTI files (one expected): {written}")
        (image,) = images
        ext = next(e for e in NIFTI_EXTS if image.name.endswith(e))
        sidecar = image.with_name(image.name[: -len(ext)] + ".json")
        result: dict[str, Any] = {"file_name": image.name}
        if sidecar.is_file():
            result["sidecar"] = json.loads(sidecar.read_text())
        fd, answer = tempfile.mkstemp(suffix=ext)
        os.close(fd)
        shutil.move(str(image), answer)
        shutil.rmtree(self.output_dir, ignore_errors=True)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        return answer, result


def _drop_repeats() -> None:
    """Keep the first of repeated ``sys.path`` entries: each parse of a bundle config inserts the
    bundle root again (``bundle_syspath``), and the config is parsed again whenever a request
    brings another study."""
    seen: set[str] = set()
    sys.path[:] = [p for p in sys.path if not (p in seen or seen.add(p))]
