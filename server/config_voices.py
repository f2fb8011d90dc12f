"""Voice, language and text settings (issue 17): a part of ``server.config.Settings``,
kept apart so that module stays readable."""

from __future__ import annotations

from typing import Annotated

import msgspec

from server.config_f5 import F5Settings

_D = msgspec.Meta


class VoiceSettings(F5Settings, kw_only=True, forbid_unknown_fields=True):
    piper_voices_dir: Annotated[
        str,
        _D(
            description="Folder of Piper voices (`NAME.onnx` + `NAME.onnx.json` each), "
            "served beside the bundled one; `voxwire voices fetch` downloads into it. "
            "Empty: the bundled voice only."
        ),
    ] = ""
    piper_max_resident_voices: Annotated[
        int,
        _D(
            ge=1,
            le=64,
            description="Piper voices each engine process keeps loaded; the one used "
            "longest ago is dropped to load another (about 60-120 MB each).",
        ),
    ] = 4
    piper_voices_url: Annotated[
        str,
        _D(
            description="Where `voxwire voices fetch` downloads from: Piper's voice "
            "repository or a mirror with the same layout (`voices.json` at its root)."
        ),
    ] = "https://huggingface.co/rhasspy/piper-voices/resolve/main"
    language_voices: Annotated[
        str,
        _D(
            description="Default voice per language for a session or request that names "
            "a `language` and no voice: `de=de_DE-thorsten-medium,en-GB=en_GB-alan-medium`. "
            "The full tag is tried first, then its language; one not listed gets the "
            "engine's default voice if it speaks it, else the first voice that does."
        ),
    ] = ""
    text_normalization: Annotated[
        bool,
        _D(
            description="Spell out numbers, currency, percentages, dates, times, ordinals "
            "and units before the engine: all of them for F5, which reads text as "
            "written; for Piper what espeak-ng misreads (currency, dates, units; English)."
        ),
    ] = True

    def language_voice_map(self) -> dict[str, str]:
        """``language_voices`` by language tag ("de", "en-gb": lower case, ``-``);
        ValueError names a bad entry."""
        out: dict[str, str] = {}
        for entry in filter(None, (e.strip() for e in self.language_voices.split(","))):
            lang, sep, voice = (part.strip() for part in entry.partition("="))
            if not sep or not lang or not voice:
                raise ValueError(f"language_voices: {entry!r} is not LANGUAGE=VOICE")
            out[lang.replace("_", "-").lower()] = voice
        return out
