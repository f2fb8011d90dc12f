"""Stream set-up, resolved once for every protocol: engine, voice, output, pipeline.

Every wire protocol (the native one, the HTTP speech route, the dialects) asks for
an engine, a voice, a language, a speed and an output; ``resolve`` turns that into
a ``StreamSpec`` or a ``ProtocolError`` that names what was wrong. The rules live
here only: the default-voice rule (the server's voice on the server's engine,
else the engine's own default), a language's engine and voice (``language_voices``),
the language check, the encoder and the Opus pre-skip, and where a failing engine's
streams go (``fallback``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from server import protocol as p
from server.config import Settings
from server.conversation.ports import Worker
from server.engines.base import VoiceInfo
from server.streaming.encoder import AudioEncoder, OpusEncoder, make_encoder, pre_skip
from server.streaming.pipeline import AudioPipeline
from server.voices.ids import server_voices


@dataclass(slots=True)
class StreamSpec:
    """A stream's resolved settings and its audio path."""

    engine: str
    worker: Worker
    voice: str
    language: str | None
    speed: float
    output: p.OutputFormat  # as the client asked, with the bitrate the encoder uses
    pipeline: AudioPipeline
    pre_skip: int  # 48 kHz samples a decoder skips at the start (Opus), else 0
    options: p.EngineOptions | None = None
    voice_language: str | None = None  # the voice's (what its text is read in by default)


def default_voice(settings: Settings, worker: Worker) -> str:
    """The voice of a stream that names none: the server's on its engine, else the
    engine's own default."""
    engine = worker.engine
    if engine.name == settings.engine:
        return settings.voice
    return engine.info().default_voice


def pick_worker(workers: Mapping[str, Worker], engine: str) -> Worker:
    worker = workers.get(engine)
    if worker is None:
        raise p.ProtocolError(
            "unknown_engine", f"no engine {engine!r}; available: {', '.join(sorted(workers))}"
        )
    return worker


def check_voice(engine_name: str, worker: Worker, voice: str) -> None:
    engine = worker.engine
    if voice not in {v.id for v in engine.voices()}:
        raise p.ProtocolError(
            "unknown_voice",
            f"engine {engine_name!r} has no voice {voice!r}; available: "
            # never another key's uploaded voices
            + ", ".join(sorted(v.id for v in server_voices(engine))),
        )


def tag_of(language: str) -> str:
    """A language tag compared as written or as a locale: "de_AT", "DE-at" -> "de-at"."""
    return language.replace("_", "-").lower()


def primary(language: str) -> str:
    """ "de-AT", "de_DE" and "DE" all speak "de"."""
    return tag_of(language).split("-")[0]


def check_language(engine_name: str, worker: Worker, language: str | None) -> None:
    if language is None:
        return
    langs = worker.engine.info().languages
    if primary(language) not in langs:
        raise p.ProtocolError(
            "unsupported_language",
            f"engine {engine_name!r} does not speak {language!r}; it speaks " + ", ".join(langs),
        )


def voice_for_language(settings: Settings, worker: Worker, language: str) -> str:
    """The voice of a stream that names a language and no voice: the one configured for
    its tag (``en-GB``) or language (``en``), else of the engine's voices with that
    locale, then that language: the default voice if it is one of them, else the first
    (none: the default voice, which ``check_language`` then refuses)."""
    tag, lang = tag_of(language), primary(language)
    voices = server_voices(worker.engine)
    configured = settings.language_voice_map()
    for key in (tag, lang):
        if any(v.id == configured.get(key) for v in voices):
            return configured[key]
    default = default_voice(settings, worker)
    by_locale = [v.id for v in voices if tag_of(v.locale or v.language) == tag]
    by_language = [v.id for v in voices if v.language == lang]
    for found in (by_locale, by_language):
        if found:
            return default if default in found else found[0]
    return default


def engine_for_language(
    settings: Settings, workers: Mapping[str, Worker], language: str
) -> str | None:
    """The engine of a stream that names a language and neither engine nor voice: the
    one whose voice ``language_voices`` names for its tag (``en-GB``), else for its
    language (``en``). The server's engine when that voice is one of its own, else the
    engine that has it; None when no entry names a voice an engine has (the server's
    engine then, and ``voice_for_language`` picks among its voices)."""
    configured = settings.language_voice_map()
    order = [settings.engine, *(n for n in workers if n != settings.engine)]
    for key in (tag_of(language), primary(language)):
        wanted = configured.get(key)
        if wanted is None:
            continue
        for name in order:
            worker = workers.get(name)
            if worker is not None and any(v.id == wanted for v in server_voices(worker.engine)):
                return name
    return None


def voice_info(worker: Worker, voice: str) -> VoiceInfo | None:
    return next((v for v in worker.engine.voices() if v.id == voice), None)


def voice_language(worker: Worker, voice: str) -> str | None:
    """What ``voice`` speaks (its locale where it has one), None if it does not say."""
    info = voice_info(worker, voice)
    return (info.locale or info.language) if info is not None else None


