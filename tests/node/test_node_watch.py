"""Config directory polling: content hash, kubelet ConfigMap layout, and the asyncio watcher."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import shutil
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from nodelocaldns.node.watch import (
    ABSENT_DIGEST,
    DirectoryState,
    changed,
    digest_files,
    scan_directory,
    watch_directory,
)

INTERVAL = 0.02


class ConfigMapVolume:
    """A directory laid out like kubelet's ConfigMap volume, updated the way kubelet's AtomicWriter does."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.generation = 0
        path.mkdir(parents=True, exist_ok=True)

    def write(self, data: dict[str, str]) -> None:
        self.generation += 1
        payload = self.path / f"..2024_01_01_00_00_00.{self.generation:09d}"
        payload.mkdir()
        for key, value in data.items():
            (payload / key).write_text(value)
        data_link = self.path / "..data"
        old = os.readlink(data_link) if data_link.is_symlink() else None
        # New payload dir, then an atomic rename of a fresh symlink over ..data, then the key links.
        os.symlink(payload.name, self.path / "..data_tmp")
        os.replace(self.path / "..data_tmp", data_link)
        for key in data:
            link = self.path / key
            if not link.is_symlink():
                os.symlink(f"..data/{key}", link)
        for entry in self.path.iterdir():
            if entry.is_symlink() and not entry.name.startswith(".") and entry.name not in data:
                entry.unlink()
        if old is not None:
            shutil.rmtree(self.path / old)


# --- pure core -----------------------------------------------------------------------------------------


def test_digest_is_kube_dns_version_string() -> None:
    files = [("upstreamNameservers", b'["198.18.0.53"]'), ("stubDomains", b"{}")]
    # kube-dns hashes name NUL content NUL per file, in lexical (filepath.Walk) order.
    expected = hashlib.sha256(b'stubDomains\0{}\0upstreamNameservers\0["198.18.0.53"]\0').hexdigest()
    assert digest_files(files) == expected
    assert digest_files(reversed(files)) == expected


def test_digest_of_nothing_is_empty() -> None:
    assert digest_files([]) == ""


def test_digest_separates_name_and_content() -> None:
    assert digest_files([("ab", b"c")]) != digest_files([("a", b"bc")])
    assert digest_files([("a", b"")]) != digest_files([])


@pytest.mark.parametrize(
    ("prev", "new", "expected"),
    [
        (None, "", True),
        (None, "abc", True),
        (None, ABSENT_DIGEST, True),
        ("abc", "abc", False),
        ("", "", False),
        ("abc", "abd", True),
        ("", ABSENT_DIGEST, True),
    ],
)
def test_changed(prev: str | None, new: str, expected: bool) -> None:
    assert changed(prev, new) is expected


def test_state_constructors() -> None:
    state = DirectoryState.of("/d", [("b", b"2"), ("a", b"1")])
    assert state.files == (("a", b"1"), ("b", b"2"))
    assert state.exists and state.digest == digest_files([("a", b"1"), ("b", b"2")])
    assert state.text("b") == "2"
    assert state.text("c") is None
    absent = DirectoryState.absent("/d")
    assert (absent.exists, absent.files, absent.digest) == (False, (), ABSENT_DIGEST)


# --- scanning a real directory -------------------------------------------------------------------------


def test_scan_plain_directory(tmp_path: Path) -> None:
    (tmp_path / "Corefile.base").write_text(".:53 {}\n")
    (tmp_path / "notes").write_bytes(b"\x00\xff")
    (tmp_path / ".hidden").write_text("skipped")
    (tmp_path / "subdir").mkdir()
    (tmp_path / "subdir" / "nested").write_text("not recursed into")
    state = scan_directory(str(tmp_path))
    assert state.exists
    assert state.path == str(tmp_path)
    assert state.files == (("Corefile.base", b".:53 {}\n"), ("notes", b"\x00\xff"))


