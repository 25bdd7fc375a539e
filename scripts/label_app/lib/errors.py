"""HTTP answers for a client's mistakes: 4xx with a one-line reason instead of MONAI Label's 500.

Stock MONAI Label 0.8.5 answers an unknown model or image, a ``params`` field that is not a JSON
object and an image the model refuses all with HTTP 500 and a traceback in the log. This app:

- raises ``fastapi.HTTPException`` from its ``infer``: 404 for an unknown model or image, 422 for
  a request the bundle's own checks refuse (a dose reduction factor below 1, unknown units, a CT
  sent to the NAC model: the bundles raise ``ValueError`` naming the file);
- registers a 400 answer for a ``params`` field that is not a JSON object, which MONAI Label's
  endpoint parses (``json.loads``, ``dict.update``) before the app sees the request.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from fastapi import HTTPException
from fastapi.responses import JSONResponse

logger = logging.getLogger(__name__)

#: exceptions of the bundles' input checks and of reading a request's values (float("x"), units)
CLIENT_ERRORS = (ValueError, FileNotFoundError)
_ENDPOINT = ("endpoints", "infer.py")  # monailabel/endpoints/infer.py: run_inference parses params


def client_error(status: int, message: str) -> HTTPException:
    logger.info(f"HTTP {status}: {message}")
    return HTTPException(status_code=status, detail=message)


def _raised_by_params_parsing(exc: BaseException) -> bool:
    if isinstance(exc, json.JSONDecodeError):
        return True
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    code = tb.tb_frame.f_code if tb is not None else None
    return code is not None and code.co_name == "run_inference" and Path(code.co_filename).parts[-2:] == _ENDPOINT


async def _params_error(request, exc: Exception) -> JSONResponse:
    if not _raised_by_params_parsing(exc):
        raise exc  # anything else stays a server error (500, traceback in the log)
    message = f'params must be a JSON object, e.g. {{"units": "SUV"}}: {type(exc).__name__}: {exc}'
    logger.info(f"HTTP 400: {message}")
    return JSONResponse(status_code=400, content={"detail": message})


def install_params_handler() -> bool:
    """Register the 400 answer for a malformed ``params`` field on the running MONAI Label server.

    The app is built inside the server's startup, after Starlette built its middleware stack
    (which copies the exception handlers); dropping the stack makes Starlette rebuild it, with
    this handler, on the next request. Returns False outside a server (nothing to do)."""
    server = sys.modules.get("monailabel.app")
    api = getattr(server, "app", None)
    if api is None:
        return False
    for exc_class in (ValueError, TypeError):
        api.add_exception_handler(exc_class, _params_error)
    api.middleware_stack = None
    return True
