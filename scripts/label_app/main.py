"""MONAI Label app: every image-generation bundle under ``model/`` served by its bundle infer task.

Start it with MONAI Label's ``start_server`` (``python -m scripts label_server`` links the bundles
and makes studies first; ``python -m scripts.label_app`` is the ``monailabel`` command after the
import fixes this environment needs, ``lib/compat.py``)::

    python -m scripts.label_app start_server --app scripts/label_app --studies STUDIES \\
        --host 127.0.0.1 --port 8000 [--conf models pet_nac_to_pct,pet_lowdose_denoising]

- Bundles are folders (or symbolic links) under ``<app>/model/``; ``--conf models a,b`` picks some,
  the default is all. Nothing is downloaded: no model-zoo listing, no SAM2 (the stock
  ``monaibundle`` app fetches both unless told not to).
- A bundle that is not image in, image out as NIfTI (``lib/bundles.py``) is skipped with its reason
  in the log and in ``/info/`` (``skipped``).
- ``POST /infer/<bundle>?image=<id>`` with ``params`` such as ``{"dose_reduction_factor": 10,
  "units": "SUV"}`` returns the generated image as float32 NIfTI on the input's grid and affine,
  in the bundle's output units (HU, SUV, Bq/mL, Gy/s) (``lib/infer.py``); a bundle with a saver of
  its own (``spect_projection_completion``: a sparse-view NIfTI plus its JSON sidecar in, all views
  out) answers with the file that saver writes and its sidecar in the params (``sidecar``).
- A bundle that takes a second image (``dose_rate_prediction``: activity as ``image``, the CT in
  HU as ``{"input_ct": "<study id or server-side path>"}``) gets it from that parameter.
- Client mistakes get 4xx with a reason (``lib/errors.py``).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from lib.compat import ensure_torchvision_imports

ensure_torchvision_imports()  # before monailabel.tasks.infer.bundle (a no-op after python -m scripts.label_app)

import monailabel
from lib.bundles import find_bundles
from lib.errors import CLIENT_ERRORS, client_error, install_params_handler
from lib.infer import ImageBundleInferTask
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.tasks.infer_v2 import InferTask

logger = logging.getLogger(__name__)


class NMImageGenerationApp(MONAILabelApp):
    """Serves the bundles under ``<app_dir>/model`` (``--conf models a,b`` to pick)."""

    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]) -> None:
        self.model_dir = os.path.join(app_dir, "model")
        served, self.skipped = find_bundles(self.model_dir)
        wanted = [m.strip() for m in conf.get("models", "").split(",") if m.strip()]
        unknown = [m for m in wanted if m not in served]
        if unknown:
            reasons = "; ".join(f"{m}: {self.skipped.get(m, 'not under ' + self.model_dir)}" for m in unknown)
            raise ValueError(f"--conf models names bundles this app cannot serve: {reasons}")
        self.bundles = {m: str(served[m]) for m in wanted} if wanted else {m: str(p) for m, p in served.items()}
        for name, reason in self.skipped.items():
            logger.warning(f"+++ Skipping bundle {name}: {reason}")
        install_params_handler()
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="NM image generation bundles",
            description="MONAI bundles generating PET/SPECT images (pseudo-CT, denoised PET, ...), served offline",
            version=monailabel.__version__,
        )

    def init_infers(self) -> dict[str, InferTask]:
        infers: dict[str, InferTask] = {}
        for name, path in self.bundles.items():
            task = ImageBundleInferTask(path, self.conf)
            if task.is_valid():
                logger.info(f"+++ Adding Inferer:: {name} => {path}")
                infers[name] = task
            else:
                self.skipped[name] = "MONAI Label's bundle task refused it (see the log above)"
        return infers

    def info(self) -> dict[str, Any]:
        meta = super().info()
        meta["skipped"] = dict(self.skipped)
        return meta

    def infer(self, request: dict[str, Any], datastore=None) -> dict[str, Any]:
        model = request.get("model")
        if model not in self._infers:
            raise client_error(404, f"unknown model {model!r}; this server has {sorted(self._infers)}")
        self._image_file(request.get("image"), "image", datastore)
        images = {}
        for param, key in self._infers[model].extra_images.items():
            if not isinstance(request.get(param), str) or not request[param]:
                message = f"{model} takes a second image, {key}: give its study id or server-side path as params {param!r}"
                raise client_error(422, message)
            images[param] = self._image_file(request[param], param, datastore)
        try:
            return super().infer({**request, **images}, datastore)
        except CLIENT_ERRORS as e:
            raise client_error(422, f"{model}: {str(e).strip()}") from e

    def _image_file(self, image: Any, what: str, datastore=None) -> Any:
        """The file of a request's image named by study id or server-side path (404 when neither);
        anything else (an uploaded image) as it is."""
        if not isinstance(image, str) or os.path.exists(image):
            return image
        path = (datastore or self.datastore()).get_image_uri(image)
        if not path:
            raise client_error(404, f"unknown {what} {image!r}: no such study in {self.studies}")
        return path
