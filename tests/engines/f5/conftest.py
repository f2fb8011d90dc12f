"""F5 fixtures: a tiny random-weight checkpoint built with f5-tts's own classes, voices
cut from real speech (Piper), and one real server that loads them.

The checkpoint directory looks like a real one (safetensors with EMA keys, its own
vocab.txt, an f5-tts style config YAML; Vocos as config.yaml + pytorch_model.bin), and
the server is pointed at it with the same settings a user sets for a downloaded model,
so it loads through exactly the path a real checkpoint takes (offline: no hub).
"""

from __future__ import annotations

import functools
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from server.engines.base import Audio
from server.engines.f5.engine import F5Engine
from server.engines.f5.options import F5Options
from server.engines.piper import DEFAULT_VOICE, PiperEngine
from tests.support import ServerProcess
from tests.support import _env_value as env_value

ALICE_TEXT = (
    "The quick brown fox jumps over the lazy dog. "
    "A journey of a thousand miles begins with a single step."
)
HANS_TEXT = "Please call Stella and ask her to bring these things with her from the store."


@dataclass(frozen=True)
class F5Files:
    root: Path
    checkpoint: Path
    config: Path
    vocos: Path
    voices: Path
    registry: Path
    broken: Path  # the "de" model's checkpoint: corrupt until a test repairs it

    def settings(self) -> dict[str, object]:
        """VOXWIRE_F5_* settings for a server on these files."""
        return {
            "f5_enabled": True,
            "f5_checkpoint": self.checkpoint,
            "f5_model_config": self.config,
            "f5_vocos": self.vocos,
            "f5_offline": True,
            "f5_languages": "en",
            "f5_registry": self.registry,
            "f5_voices_dir": self.voices,
            "f5_nfe_steps": 4,
            "f5_seed": 7,
            "f5_cpu_threads": 1,
        }


@functools.cache
def _piper() -> PiperEngine:
    engine = PiperEngine()
    engine.load()
    return engine


def piper_speech(text: str) -> tuple[Audio, int]:
    """Real speech to clone: the bundled Piper voice reading ``text``."""
    engine = _piper()
    audio = np.concatenate(list(engine.synthesize(text, DEFAULT_VOICE, 1.0)))
    return audio, engine.sample_rate


def write_voice(folder: Path, vid: str, audio: Audio, rate: int, text: str) -> None:
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    sf.write(str(folder / f"{vid}.wav"), audio, rate, subtype="PCM_16")
    (folder / f"{vid}.txt").write_text(text + "\n", encoding="utf-8")


@pytest.fixture(scope="session")
def f5_files(tmp_path_factory: pytest.TempPathFactory) -> F5Files:
    from server.engines.f5.random_model import write_checkpoint, write_vocos

    root = tmp_path_factory.mktemp("f5")
    ckpt = write_checkpoint(root / "tiny")
    vocos = write_vocos(root / "vocos")
    voices = root / "voices"
    alice, rate = piper_speech(ALICE_TEXT)
    write_voice(voices, "alice", alice, rate, ALICE_TEXT)
    hans, rate = piper_speech(HANS_TEXT)
    write_voice(voices / "de", "hans", hans, rate, HANS_TEXT)
    # A second model, for German, whose checkpoint file is damaged (truncated): it is
    # loaded lazily, the first time a German voice speaks, and fails for real.
    broken = root / "broken" / "model.safetensors"
    broken.parent.mkdir()
    broken.write_bytes(ckpt.read_bytes()[:1000])
    shutil.copy(ckpt.parent / "vocab.txt", broken.parent / "vocab.txt")
    registry = root / "models.toml"
    registry.write_text(
        "[[model]]\n"
        'key = "de"\n'
        f'checkpoint = "{broken}"\n'
        f'config = "{ckpt.parent / "model.yaml"}"\n'
        'languages = ["de"]\n'
    )
    return F5Files(
        root=root,
        checkpoint=ckpt,
        config=ckpt.parent / "model.yaml",
        vocos=vocos,
        voices=voices,
        registry=registry,
        broken=broken,
    )


@pytest.fixture(scope="module")
def f5_server(f5_files: F5Files) -> Iterator[ServerProcess]:
    srv = ServerProcess(
        max_session_s=600,
        f5_max_batch=8,
        f5_breaker_failures=2,
        f5_breaker_cooldown_s=6.0,  # test_f5_stream.COOLDOWN_S
        **f5_files.settings(),
    )
    try:
        srv.wait_ready(timeout=180)
        yield srv
    finally:
        srv.stop()


def make_engine(files: F5Files, **overrides: object) -> F5Engine:
    """The engine on the tiny model, as the server builds it from those settings; in this
    process unless ``engine_isolation="process"`` is given (test_host.py)."""
    from server.config import load_settings

    settings = {**files.settings(), "engine_isolation": "thread", **overrides}
    env = {f"VOXWIRE_{k.upper()}": env_value(v) for k, v in settings.items()}
    engine = F5Engine(F5Options.from_settings(load_settings(env)))
    engine.load()
    return engine


@pytest.fixture(scope="session")
def f5_engine(f5_files: F5Files) -> F5Engine:
    return make_engine(f5_files)
