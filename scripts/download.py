"""``python -m scripts download NAME [--version V] [--dest DIR] [--zoo FILE] [--replace]``.

Installs a packaged bundle listed in ``model_zoo.json`` (see ``scripts.package`` for its format) as
``DIR/<name>/``, the layout ``monai.bundle.download`` produces, so ``monai.bundle.load(name,
bundle_dir=DIR)`` and ``python -m monai.bundle run ... --bundle_root DIR/<name>`` work on it offline.

Unlike ``monai.bundle.download`` it never silently reuses what is there: the archive's sha256 is checked
against the index (``monai.apps.utils.download_url``) before anything is unpacked; archive entries that
are absolute, contain ``..``, are links, or lie outside the top-level ``<name>/`` folder are refused; the
archive is unpacked into a fresh temporary folder in DIR and renamed to ``DIR/<name>`` only when
complete; an existing ``DIR/<name>`` is kept unless ``--replace`` is given.

A fresh clone holds no ``dist/`` (zips are build outputs, git-ignored). When an entry's source is a
path inside the repository that is missing, the archive is rebuilt (:func:`rebuild_archive`): from
the working tree when it holds that version and packs to the recorded sha256, else from the git
commit that recorded the sha256 in ``model_zoo.json`` (``git archive`` of ``bundles/<name>`` and
``common`` there, packed by ``scripts.package``, which is deterministic). The sha256 check is the same
either way, so a rebuilt archive is byte for byte the one that was recorded.
"""

from __future__ import annotations

import io
import stat
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

import torch
from monai.apps.utils import HashCheckError, download_url, extractall

from scripts.package import ZOO_FILE, archive_members, sha256sum, write_zip
from scripts.verify import load_json, show, version_key


class HashMismatchError(ValueError):
    """The downloaded archive's sha256 differs from the one recorded in the index."""


def default_dest() -> Path:
    """The folder ``monai.bundle.download``/``load`` use when given no ``bundle_dir``."""
    return Path(torch.hub.get_dir()) / "bundle"


def zoo_entry(zoo_file: str | Path, name: str, version: str | None = None) -> dict:
    """The index entry of ``name`` at ``version`` (newest when None).

    Raises:
        FileNotFoundError, ValueError: missing or invalid index; unknown name or version (the message
            lists the known ones).
    """
    zoo_file = Path(zoo_file)
    zoo = load_json(zoo_file)
    if not isinstance(zoo, dict):
        raise ValueError(f"{show(zoo_file)}: expected an object of bundle names, got a {type(zoo).__name__}")
    if name not in zoo:
        raise ValueError(f"{show(zoo_file)}: unknown bundle {name!r} (known: {', '.join(sorted(zoo)) or 'none'})")
    versions = zoo[name]
    if version is None:
        version = max(versions, key=version_key)
    if version not in versions:
        known = ", ".join(sorted(versions, key=version_key))
        raise ValueError(f"{show(zoo_file)}: bundle {name!r} has no version {version!r} (known: {known})")
    entry = versions[version]
    for key in ("version", "source", "sha256"):
        if not isinstance(entry.get(key), str):
            raise ValueError(f"{show(zoo_file)}: {name}.{version}.{key}: missing or not a string")
    return entry


def source_url(source: str, zoo_file: str | Path) -> str:
    """A URL for ``download_url``: URLs pass through; paths (relative ones to the index's folder) become ``file://``."""
    if urlparse(source).scheme in ("file", "http", "https"):
        return source
    path = Path(source)
    if not path.is_absolute():
        path = Path(zoo_file).resolve().parent / path
    return path.resolve().as_uri()


def _pack(bundle_dir: Path, common_dir: Path, name: str, out: Path, sha256: str) -> bool:
    """Pack ``bundle_dir`` with ``common_dir`` as ``scripts.package`` does; whether it matches ``sha256``."""
    if not (bundle_dir / "configs").is_dir() or not common_dir.is_dir():
        return False
    write_zip(archive_members(bundle_dir, name, common_dir), out)
    return sha256sum(out) == sha256


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, timeout=120)


