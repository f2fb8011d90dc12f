"""Language → F5 checkpoint registry, loaded lazily with a bound on resident models.

The default checkpoint (settings ``f5_checkpoint`` / ``f5_model_config`` /
``f5_vocab``) speaks ``f5_languages``; a TOML file (``f5_registry``) adds more::

    [[model]]
    key = "fr"
    checkpoint = "/models/f5-french/model_last.pt"      # or hf://owner/repo/file
    vocab = "/models/f5-french/vocab.txt"
    config = "F5TTS_Base"                                # v0 architecture
    languages = ["fr"]

A model is loaded the first time a voice of one of its languages speaks; when more
than ``max_resident`` are loaded, the least recently used one is unloaded (the
default model counts like any other). Loading happens on the engine's device thread.
"""

from __future__ import annotations

import threading
import tomllib
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

import msgspec
import structlog

from server.engines.f5.checkpoints import ModelSpec

log = structlog.get_logger("voxwire.f5")

M = TypeVar("M")


class _RegistryFile(msgspec.Struct, forbid_unknown_fields=True):
    model: list[ModelSpec] = []


def read_registry(path: Path) -> list[ModelSpec]:
    """Entries of a registry TOML file; errors name the file and the bad field."""
    if not path.exists():
        raise FileNotFoundError(f"F5 registry file not found: {path} (setting f5_registry)")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
        specs = msgspec.convert(raw, _RegistryFile).model
    except (tomllib.TOMLDecodeError, msgspec.ValidationError) as exc:
        raise ValueError(f"{path}: {exc}") from None
    for s in specs:
        if not s.languages:
            raise ValueError(f"{path}: model {s.key!r} names no languages")
    return specs


class ModelRegistry(Generic[M]):
    def __init__(
        self,
        specs: list[ModelSpec],
        load: Callable[[ModelSpec], M],
        unload: Callable[[M], None],
        max_resident: int,
    ) -> None:
        if not specs:
            raise ValueError("the F5 registry is empty")
        self.specs = {s.key: s for s in specs}
        if len(self.specs) != len(specs):
            raise ValueError("two F5 registry entries share a key")
        self._by_lang: dict[str, str] = {}
        for s in specs:
            for lang in s.languages:
                # The first entry naming a language serves it.
                self._by_lang.setdefault(lang.lower(), s.key)
        self._load = load
        self._unload = unload
        self.max_resident = max(1, max_resident)
        self._resident: OrderedDict[str, M] = OrderedDict()
        self._lock = threading.Lock()
        self.loads = 0  # models loaded so far (for logs and tests)

    @property
    def languages(self) -> list[str]:
        return sorted(self._by_lang)

    def key_for(self, language: str) -> str | None:
        return self._by_lang.get(language.lower().split("-")[0])

    def resident(self) -> list[str]:
        with self._lock:
            return list(self._resident)

    def get(self, key: str) -> M:
        """The model of ``key``, loading it (and unloading the least recently used one
        beyond the bound) when needed. A failed load is not cached: the next call tries
        again, which is what the circuit breaker's probe relies on."""
        with self._lock:
            model = self._resident.get(key)
            if model is not None:
                self._resident.move_to_end(key)
                return model
            while len(self._resident) >= self.max_resident:
                old_key, old = self._resident.popitem(last=False)
                log.info("f5_model_unloaded", key=old_key)
                self._unload(old)
            model = self._load(self.specs[key])
            self.loads += 1
            self._resident[key] = model
            return model
