"""Content-hash polling of a ConfigMap mount directory (node-cache's ``kubeFileSyncSource``).

kubelet updates a ConfigMap volume by writing a new hidden ``..<timestamp>`` directory and atomically
re-pointing the ``..data`` symlink; the visible key files are symlinks through ``..data``. Polling a
hash of the visible files (hidden entries skipped, symlinks followed, no recursion) sees every such
swap, works on any filesystem, and needs no inotify. The hash is kube-dns's: SHA-256 over
``name NUL content NUL`` for each file in name order, ``""`` when there are no files.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import logging
import os
import stat
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

log = logging.getLogger(__name__)

ABSENT_DIGEST = "absent"
"""Digest of a directory that does not exist (or is not a directory); distinct from an empty one."""


def digest_files(files: Iterable[tuple[str, bytes]]) -> str:
    """kube-dns's version string for a set of ``(name, content)`` files; ``""`` for no files."""
    hasher = hashlib.sha256()
    count = 0
    for name, content in sorted(files):
        hasher.update(name.encode("utf-8", "surrogateescape"))
        hasher.update(b"\0")
        hasher.update(content)
        hasher.update(b"\0")
        count += 1
    return hasher.hexdigest() if count else ""


@dataclass(frozen=True)
class DirectoryState:
    """One snapshot of a watched directory."""

    path: str
    """The directory that was scanned."""
    exists: bool
    """False when the directory is missing or is not a directory; ``files`` is then empty."""
    files: tuple[tuple[str, bytes], ...]
    """Visible regular files (after following symlinks) as ``(name, content)``, sorted by name."""
    digest: str
    """:func:`digest_files` of ``files``, or :data:`ABSENT_DIGEST` when the directory is missing."""
    dirs: tuple[str, ...] = ()
    """Visible subdirectories (not part of the digest): lets an error say "is a directory"."""

    @classmethod
    def absent(cls, path: str) -> DirectoryState:
        return cls(path=path, exists=False, files=(), digest=ABSENT_DIGEST)

    @classmethod
    def of(cls, path: str, files: Iterable[tuple[str, bytes]], dirs: Iterable[str] = ()) -> DirectoryState:
        ordered = tuple(sorted(files))
        return cls(
            path=path, exists=True, files=ordered, digest=digest_files(ordered), dirs=tuple(sorted(dirs))
        )

    def text(self, name: str) -> str | None:
        """The content of file ``name`` as UTF-8 text, or None if there is no such file."""
        for file_name, content in self.files:
            if file_name == name:
                return content.decode("utf-8")
        return None


def changed(prev_digest: str | None, new_digest: str) -> bool:
    """Whether a new snapshot must be reported; ``None`` means nothing was reported yet."""
    return prev_digest is None or prev_digest != new_digest


def scan_directory(path: str) -> DirectoryState:
    """Read the visible regular files directly in ``path``.

    Entries whose name starts with ``.`` (kubelet's ``..data`` and ``..<timestamp>``), directories,
    dangling symlinks (a key being removed mid-swap) and special files (a FIFO would block the read)
    are skipped. Raises OSError only for unexpected read failures such as permissions.
    """
    try:
        names = sorted(os.listdir(path))
    except (FileNotFoundError, NotADirectoryError):
        return DirectoryState.absent(path)
    files = []
    dirs = []
    for name in names:
        if name.startswith("."):
            continue
        full = os.path.join(path, name)
        try:
            mode = os.stat(full).st_mode
            if stat.S_ISDIR(mode):
                dirs.append(name)
            if not stat.S_ISREG(mode):
                continue
            with open(full, "rb") as fh:
                files.append((name, fh.read()))
        except FileNotFoundError:
            continue
    return DirectoryState.of(path, files, dirs)


StateCallback = Callable[[DirectoryState], Awaitable[None] | None]


async def watch_directory(
    path: str,
    interval: float,
    callback: StateCallback,
    *,
    scan: Callable[[str], DirectoryState] = scan_directory,
) -> None:
    """Poll ``path`` every ``interval`` seconds and call ``callback(state)`` when its digest changes.

    The first scan is always reported. A failing scan is logged and retried on the next tick; a failing
    callback is logged and its snapshot still counts as seen, as node-cache does, so one bad ConfigMap
    is not re-processed (and re-logged) every tick. Runs until cancelled.
    """
    if interval <= 0:
        raise ValueError(f"watch interval must be positive, got {interval}")
    last: str | None = None
    while True:
        try:
            state = await asyncio.to_thread(scan, path)
        except OSError as exc:
            log.error("Error loading config from %s: %s", path, exc)
        else:
            if changed(last, state.digest):
                last = state.digest
                try:
                    result = callback(state)
                    if inspect.isawaitable(result):
                        await result
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("Handling a change of %s failed", path)
        await asyncio.sleep(interval)