def check_options(
    engine_name: str, worker: Worker, voice: str, options: p.EngineOptions | None
) -> None:
    """Engine options the engine honours, and a speaker its voice has."""
    if options is None:
        return
    honoured = worker.engine.info().options
    for name in options.named():
        if name not in honoured:
            raise p.ProtocolError(
                "invalid_field",
                f"engine_options.{name}: engine {engine_name!r} has no such option"
                f" (it has: {', '.join(honoured) or 'none'})",
            )
    if options.speaker is not None:
        info = voice_info(worker, voice)
        names = (info.speakers if info else None) or []
        if options.speaker not in names:
            raise p.ProtocolError(
                "invalid_field",
                f"engine_options.speaker: voice {voice!r} has no speaker {options.speaker!r}"
                f" (it has: {', '.join(names) or 'one voice, no speakers'})",
            )


def encoder_for(
    settings: Settings,
    encoding: str,
    sample_rate: int,
    frame_ms: int,
    bitrate: int | None,
    channels: int = 1,
) -> AudioEncoder:
    """``make_encoder`` with the server's Opus settings (ValueError names what is wrong)."""
    s = settings
    return make_encoder(
        encoding,
        sample_rate,
        frame_ms,
        bitrate,
        complexity=s.opus_complexity,
        fec=s.opus_fec,
        packet_loss_perc=s.opus_packet_loss_perc,
        dtx=s.opus_dtx,
        application=s.opus_application,
        channels=channels,
    )


def build_encoder(settings: Settings, out: p.OutputFormat) -> AudioEncoder:
    try:
        return encoder_for(
            settings, out.encoding, out.sample_rate, out.frame_ms, out.bitrate, out.channels
        )
    except ValueError as exc:
        raise p.ProtocolError("out_of_range", str(exc)) from None


# RTP goes at real time; a little lead keeps the event loop's timer jitter from
# starving the receiver's jitter buffer between two packets.
RTP_PACING: Final = p.Pacing(mode="realtime", lead_ms=40)


def resolve(
    settings: Settings,
    workers: Mapping[str, Worker],
    engine: str | None,
    voice: str | None,
    language: str | None,
    speed: float,
    output: p.OutputFormat,
    encoder: AudioEncoder | None = None,
    options: p.EngineOptions | None = None,
) -> StreamSpec:
    """The stream a client asked for; ``encoder`` replaces the one ``output`` names (the
    HTTP route encodes files from the pipeline's frames). ``engine`` None: the client
    named none, so a ``language`` without a voice goes to the engine of the voice
    configured for it (``engine_for_language``), anything else to the server's."""
    name = engine
    if not name and not voice and language:
        name = engine_for_language(settings, workers, language)
    name = name or settings.engine
    worker = pick_worker(workers, name)
    if voice:
        chosen = voice
    elif language:
        chosen = voice_for_language(settings, worker, language)
    else:
        chosen = default_voice(settings, worker)
    check_voice(name, worker, chosen)
    check_language(name, worker, language)
    check_options(name, worker, chosen, options)
    if options is not None and not options.named():
        options = None  # `{}`: nothing for the engine (which may take no options at all)
    enc = encoder if encoder is not None else build_encoder(settings, output)
    bitrate = enc.ctl_settings()["bitrate"] if isinstance(enc, OpusEncoder) else None
    out = p.OutputFormat(
        encoding=output.encoding,
        sample_rate=output.sample_rate,
        frame_ms=output.frame_ms,
        bitrate=bitrate,
        channels=output.channels,
        pacing=output.pacing or (RTP_PACING if output.transport is not None else None),
        transport=output.transport,
    )
    pipeline = AudioPipeline(worker.engine.sample_rate, enc)
    return StreamSpec(
        name,
        worker,
        chosen,
        language,
        speed,
        out,
        pipeline,
        pre_skip(enc),
        options,
        voice_language(worker, chosen),
    )


def fallback(
    settings: Settings, workers: Mapping[str, Worker], spec: StreamSpec
) -> StreamSpec | None:
    """Where a stream goes when its engine fails (``f5_fallback_engine``), keeping its
    encoder so the listener's stream goes on without a reset; None if nowhere."""
    target = workers.get(settings.f5_fallback_engine)
    if target is None or target is spec.worker:
        return None
    pipeline = AudioPipeline(target.engine.sample_rate, spec.pipeline.encoder)
    voice = default_voice(settings, target)
    return StreamSpec(
        target.engine.name,
        target,
        voice,
        spec.language,
        spec.speed,
        spec.output,
        pipeline,
        spec.pre_skip,
        voice_language=voice_language(target, voice),
    )


def piece_spans(chunk: str, pieces: list[str]) -> list[str]:
    """``pieces`` as consecutive spans of ``chunk`` covering all of it (the text between
    two pieces goes with the first); ``[chunk]`` if they are not found in order."""
    starts: list[int] = []
    at = 0
    for piece in pieces:
        at = chunk.find(piece, at)
        if at < 0:
            return [chunk]
        starts.append(at)
        at += len(piece)
    if len(starts) < 2:
        return [chunk]
    starts[0] = 0
    return [chunk[a:b] for a, b in zip(starts, [*starts[1:], len(chunk)], strict=True)]
