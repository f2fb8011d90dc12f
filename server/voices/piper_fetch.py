"""Getting Piper voices into the voices folder (``voxwire voices fetch``): from Piper's
voice repository or a mirror of it over HTTP, or copied from a local folder
(``--offline``, for machines without a network).

Every file goes to ``NAME.part`` first and is renamed into place (atomic on one file
system) only once its size and md5 match the catalogue, so nothing half-written or
unverified ever carries a name the server loads. The config is renamed before the
model: the engine picks up a model only when its config is beside it. A ``.part`` left
by a broken transfer is continued with an HTTP Range request; a server that ignores
Range (200, or 416) gets the file from its start again. A file whose digest is wrong
is deleted.

HTTP client: the standard library's urllib. A download is a handful of sequential
GETs, so an async or pooled client (httpx is only a test dependency here) would add
a dependency and buy nothing; urllib follows redirects (Hugging Face sends the
files from a CDN), keeps the Range header across them, and takes a socket timeout.
The progress bar (server.voices.progress) is thirty lines of our own rather than
tqdm or rich, for the same reason.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import http.client
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO, NamedTuple

import msgspec

from server.voices.piper_catalog import (
    SUFFIXES,
    Catalog,
    FetchError,
    PlannedFile,
    config_problem,
    is_safe_key,
    mismatch,
    parse_catalog,
    plan,
    resolve,
)
from server.voices.progress import Progress

_CHUNK = 1 << 20
_AGENT = "voxwire-voices-fetch/1"
_MAX_CATALOG = 64 << 20  # voices.json is about 1 MB; anything far larger is not one
_CONTENT_RANGE = re.compile(r"bytes (\d+)-")
# what a broken connection raises while a body is read
_NETWORK_ERRORS = (OSError, http.client.HTTPException)


class Opened(NamedTuple):
    """A file's bytes from ``start`` on, being read from ``where`` (a URL or a path)."""

    stream: BinaryIO
    start: int
    end: int | None  # where the stream says it ends (Content-Length), if it says
    where: str


Source = Callable[[PlannedFile, int], Opened]


def _md5() -> hashlib._Hash:
    return hashlib.md5(usedforsecurity=False)  # the catalogue's digest, not a security check


