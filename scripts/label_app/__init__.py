"""MONAI Label app serving this repository's image-generation bundles (``python -m scripts label_server``).

``monailabel start_server --app scripts/label_app`` loads ``main.py`` from this folder; ``lib/`` holds
its parts. ``model/``, ``logs/`` and ``bin/`` are made at run time (git-ignored).
"""
