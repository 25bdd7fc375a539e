"""Errors a user can fix, and how a bundle run shows them: one line, last, once.

A failing input check deep inside ``python -m monai.bundle run`` reaches the user wrapped three
times (MONAI's ``applying transform ...`` and ``Failed to evaluate ConfigExpression`` RuntimeErrors
around it), logged twice on the way out (ignite's engine and MONAI's ``StatsHandler``) and printed
as a traceback of 200+ lines. :func:`install`, which every bundle config calls first in
``initialize``, replaces that with a single last line::

    error: /data/ct.nii.gz: NAC PET looks like a CT in HU: 91.2% of non-zero voxels are below -500 ...

for any exception whose cause chain (``__cause__`` / ``__context__``) holds a user error: a
:class:`UserError` (raised by input checks, with the file name and the fix in its message) or a
``FileNotFoundError``. Anything else (a bug) keeps its full traceback. The exit code stays 1.
``NM_DEBUG=1`` in the environment turns all of this off and shows every traceback and log line.

Stdlib only, so every module of ``common`` (and a bundle's own package) can raise these errors.
"""

from __future__ import annotations

import logging
import os
import sys
from types import TracebackType

__all__ = ["DEBUG_ENV", "UserError", "InputError", "MissingFileError", "user_error", "user_error_line", "install", "installed"]

#: Environment variable that keeps full tracebacks and error logs (``NM_DEBUG=1``).
DEBUG_ENV = "NM_DEBUG"


class UserError(Exception):
    """An error the user can fix: its message names the file or option and the fix."""


class InputError(UserError, ValueError):
    """Input the bundle cannot use (wrong kind of image, units, a value outside the trained range)."""


class MissingFileError(UserError, FileNotFoundError):
    """A file the user named (or the bundle needs) does not exist; the message says how to make it."""


def user_error(exc: BaseException | None) -> BaseException | None:
    """The outermost user error (:class:`UserError` or ``FileNotFoundError``) in ``exc``'s chain of
    ``__cause__`` / ``__context__``, or None."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, (UserError, FileNotFoundError)):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def _message(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return " ".join(text.split("\n"))  # one line, whatever the message holds


class _DropWhileHandlingUserError(logging.Filter):
    """Drop ERROR records emitted while a user error is being handled (ignite's "terminating due to
    exception", StatsHandler's traceback): the excepthook prints the one line that matters."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR:
            return True
        exc = record.exc_info[1] if record.exc_info else sys.exc_info()[1]
        return user_error(exc) is None


_FILTER = _DropWhileHandlingUserError()
_previous_hook = None


def user_error_line(exc: BaseException) -> str | None:
    """``"error: <message>"`` (one line) for an exception holding a user error, or None when it holds
    none or ``NM_DEBUG=1`` asks for tracebacks: what :func:`install`'s hook and ``python -m scripts`` print."""
    found = user_error(exc)
    if found is None or os.environ.get(DEBUG_ENV, "") not in ("", "0"):
        return None
    return f"error: {_message(found)}"


def _excepthook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    line = user_error_line(exc)
    if line is None:
        (_previous_hook or sys.__excepthook__)(exc_type, exc, tb)
        return
    sys.stdout.flush()
    print(line, file=sys.stderr, flush=True)


def installed() -> bool:
    """Whether :func:`install` is in effect in this process."""
    return sys.excepthook is _excepthook


def install() -> bool:
    """Show user errors as one ``error: <message>`` line (see the module docstring); returns whether
    it was installed (not with ``NM_DEBUG=1``). Idempotent; bundle configs call it first in
    ``initialize``."""
    global _previous_hook
    if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
        return False
    if not installed():
        _previous_hook = sys.excepthook
        sys.excepthook = _excepthook
    loggers = [logging.getLogger()]
    try:  # create the logger of MONAI's StatsHandler the way StatsHandler does, so its handler is filtered too
        import inspect

        from monai.apps.utils import get_logger
        from monai.handlers import StatsHandler

        loggers.append(get_logger(inspect.signature(StatsHandler).parameters["name"].default))
    except (ImportError, KeyError, TypeError):
        pass
    for logger in loggers:
        for handler in logger.handlers:
            if _FILTER not in handler.filters:
                handler.addFilter(_FILTER)
    return True