class HttpSource:
    """Files of a voice repository (``voices.json`` at ``base_url``)."""

    def __init__(self, base_url: str, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def url(self, path: str) -> str:
        return f"{self.base_url}/{urllib.parse.quote(path)}"

    def catalog(self) -> Catalog:
        opened = self.get(self.url("voices.json"))
        with contextlib.closing(opened.stream):
            try:
                data = opened.stream.read(_MAX_CATALOG + 1)
            except _NETWORK_ERRORS as exc:
                raise FetchError(f"reading {opened.where} failed: {exc}") from None
        return parse_catalog(data, opened.where)

    def __call__(self, planned: PlannedFile, offset: int) -> Opened:
        return self.get(self.url(planned.source), offset)

    def get(self, url: str, offset: int = 0) -> Opened:
        """``url`` from byte ``offset`` if the server honours Range, else from 0."""
        headers = {"User-Agent": _AGENT}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        request = urllib.request.Request(url, headers=headers)
        try:
            response = urllib.request.urlopen(request, timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code == 416 and offset:  # our .part is not a prefix of its file
                return self.get(url, 0)
            raise FetchError(f"HTTP {exc.code} {exc.reason} from {url}") from None
        except urllib.error.URLError as exc:
            raise FetchError(f"cannot reach {url}: {exc.reason}") from None
        except _NETWORK_ERRORS as exc:
            raise FetchError(f"cannot reach {url}: {exc}") from None
        start = _start_of(response, offset)
        if start is None:  # a 206 for some other range than we asked: ask for it all
            response.close()
            return self.get(url, 0)
        length = response.headers.get("Content-Length", "")
        end = start + int(length) if length.isdigit() else None
        return Opened(response, start, end, url)


def _start_of(response: http.client.HTTPResponse, offset: int) -> int | None:
    """Where the body starts: ``offset`` for a 206 of our range, 0 for a whole file
    (a 200: the server ignored Range), None for a 206 of another range."""
    if getattr(response, "status", None) != 206:
        return 0
    found = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
    return offset if found and int(found.group(1)) == offset else None


def local_source(planned: PlannedFile, offset: int) -> Opened:
    """A local file (``planned.source`` is its path), always whole: copying it again
    costs less than a resume's care."""
    try:
        stream = open(planned.source, "rb")  # noqa: SIM115 (the caller closes it)
    except OSError as exc:
        raise FetchError(f"cannot read {planned.source}: {exc.strerror}") from None
    return Opened(stream, 0, os.fstat(stream.fileno()).st_size, planned.source)


class Installer:
    """Puts verified files into the voices folder ``dest``."""

    def __init__(self, dest: Path, progress: Progress) -> None:
        self.dest = dest
        self.progress = progress

    def install(self, key: str, files: Sequence[PlannedFile], source: Source) -> bool:
        """Voice ``key``'s files, unless all are there already (then False)."""
        try:
            self.dest.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise FetchError(f"cannot create voices folder {self.dest}: {exc.strerror}") from None
        todo = [f for f in files if not self._present(f)]
        if not todo:
            self.progress.note(f"{key}: already in {self.dest}, skipped")
            return False
        parts = [self._receive(f, source) for f in todo]
        for planned, part in zip(todo, parts, strict=True):  # config first
            final = self.dest / planned.target
            try:
                os.replace(part, final)
            except OSError as exc:
                raise FetchError(f"cannot rename {part} to {final}: {exc.strerror}") from None
        self.progress.note(f"{key}: installed in {self.dest}")
        return True

    def _present(self, planned: PlannedFile) -> bool:
        final = self.dest / planned.target
        if not final.is_file():
            return False
        size = final.stat().st_size
        problem = mismatch(planned, size, _digest_of(final, size).hexdigest())
        if problem:
            self.progress.note(f"{final} is not the listed file ({problem}); replacing it")
        return problem is None

    def _receive(self, planned: PlannedFile, source: Source) -> Path:
        """``planned`` in its verified ``.part`` file."""
        part = self.dest / (planned.target + ".part")
        kept = part.stat().st_size if part.is_file() else 0
        if kept > planned.size:
            _unlink(part)
            kept = 0
        have, digest, where = self._fill(part, planned, source, kept)
        problem = mismatch(planned, have, digest.hexdigest())
        if problem and kept:  # the old .part may be what is wrong: once more, whole
            _unlink(part)
            self.progress.note(f"{part} did not check out; getting the whole file again")
            have, digest, where = self._fill(part, planned, source, 0)
            problem = mismatch(planned, have, digest.hexdigest())
        if problem:
            _unlink(part)
            raise FetchError(f"{problem}; got it from {where} and deleted it")
        return part

    def _fill(
        self, part: Path, planned: PlannedFile, source: Source, have: int
    ) -> tuple[int, hashlib._Hash, str]:
        """Completes ``part`` (``have`` bytes of it are there): its size, digest and
        where its bytes came from."""
        digest = _digest_of(part, have)
        if have >= planned.size:
            return have, digest, str(part)
        opened = source(planned, have)
        if opened.start != have:  # no resume: the whole file comes again
            have, digest = 0, _md5()
        return self._copy(opened, part, planned, have, digest), digest, opened.where

    def _copy(
        self, opened: Opened, part: Path, planned: PlannedFile, have: int, digest: hashlib._Hash
    ) -> int:
        """Appends ``opened`` to ``part`` (from ``have`` bytes on); the bytes it holds."""
        try:
            out = open(part, "ab" if have else "wb")  # noqa: SIM115 (closed by the with below)
        except OSError as exc:
            opened.stream.close()
            raise FetchError(f"cannot write {part}: {exc.strerror}") from None
        self.progress.start(planned.target, planned.size, have)
        with out, contextlib.closing(opened.stream):
            while have <= planned.size:  # more than listed: stop, the size check says so
                chunk = _read(opened, have, planned, part, self.progress)
                if not chunk:
                    break
                have += len(chunk)
                digest.update(chunk)
                _write(out, chunk, part, self.progress)
                self.progress.advance(len(chunk))
            _write(out, b"", part, self.progress)  # flush and fsync: on disk before the rename
        # short of what the server said it would send (and of what we need): a broken
        # transfer, worth resuming; past the listed size we stopped reading on purpose
        if opened.end is not None and have < min(opened.end, planned.size):
            self.progress.finish("interrupted")
            raise FetchError(
                f"{opened.where} ended after {have} of {planned.size} bytes; {part} is "
                "kept, run the command again to resume"
            )
        self.progress.finish()
        return have


def _read(opened: Opened, have: int, planned: PlannedFile, part: Path, progress: Progress) -> bytes:
    try:
        return opened.stream.read(_CHUNK)
    except _NETWORK_ERRORS as exc:
        progress.finish("interrupted")
        raise FetchError(
            f"reading {opened.where} failed after {have} of {planned.size} bytes ({exc}); "
            f"{part} is kept, run the command again to resume"
        ) from None


def _write(out: BinaryIO, chunk: bytes, part: Path, progress: Progress) -> None:
    try:
        if chunk:
            out.write(chunk)
        else:
            out.flush()
            os.fsync(out.fileno())
    except OSError as exc:
        progress.finish("failed")
        with contextlib.suppress(OSError):  # closing flushes again: it may fail the same way
            out.close()
        # a full disk: give the space back rather than keep a .part nobody can finish
        if exc.errno == errno.ENOSPC:
            _unlink(part)
            raise FetchError(f"no space left on the device writing {part}; deleted it") from None
        raise FetchError(f"cannot write {part}: {exc.strerror}") from None


def _digest_of(path: Path, size: int) -> hashlib._Hash:
    """The md5 of ``path``'s first ``size`` bytes."""
    digest = _md5()
    if not size:
        return digest
    try:
        with open(path, "rb") as f:
            while size > 0 and (chunk := f.read(min(_CHUNK, size))):
                digest.update(chunk)
                size -= len(chunk)
    except OSError as exc:
        raise FetchError(f"cannot read {path}: {exc.strerror}") from None
    return digest


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


# --------------------------------------------------------------------------- offline


def plan_offline(root: Path, name: str) -> tuple[str, list[PlannedFile]]:
    """Voice ``name``'s files under ``root``: as its ``voices.json`` lists them (in the
    repository's layout or flat) and checked against it; without one, ``NAME.onnx``
    and ``NAME.onnx.json`` anywhere under ``root``, the config checked as a Piper one."""
    index = root / "voices.json"
    if index.is_file():
        catalog = parse_catalog(_read_file(index), str(index))
        key = resolve(catalog, name)
        return key, [_listed(root, f) for f in plan(key, catalog[key])]
    if not is_safe_key(name):
        raise FetchError(f"{name!r} cannot be a voice's file name")
    return name, [_unlisted(root, name + suffix) for suffix in SUFFIXES]


def _listed(root: Path, planned: PlannedFile) -> PlannedFile:
    inside = root.resolve()
    for path in (root / planned.source, root / planned.target):
        if path.resolve().is_relative_to(inside) and path.is_file():
            return msgspec.structs.replace(planned, source=str(path))
    raise FetchError(f"{root} has neither {planned.source} nor {planned.target}")


def _unlisted(root: Path, target: str) -> PlannedFile:
    path = root / target
    if not path.is_file():
        path = next((p for p in sorted(root.rglob(target)) if p.is_file()), path)
    if not path.is_file():
        raise FetchError(f"{root} has no {target} (nor any in its subfolders)")
    data = _read_file(path) if target.endswith(".json") else b""
    problem = config_problem(data) if target.endswith(".json") else None
    if problem:
        raise FetchError(f"{path}: {problem}")
    size = path.stat().st_size
    if not size:
        raise FetchError(f"{path} is empty")
    return PlannedFile(str(path), target, size, _digest_of(path, size).hexdigest())


def _read_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise FetchError(f"cannot read {path}: {exc.strerror}") from None


# ------------------------------------------------------------------------------ API


def fetch(
    names: Sequence[str],
    dest: Path,
    base_url: str,
    timeout: float = 30.0,
    progress: Progress | None = None,
) -> list[str]:
    """Downloads voices ``names`` into ``dest``; their catalogue keys. Every name is
    looked up before anything is downloaded, so a typo costs no transfer."""
    source = HttpSource(base_url, timeout)
    catalog = source.catalog()
    keys = list(dict.fromkeys(resolve(catalog, name) for name in names))
    installer = Installer(dest, progress or Progress())
    for key in keys:
        installer.install(key, plan(key, catalog[key]), source)
    return keys


def copy_offline(
    names: Sequence[str], dest: Path, root: Path, progress: Progress | None = None
) -> list[str]:
    """Copies voices ``names`` from the local folder ``root`` into ``dest``."""
    if not root.is_dir():
        raise FetchError(f"{root} is not a folder")
    plans = dict(plan_offline(root, name) for name in names)
    installer = Installer(dest, progress or Progress())
    for key, files in plans.items():
        installer.install(key, files, local_source)
    return list(plans)
