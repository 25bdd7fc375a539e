"""Command line of the repository (``python -m scripts <command>``, see ``__main__``).

Each bundle's own package (``bundles/<name>/<name>/``) is put on ``sys.path`` here, as the
bundle's configs do for themselves, so commands such as ``benchmark`` can import it by name.
"""

from common.simulation.datasets import add_bundle_paths

add_bundle_paths()
