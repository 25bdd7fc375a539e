"""``python -m scripts package [NAME ...] [--root DIR] [--dist DIR] [--zoo FILE]``: zip bundles for the zoo.

Writes ``<dist>/<name>_v<version>.zip`` holding one top-level ``<name>/`` folder: the bundle's shipped
files (:func:`scripts.verify.shipped_files`: no caches, ``data/``, ``eval/``, ``runs/``,
``models/checkpoints/``) plus ``<name>/common/``, a copy of the repository's ``common`` package, which
the bundle import idiom finds first through ``bundle_root``. The zip is deterministic: entries sorted,
dated 1980-01-01, permissions 0644, so packaging the same files twice gives the same sha256.

Each archive is recorded in ``model_zoo.json``, a JSON object::

    {"<name>": {"<version>": {"name", "version", "task", "description", "source", "sha256"}}}

``source`` is the archive's path relative to the folder of ``model_zoo.json`` when the archive lies
below it (``dist/<name>_v<version>.zip``), otherwise an absolute ``file://`` URL; ``download`` also
accepts ``http(s)://`` sources. The index is written to a temporary name and renamed.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import sys
import tempfile
import zipfile
from pathlib import Path

from scripts.verify import (
    BUNDLES_DIR,
    REPO_ROOT,
    load_json,
    read_metadata,
    shipped_files,
    show,
    verify_bundle,
)

DIST_DIR = REPO_ROOT / "dist"
ZOO_FILE = REPO_ROOT / "model_zoo.json"
COMMON_DIR = REPO_ROOT / "common"
ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # the earliest date zip can store: no build time leaks into the hash
ZIP_MODE = stat.S_IFREG | 0o644


def sha256sum(path: str | Path) -> str:
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, then rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def archive_members(bundle_dir: Path, name: str, common_dir: Path = COMMON_DIR) -> list[tuple[str, Path]]:
    """``(arcname, source file)`` pairs of a bundle's zip, sorted by arcname.

    Raises:
        ValueError: the bundle has its own ``common/`` (it would shadow the vendored copy).
    """
    if (bundle_dir / "common").exists():
        raise ValueError(f"{show(bundle_dir / 'common')}: a bundle must not hold its own common/; it is vendored when packaging")
    members = [(f"{name}/{rel.as_posix()}", bundle_dir / rel) for rel in shipped_files(bundle_dir)]
    members += [(f"{name}/common/{rel.as_posix()}", common_dir / rel) for rel in shipped_files(common_dir, skip_run_outputs=False)]
    return sorted(members)


def write_zip(members: list[tuple[str, Path]], zip_path: Path) -> None:
    """A deterministic zip of ``members`` at ``zip_path`` (written to a temporary name, then renamed)."""
    buffer = io.BytesIO()  # bundles are small (weights <= 10 MB): build in memory, write once
    with zipfile.ZipFile(buffer, "w") as zf:
        for arcname, src in members:
            info = zipfile.ZipInfo(arcname, date_time=ZIP_DATE)
            info.external_attr = ZIP_MODE << 16
            info.create_system = 3  # unix, whatever the packing machine, so the mode bits mean the same
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, src.read_bytes(), compresslevel=9)
    write_atomic(zip_path, buffer.getvalue())


def zoo_source(zip_path: Path, zoo_file: Path) -> str:
    """``source`` of an archive in the index: relative to the index's folder when below it, else ``file://``."""
    try:
        return zip_path.resolve().relative_to(zoo_file.resolve().parent).as_posix()
    except ValueError:
        return zip_path.resolve().as_uri()


def record(zoo_file: Path, entry: dict) -> None:
    """Add or replace ``entry`` (keys name, version, ...) in the index ``zoo_file``, atomically."""
    zoo = load_json(zoo_file) if zoo_file.exists() else {}
    if not isinstance(zoo, dict) or not all(isinstance(v, dict) for v in zoo.values()):
        raise ValueError(f"{show(zoo_file)}: expected an object of bundle names to objects of versions")
    versions = zoo.setdefault(entry["name"], {})
    old = versions.get(entry["version"])
    if old is not None and old.get("sha256") != entry["sha256"]:
        print(f"package: warning: {entry['name']} {entry['version']} changed (sha256 {old.get('sha256')} -> {entry['sha256']}); bump the version?")
    versions[entry["version"]] = entry
    write_atomic(zoo_file, (json.dumps(zoo, indent=2, sort_keys=True) + "\n").encode())


def package_bundle(
    bundle_dir: str | Path, dist: str | Path = DIST_DIR, zoo: str | Path = ZOO_FILE, common_dir: str | Path = COMMON_DIR
) -> dict:
    """Zip one bundle with a copy of ``common_dir`` into ``dist`` and record it in ``zoo``; returns the index entry.

    Raises:
        FileNotFoundError, ValueError: unreadable or invalid ``metadata.json``, a bundle ``common/``.
    """
    bundle_dir, dist, zoo = Path(bundle_dir), Path(dist), Path(zoo)
    meta = read_metadata(bundle_dir)
    name, version = bundle_dir.resolve().name, meta["version"]
    zip_path = dist / f"{name}_v{version}.zip"
    write_zip(archive_members(bundle_dir, name, Path(common_dir)), zip_path)
    entry = {
        "name": name,
        "version": version,
        "task": meta["task"],
        "description": meta["description"],
        "source": zoo_source(zip_path, zoo),
        "sha256": sha256sum(zip_path),
    }
    record(zoo, entry)
    return entry


def package(*names: str, root: str | None = None, dist: str | None = None, zoo: str | None = None, check: bool = True) -> None:
    """Package the named bundles under ``root`` (default: the repository's ``bundles/``), or all of them.

    Args:
        names: bundle folder names; none means every bundle under ``root``.
        root: folder of bundles.
        dist: output folder of the zips (default: the repository's ``dist/``).
        zoo: the index to update (default: the repository's ``model_zoo.json``).
        check: run ``verify`` on each bundle first and refuse to package one that fails.
    """
    root_dir = Path(root) if root is not None else BUNDLES_DIR
    known = sorted(p.name for p in root_dir.iterdir() if (p / "configs").is_dir()) if root_dir.is_dir() else []
    unknown = [n for n in map(str, names) if n not in known]
    if unknown:
        sys.exit(f"package: unknown bundle {', '.join(map(repr, unknown))} under {show(root_dir)} (known: {', '.join(known) or 'none'})")
    if not (names or known):
        print(f"package: no bundles under {show(root_dir)}; nothing to package")
        return
    for name in map(str, names or known):
        failures = verify_bundle(root_dir / name) if check else []
        try:
            if failures:
                raise ValueError("\n".join(failures) + f"\n{name}: fails verify; not packaged")
            entry = package_bundle(root_dir / name, dist or DIST_DIR, zoo or ZOO_FILE)
        except (FileNotFoundError, ValueError) as e:
            sys.exit(f"package: {e}")
        print(f"{name} {entry['version']}: {entry['source']} sha256 {entry['sha256']}")
