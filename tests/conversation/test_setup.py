"""Stream set-up: one set of rules for every protocol."""

from __future__ import annotations

import pytest

from server import protocol as p
from server.config import Settings
from server.conversation import setup
from server.conversation.ports import Worker
from server.engines.base import VoiceInfo
from tests.conversation.fakes import FakeEngine, RecordingWorker


def workers() -> dict[str, Worker]:
    return {
        "piper": RecordingWorker(FakeEngine("piper", 22050)),
        "f5": RecordingWorker(FakeEngine("f5", 24000), chunk_pcm=False),
    }


def refused(**kw: object) -> p.ProtocolError:
    args: dict[str, object] = {
        "engine": None,
        "voice": None,
        "language": None,
        "speed": 1.0,
        "output": p.OutputFormat(),
    }
    args.update(kw)
    with pytest.raises(p.ProtocolError) as e:
        setup.resolve(Settings(), workers(), **args)  # type: ignore[arg-type]
    return e.value


def test_default_voice_rule() -> None:
    s = Settings()
    w = workers()
    spec = setup.resolve(s, w, None, None, None, 1.0, p.OutputFormat())
    assert (spec.engine, spec.voice) == (s.engine, s.voice)  # the server's, on its engine
    spec = setup.resolve(s, w, "f5", None, None, 1.0, p.OutputFormat())
    assert (spec.engine, spec.voice) == ("f5", "f5-default")  # the engine's own elsewhere


def test_opus_output_gets_its_bitrate_and_pre_skip() -> None:
    spec = setup.resolve(Settings(), workers(), None, None, None, 1.0, p.OutputFormat())
    assert spec.output.bitrate is not None and spec.output.bitrate > 0
    assert spec.pre_skip == spec.pipeline.encoder.lookahead * 48000 // 48000 > 0
    assert spec.pipeline.engine_rate == 22050
    pcm = p.OutputFormat(encoding="pcm_s16le", sample_rate=16000)
    spec = setup.resolve(Settings(), workers(), None, None, None, 1.0, pcm)
    assert spec.pre_skip == 0 and spec.output.bitrate is None


def test_refusals_name_what_was_wrong() -> None:
    e = refused(engine="nope")
    assert e.code == "unknown_engine" and "available: f5, piper" in e.message
    e = refused(voice="nobody")
    assert e.code == "unknown_voice" and "'nobody'" in e.message
    e = refused(language="fr-FR")
    assert e.code == "unsupported_language" and "it speaks en" in e.message
    e = refused(output=p.OutputFormat(encoding="opus", sample_rate=44100))
    assert e.code == "out_of_range"


def test_uploaded_voices_are_never_listed_to_others() -> None:
    class WithUpload(FakeEngine):
        def voices(self) -> list[VoiceInfo]:
            up = VoiceInfo(
                id="v_AAAAAAAAAAAAAAAA",
                name="x",
                engine="piper",
                language="en",
                sample_rate=1,
                builtin=False,
            )
            return [*super().voices(), up]

    w: dict[str, Worker] = {"piper": RecordingWorker(WithUpload("piper"))}
    with pytest.raises(p.ProtocolError) as e:
        setup.resolve(Settings(), w, None, "nobody", None, 1.0, p.OutputFormat())
    assert "other" in e.value.message and "v_AAAA" not in e.value.message
    spec = setup.resolve(Settings(), w, None, "v_AAAAAAAAAAAAAAAA", None, 1.0, p.OutputFormat())
    assert spec.voice == "v_AAAAAAAAAAAAAAAA"  # usable once checked (ensure_voice) and loaded


def test_fallback_keeps_the_encoder_and_takes_the_default_voice() -> None:
    s = Settings(f5_fallback_engine="piper")
    w = workers()
    spec = setup.resolve(s, w, "f5", None, None, 1.25, p.OutputFormat())
    back = setup.fallback(s, w, spec)
    assert back is not None
    assert back.pipeline.encoder is spec.pipeline.encoder
    assert back.pipeline.engine_rate == 22050 and back.speed == 1.25
    assert (back.engine, back.voice, back.pre_skip) == ("piper", s.voice, spec.pre_skip)
    assert setup.fallback(s, w, back) is None  # the fallback engine has no fallback


def test_empty_engine_options_are_none_for_an_engine_that_takes_none() -> None:
    """``engine_options: {}`` names nothing: the engine (here one that declares no
    options, like the replay engine) is never handed an options argument."""
    w: dict[str, Worker] = {"piper": RecordingWorker(FakeEngine("piper"))}
    spec = setup.resolve(
        Settings(), w, None, None, None, 1.0, p.OutputFormat(), options=p.EngineOptions()
    )
    assert spec.options is None
    with pytest.raises(p.ProtocolError, match=r"engine_options\.seed"):
        setup.resolve(
            Settings(), w, None, None, None, 1.0, p.OutputFormat(), options=p.EngineOptions(seed=1)
        )
