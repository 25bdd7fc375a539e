"""Parts of the MONAI Label app (imported as ``lib`` by MONAI Label, as in its sample apps)."""
