"""Piper's voice repository (rhasspy/piper-voices) as data, without I/O.

The repository has ``voices.json`` at its root: voice key (``de_DE-thorsten-medium``)
to its language, quality, speakers and ``files`` (path from the root to size and md5).
This module parses it, finds the voice a name means (or the names it probably meant),
plans which files make a voice and what they are called in the flat voices folder
(``KEY.onnx`` + ``KEY.onnx.json``, what the Piper engine loads), and checks a file's
size and digest against the catalogue. server.voices.piper_fetch does the downloading
and copying.
"""

from __future__ import annotations

import difflib
import re

import msgspec


class FetchError(Exception):
    """A voice could not be fetched; the message says which and why, for a person."""


class FileEntry(msgspec.Struct, frozen=True):
    size_bytes: int
    md5_digest: str


class Language(msgspec.Struct, frozen=True):
    code: str  # "de_DE"
    family: str = ""  # "de"
    region: str = ""
    name_native: str = ""
    name_english: str = ""
    country_english: str = ""


class VoiceEntry(msgspec.Struct, frozen=True):
    """One voice of ``voices.json`` (fields voxwire does not read are ignored)."""

    name: str
    language: Language
    quality: str
    files: dict[str, FileEntry]
    num_speakers: int = 1
    speaker_id_map: dict[str, int] = {}
    aliases: list[str] = []  # older names of the voice ("de-thorsten-low")


Catalog = dict[str, VoiceEntry]


class PlannedFile(msgspec.Struct, frozen=True):
    """One file to put into the voices folder."""

    source: str  # where it comes from: a path under the repository root, or a local path
    target: str  # its name in the voices folder
    size: int
    md5: str


# Voice keys become file names: letters, digits and _ . + - only, never a path.
_SAFE_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")
# The config is installed first: a model appears only once its config is beside it.
SUFFIXES = (".onnx.json", ".onnx")


def parse_catalog(data: bytes, where: str) -> Catalog:
    try:
        return msgspec.json.decode(data, type=Catalog)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise FetchError(f"{where} is not a Piper voices.json: {exc}") from None


def is_safe_key(key: str) -> bool:
    return _SAFE_KEY.fullmatch(key) is not None and ".." not in key


def resolve(catalog: Catalog, name: str) -> str:
    """The catalogue key ``name`` means: the key itself, an older alias, or the key
    spelt in other case. FetchError names it and suggests close keys when none."""
    if name in catalog:
        return name
    for key, entry in catalog.items():
        if name in entry.aliases:
            return key
    folded = {key.casefold(): key for key in catalog}
    if name.casefold() in folded:
        return folded[name.casefold()]
    near = suggestions(catalog, name)
    hint = f"; did you mean {', '.join(near)}?" if near else ""
    raise FetchError(f"unknown voice {name!r}{hint} (`voxwire voices list` shows every voice)")


def suggestions(catalog: Catalog, name: str, limit: int = 5) -> list[str]:
    """Keys that contain ``name`` (a speaker or a language: "thorsten", "de_DE"),
    then keys spelt like it."""
    needle = name.casefold()
    keys = sorted(catalog)
    containing = [k for k in keys if needle and needle in k.casefold()]
    close = difflib.get_close_matches(name, keys, n=limit, cutoff=0.6)
    ordered = list(dict.fromkeys(containing + close))
    return ordered[:limit]


def plan(key: str, entry: VoiceEntry) -> list[PlannedFile]:
    """The config and the model of voice ``key``, config first, under their flat names."""
    if not is_safe_key(key):
        raise FetchError(f"voices.json names a voice {key!r} that cannot be a file name")
    out = []
    for suffix in SUFFIXES:
        found = [path for path in entry.files if path.endswith(suffix)]
        if len(found) != 1:
            raise FetchError(f"voices.json lists {len(found)} {suffix} files for {key}, not one")
        info = entry.files[found[0]]
        out.append(PlannedFile(found[0], key + suffix, info.size_bytes, info.md5_digest.lower()))
    return out


def mismatch(planned: PlannedFile, size: int, md5: str) -> str | None:
    """Why a file of ``size`` bytes and digest ``md5`` is not ``planned``'s, or None."""
    if size > planned.size:  # reading stopped there: ``md5`` is of a part of it
        return f"{planned.target} is larger than the {planned.size} bytes voices.json lists"
    if size != planned.size:
        return (
            f"{planned.target} has {size} bytes, voices.json lists {planned.size} "
            f"(md5 {md5}, expected {planned.md5})"
        )
    if md5.lower() != planned.md5:
        return f"{planned.target}: md5 {md5} does not match voices.json's {planned.md5}"
    return None


class _Audio(msgspec.Struct):
    sample_rate: int


class _PiperConfig(msgspec.Struct):
    audio: _Audio


def config_problem(data: bytes) -> str | None:
    """What keeps ``data`` from being a Piper voice config, or None."""
    try:
        cfg = msgspec.json.decode(data, type=_PiperConfig)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        return f"not a Piper voice config ({exc})"
    if cfg.audio.sample_rate <= 0:
        return "audio.sample_rate must be positive"
    return None


def speaks(entry: VoiceEntry, language: str) -> bool:
    """Whether the voice speaks ``language``: a family ("de") or a code ("de_DE", "de-DE")."""
    wanted = language.replace("-", "_").casefold()
    return wanted in (entry.language.code.casefold(), entry.language.family.casefold())


def listing(catalog: Catalog, language: str = "") -> list[str]:
    """Lines of a table of the catalogue's voices (those of ``language`` if given)."""
    rows = [("VOICE", "LANGUAGE", "", "QUALITY", "SPEAKERS", "MB")]
    rows += [
        _row(key, catalog[key])
        for key in sorted(catalog)
        if not language or speaks(catalog[key], language)
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]


def _row(key: str, entry: VoiceEntry) -> tuple[str, str, str, str, str, str]:
    lang = entry.language
    where = f"{lang.name_english} ({lang.country_english})" if lang.country_english else ""
    size = sum(f.size_bytes for path, f in entry.files.items() if path.endswith(SUFFIXES))
    return (key, lang.code, where, entry.quality, str(entry.num_speakers), f"{size / 1e6:.0f}")
