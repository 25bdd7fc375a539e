"""Command line of the repository (``python -m scripts <command>``, see ``__main__``).

Each bundle's own package (``bundles/<name>/<name>/``) is put on ``sys.path`` here, as the
bundle's configs do for themselves, so commands such as ``benchmark`` can import it by name.
"""

import sys
from pathlib import Path

BUNDLES_ROOT = Path(__file__).resolve().parents[1] / "bundles"
for _bundle in sorted(BUNDLES_ROOT.glob("*")):
    if (_bundle / _bundle.name / "__init__.py").is_file() and str(_bundle) not in sys.path:
        sys.path.append(str(_bundle))