def rebuild_archive(entry: dict, zoo_file: str | Path, name: str, out: Path) -> str:
    """Rebuild the missing repository-local archive of index entry ``entry`` at ``out``; returns where
    it came from (``"working tree"`` or ``"commit <sha>"``).

    Tries the working tree (when its ``bundles/<name>`` has the entry's version), then every commit
    whose ``model_zoo.json`` gained the entry's sha256 (``git log -S``), newest first; keeps the first
    archive whose sha256 matches.

    Raises:
        ValueError: nothing in this checkout packs to the recorded sha256 (the message says what to do).
    """
    zoo_file = Path(zoo_file).resolve()
    repo, sha = zoo_file.parent, entry["sha256"]
    bundle, common = repo / "bundles" / name, repo / "common"
    try:
        here = load_json(bundle / "configs" / "metadata.json").get("version")
    except (FileNotFoundError, ValueError, AttributeError):
        here = None
    if here == entry["version"] and _pack(bundle, common, name, out, sha):
        return "working tree"
    try:
        log = _git(repo, "log", "--format=%H", f"-S{sha}", "--", zoo_file.name)
    except (OSError, subprocess.TimeoutExpired):
        log = None
    commits = log.stdout.decode().split() if log is not None and log.returncode == 0 else []
    for commit in commits:
        tar = _git(repo, "archive", "--format=tar", commit, f"bundles/{name}", "common")
        if tar.returncode != 0:
            continue
        with tempfile.TemporaryDirectory(prefix=f".{name}-{commit[:12]}-") as tree:
            with tarfile.open(fileobj=io.BytesIO(tar.stdout)) as tf:
                try:
                    tf.extractall(tree, filter="data")
                except TypeError:  # Python < 3.10.12 / 3.11.4: no extraction filters (git archive holds no links)
                    tf.extractall(tree)
            if _pack(Path(tree) / "bundles" / name, Path(tree) / "common", name, out, sha):
                return f"commit {commit[:12]}"
    where = "its git history" if commits else "this checkout (no git history records it: a shallow clone or a copy without .git?)"
    raise ValueError(
        f"{entry['source']}: not in this checkout, and nothing in {where} packs to sha256 {sha}; run "
        f"`python -m scripts package {name}` in the checkout that recorded {name} {entry['version']}, "
        "or remove that entry from model_zoo.json"
    )


def local_source(source: str, zoo_file: str | Path) -> Path | None:
    """The file a ``source`` names inside the index's repository (relative path or ``file://`` URL
    below the index's folder), or None for other sources."""
    parsed = urlparse(source)
    if parsed.scheme in ("http", "https"):
        return None
    path = Path(parsed.path) if parsed.scheme == "file" else Path(source)
    root = Path(zoo_file).resolve().parent
    path = path if path.is_absolute() else root / path
    try:
        path.resolve().relative_to(root)
    except ValueError:
        return None
    return path


def check_members(zip_path: str | Path, name: str) -> None:
    """Refuse archives whose entries could write outside ``<name>/``.

    Raises:
        ValueError: an absolute, ``..``, link or outside-``<name>/`` entry, or no ``<name>/configs/metadata.json``.
    """
    try:
        with zipfile.ZipFile(zip_path) as zf:
            infos = zf.infolist()
    except zipfile.BadZipFile as e:
        raise ValueError(f"{show(zip_path)}: not a zip archive: {e}") from None
    for info in infos:
        member = info.filename
        parts = PurePosixPath(member.replace("\\", "/")).parts
        if member.startswith(("/", "\\")) or (len(member) > 1 and member[1] == ":"):
            problem = "is an absolute path"
        elif ".." in parts:
            problem = "contains '..'"
        elif stat.S_ISLNK(info.external_attr >> 16):
            problem = "is a symbolic link"
        elif not parts or parts[0] != name or len(parts) < 2:
            problem = f"is outside the bundle folder {name}/"
        else:
            continue
        raise ValueError(f"{show(zip_path)}: refusing archive entry {member!r}: it {problem}")
    if f"{name}/configs/metadata.json" not in {i.filename for i in infos}:
        raise ValueError(f"{show(zip_path)}: not a bundle archive: no {name}/configs/metadata.json")


