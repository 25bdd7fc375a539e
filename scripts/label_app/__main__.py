"""``python -m scripts.label_app start_server ...``: MONAI Label's own command line (what the
``monailabel`` script runs) after the two import fixes of :mod:`scripts.label_app.lib.compat`
(pydicom 3; PyPI's CUDA torchvision beside a CPU torch). Arguments are MONAI Label's, e.g.::

    python -m scripts.label_app start_server --app scripts/label_app --studies DIR --host 127.0.0.1 --port 8000

The server runs in this process (MONAI Label's default of one worker), so the fixes hold for it.
``python -m scripts label_server`` prepares the app and the studies, then runs this.
"""

from __future__ import annotations

import sys

from scripts.label_app.lib.compat import apply


def main() -> None:
    apply()
    from monailabel.main import Main

    sys.argv[0] = "monailabel"
    Main().run()


if __name__ == "__main__":
    main()