def test_scan_skips_special_files_and_dangling_links(tmp_path: Path) -> None:
    (tmp_path / "key").write_text("v")
    os.mkfifo(tmp_path / "fifo")  # reading it would block forever
    os.symlink("gone", tmp_path / "dangling")
    os.symlink("key", tmp_path / "alias")
    os.symlink(".", tmp_path / "dirlink")
    state = scan_directory(str(tmp_path))
    assert state.files == (("alias", b"v"), ("key", b"v"))


def test_scan_missing_directory_is_a_state(tmp_path: Path) -> None:
    assert scan_directory(str(tmp_path / "absent")) == DirectoryState.absent(str(tmp_path / "absent"))
    (tmp_path / "file").write_text("x")
    assert not scan_directory(str(tmp_path / "file")).exists


def test_scan_empty_directory(tmp_path: Path) -> None:
    state = scan_directory(str(tmp_path))
    assert (state.exists, state.files, state.digest) == (True, (), "")


def test_configmap_layout_is_transparent(tmp_path: Path) -> None:
    volume = ConfigMapVolume(tmp_path / "cm")
    volume.write({"stubDomains": '{"acme.local": ["198.18.0.53"]}', "upstreamNameservers": "[]"})
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "stubDomains").write_text('{"acme.local": ["198.18.0.53"]}')
    (plain / "upstreamNameservers").write_text("[]")
    cm_state = scan_directory(str(volume.path))
    assert [name for name, _ in cm_state.files] == ["stubDomains", "upstreamNameservers"]
    assert cm_state.digest == scan_directory(str(plain)).digest


def test_configmap_swap_changes_digest(tmp_path: Path) -> None:
    volume = ConfigMapVolume(tmp_path / "cm")
    volume.write({"Corefile.base": "v1"})
    first = scan_directory(str(volume.path))
    volume.write({"Corefile.base": "v2"})
    second = scan_directory(str(volume.path))
    assert second.files == (("Corefile.base", b"v2"),)
    assert changed(first.digest, second.digest)
    # Same content in a new payload dir (kubelet resync): no change.
    volume.write({"Corefile.base": "v2"})
    assert not changed(second.digest, scan_directory(str(volume.path)).digest)
    # A removed key disappears.
    volume.write({"other": "x"})
    assert scan_directory(str(volume.path)).files == (("other", b"x"),)


# --- the asyncio watcher -------------------------------------------------------------------------------


async def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(INTERVAL / 2)


async def quiet_ticks(n: int = 5) -> None:
    await asyncio.sleep(INTERVAL * n)


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), timeout=20))


def test_watch_reports_initial_state_once_then_changes(tmp_path: Path) -> None:
    volume = ConfigMapVolume(tmp_path / "cm")
    volume.write({"Corefile.base": "v1"})
    seen: list[DirectoryState] = []

    async def scenario() -> None:
        task = asyncio.create_task(watch_directory(str(volume.path), INTERVAL, seen.append))
        try:
            await wait_for(lambda: len(seen) == 1)
            await quiet_ticks()
            assert len(seen) == 1, "unchanged directory reported again"
            assert seen[0].files == (("Corefile.base", b"v1"),)

            volume.write({"Corefile.base": "v2"})
            await wait_for(lambda: len(seen) == 2)
            assert seen[1].files == (("Corefile.base", b"v2"),)

            volume.write({"Corefile.base": "v2"})  # new payload, same content
            await quiet_ticks()
            assert len(seen) == 2

            # Renamed away first: rmtree alone is not atomic, and a tick in between rightly
            # reports the directory as it then is (there, and empty).
            gone = tmp_path / "gone"
            volume.path.rename(gone)
            shutil.rmtree(gone)
            await wait_for(lambda: len(seen) == 3)
            assert not seen[2].exists

            await quiet_ticks()
            assert len(seen) == 3, "a vanished directory is reported once, not every tick"
            ConfigMapVolume(tmp_path / "cm").write({"Corefile.base": "v3"})
            await wait_for(lambda: len(seen) == 4)
            assert seen[3].files == (("Corefile.base", b"v3"),)
            assert not task.done()
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    run(scenario)