def install_bundle(
    name: str, version: str | None = None, dest: str | Path | None = None, zoo: str | Path = ZOO_FILE, replace: bool = False
) -> Path:
    """Download, check and unpack bundle ``name`` into ``dest/<name>``; returns that folder.

    Raises:
        FileNotFoundError, ValueError: see :func:`zoo_entry`; :class:`HashMismatchError`; unsafe archive
            entries; ``dest/<name>`` exists and ``replace`` is False; the unpacked version differs from the index.
    """
    entry = zoo_entry(zoo, name, version)
    dest = Path(dest) if dest is not None else default_dest()
    target = dest / name
    if target.exists() and not replace:
        raise ValueError(f"{show(target)}: already exists ({_installed_version(target)}); pass --replace to overwrite it")
    dest.mkdir(parents=True, exist_ok=True)
    url = source_url(entry["source"], zoo)
    # A fresh folder beside the target, so the final rename stays on one file system.
    with tempfile.TemporaryDirectory(dir=dest, prefix=f".{name}-") as tmp:
        zip_path = Path(tmp) / f"{name}_v{entry['version']}.zip"
        local = local_source(entry["source"], zoo)
        if local is not None and not local.is_file():  # a fresh clone has no dist/: rebuild it
            rebuilt = Path(tmp) / "rebuilt" / local.name
            origin = rebuild_archive(entry, zoo, name, rebuilt)
            print(f"download: {show(local)} is not here; rebuilt it from the {origin}", file=sys.stderr)
            url = rebuilt.resolve().as_uri()
        try:
            download_url(url, zip_path, hash_val=entry["sha256"], hash_type="sha256", progress=False)
        except HashCheckError:
            raise HashMismatchError(
                f"{url}: sha256 does not match {show(zoo)} ({entry['sha256']}); refusing to unpack a corrupt or altered archive"
            ) from None
        except (OSError, RuntimeError) as e:  # MONAI re-raises urllib's errors as RuntimeError
            raise ValueError(f"{url}: download failed: {e}") from e
        if not zip_path.is_file():  # download_url swallows some permission errors
            raise ValueError(f"{url}: download failed: nothing written to {zip_path}")
        check_members(zip_path, name)
        unpacked = Path(tmp) / "unpacked"
        extractall(zip_path, unpacked, has_base=True)  # MONAI's own check of each member as well
        meta = load_json(unpacked / name / "configs" / "metadata.json")
        if meta.get("version") != entry["version"]:
            raise ValueError(f"{url}: archive holds version {meta.get('version')!r}, {show(zoo)} says {entry['version']!r}")
        if target.exists():
            old = Path(tmp) / "replaced"
            target.rename(old)
        (unpacked / name).rename(target)
    return target


def _installed_version(bundle_dir: Path) -> str:
    try:
        return f"version {load_json(bundle_dir / 'configs' / 'metadata.json').get('version')!r}"
    except (FileNotFoundError, ValueError, AttributeError):
        return "not a readable bundle"


def download(name: str, version: str | None = None, dest: str | None = None, zoo: str | None = None, replace: bool = False) -> str:
    """Install bundle ``name`` (newest version unless ``version``) from ``zoo`` into ``dest/<name>``.

    Args:
        name: bundle name, a key of the index.
        version: ``X.Y.Z``; the newest in the index when omitted.
        dest: parent folder of the installed bundle (default: MONAI's bundle folder, ``<torch hub>/bundle``).
        zoo: the index (default: the repository's ``model_zoo.json``).
        replace: replace an existing ``dest/<name>``.

    Returns:
        The installed bundle folder.
    """
    if version is not None and not isinstance(version, str):
        # fire turns "--version 1.0" into the float 1.0, and "1.10" into 1.1: refuse rather than guess
        sys.exit(f"download: --version {version!r}: give the version as X.Y.Z")
    try:
        target = install_bundle(str(name), version, dest, zoo or ZOO_FILE, replace=bool(replace))
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"download: {e}")
    return str(target)