def test_watch_plain_file_edit(tmp_path: Path) -> None:
    base = tmp_path / "Corefile.base"
    base.write_text("a")
    seen: list[str] = []

    async def scenario() -> None:
        task = asyncio.create_task(watch_directory(str(tmp_path), INTERVAL, lambda s: seen.append(s.digest)))
        try:
            await wait_for(lambda: len(seen) == 1)
            base.write_text("b")
            await wait_for(lambda: len(seen) == 2)
            (tmp_path / ".swp").write_text("editor junk")
            await quiet_ticks()
            assert len(seen) == 2
            assert seen[0] != seen[1]
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    run(scenario)


def test_watch_missing_directory_from_the_start(tmp_path: Path) -> None:
    seen: list[DirectoryState] = []

    async def scenario() -> None:
        task = asyncio.create_task(watch_directory(str(tmp_path / "later"), INTERVAL, seen.append))
        try:
            await wait_for(lambda: len(seen) == 1)
            assert not seen[0].exists
            (tmp_path / "later").mkdir()
            await wait_for(lambda: len(seen) == 2)
            assert seen[1].exists and seen[1].digest == ""
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    run(scenario)


def test_watch_async_callback(tmp_path: Path) -> None:
    (tmp_path / "k").write_text("1")
    seen: list[bytes] = []

    async def callback(state: DirectoryState) -> None:
        await asyncio.sleep(0)
        seen.append(state.files[0][1])

    async def scenario() -> None:
        task = asyncio.create_task(watch_directory(str(tmp_path), INTERVAL, callback))
        try:
            await wait_for(lambda: seen == [b"1"])
            (tmp_path / "k").write_text("2")
            await wait_for(lambda: seen == [b"1", b"2"])
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    run(scenario)


def test_watch_survives_a_failing_callback(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "stubDomains").write_text("{broken")
    calls: list[bytes] = []

    def callback(state: DirectoryState) -> None:
        calls.append(state.files[0][1])
        if state.files[0][1] == b"{broken":
            raise ValueError("bad ConfigMap")

    async def scenario() -> None:
        task = asyncio.create_task(watch_directory(str(tmp_path), INTERVAL, callback))
        try:
            await wait_for(lambda: len(calls) == 1)
            await quiet_ticks()
            # The bad snapshot counts as seen: not re-processed every tick.
            assert len(calls) == 1
            (tmp_path / "stubDomains").write_text("{}")
            await wait_for(lambda: len(calls) == 2)
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    with caplog.at_level(logging.ERROR, logger="nodelocaldns.node.watch"):
        run(scenario)
    assert any(r.exc_info and isinstance(r.exc_info[1], ValueError) for r in caplog.records)


def test_watch_retries_a_failing_scan(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "k").write_text("1")
    failures = [PermissionError("denied")]
    seen: list[DirectoryState] = []

    def flaky_scan(path: str) -> DirectoryState:
        if failures:
            raise failures.pop()
        return scan_directory(path)

    async def scenario() -> None:
        task = asyncio.create_task(watch_directory(str(tmp_path), INTERVAL, seen.append, scan=flaky_scan))
        try:
            await wait_for(lambda: len(seen) == 1)
            assert seen[0].files == (("k", b"1"),)
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    with caplog.at_level(logging.ERROR, logger="nodelocaldns.node.watch"):
        run(scenario)
    assert any(
        "Error loading config from" in r.getMessage() and "denied" in r.getMessage() for r in caplog.records
    )


@pytest.mark.parametrize("interval", [0, -1])
def test_watch_rejects_non_positive_interval(tmp_path: Path, interval: float) -> None:
    with pytest.raises(ValueError, match="positive"):
        run(lambda: watch_directory(str(tmp_path), interval, lambda _: None))
