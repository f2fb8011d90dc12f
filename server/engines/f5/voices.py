"""F5 voices: reference audio plus its transcript, prepared once.

Preparation (numpy + soxr, no torch): mono, 24 kHz, edge silence trimmed, clipped at a
pause to at most ``MAX_REF_S`` with the transcript cut at the matching sentence or
clause break (or the voice is rejected), a speaking-rate check that catches a
transcript that does not belong to the audio, and RMS normalisation (output is scaled
back by the same gain, as upstream does). The engine computes the reference mel once
per voice and keeps it on the device.

A voices directory holds ``<id>.wav`` + ``<id>.txt`` (UTF-8 transcript); files in a
sub-directory named after a language (``fr/marie.wav``) are voices of that language,
files at the top are voices of the default language.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from server.engines.f5.policy import HOP, SAMPLE_RATE, nbytes

Audio = npt.NDArray[np.float32]

MAX_REF_S = 12.0  # F5 references are clipped to about 12 s upstream
MIN_REF_S = 1.0
MIN_CLIP_S = 3.0  # never clip a long reference shorter than this
TARGET_RMS = 0.1
# Transcript bytes per second of reference audio outside this range means the
# transcript does not belong to the audio (or the audio is mostly silence).
RATE_RANGE = (4.0, 40.0)
_WIN = SAMPLE_RATE // 100  # 10 ms analysis windows
_PAUSE_DB = 40.0  # a window this far below the loudest one is a pause
_MIN_PAUSE_S = 0.15
# Where the transcript is cut must be this close (as a share of the text) to where the
# audio was cut, measured in voiced time; otherwise the clip is refused.
_CUT_TOLERANCE = 0.1


class VoiceError(ValueError):
    """A reference that cannot be used; the message names the file and the fault."""


@dataclass(slots=True)
class F5Voice:
    id: str
    language: str
    text: str  # the transcript as given to the model: ends with ". " (or "。")
    audio: Audio  # mono 24 kHz, RMS-normalised
    gain: float  # generated audio is multiplied by this (undoes the normalisation)
    builtin: bool = False
    clipped_from_s: float | None = None  # original length when the reference was clipped
    name: str = ""  # shown in voice lists; the id when empty

    @property
    def seconds(self) -> float:
        return len(self.audio) / SAMPLE_RATE

    @property
    def frames(self) -> int:
        return len(self.audio) // HOP

    @property
    def text_bytes(self) -> int:
        return nbytes(self.text)

    @property
    def bytes_per_s(self) -> float:
        return self.text_bytes / self.seconds


def _levels(x: Audio) -> npt.NDArray[np.float64]:
    n = len(x) // _WIN
    w = x[: n * _WIN].astype(np.float64).reshape(n, _WIN)
    levels: npt.NDArray[np.float64] = np.sqrt(np.mean(w * w, axis=1))
    return levels


def _end_punctuate(text: str) -> str:
    """F5 expects the reference transcript to end a sentence, then a space."""
    text = " ".join(text.split())
    if text.endswith(("。", "！", "？")):
        return text
    if text.endswith((".", "!", "?")):
        return text + " "
    return text + ". "


_BREAK = re.compile(r"[.!?…。！？,;:，；：、](?:\s+|$)")


def _cut_transcript(text: str, share: float) -> str | None:
    """The transcript up to the sentence/clause break nearest ``share`` of its length,
    or None when no break is near enough."""
    total = len(text)
    best: tuple[float, int] | None = None
    for m in _BREAK.finditer(text):
        err = abs(m.end() / total - share)
        if best is None or err < best[0]:
            best = (err, m.end())
    if best is None or best[0] > _CUT_TOLERANCE:
        return None
    return text[: best[1]].strip()


def prepare_reference(
    audio: npt.NDArray[np.floating], rate: int, transcript: str, name: str
) -> tuple[Audio, str, float, float | None]:
    """(audio, transcript, gain, original seconds if clipped) for a reference.

    Raises VoiceError naming ``name`` when the reference cannot be used.
    """
    import soxr

    x = np.asarray(audio, dtype=np.float32)
    if x.ndim == 2:
        x = x.mean(axis=1, dtype=np.float32)  # (frames, channels) -> mono
    if rate != SAMPLE_RATE:
        x = np.asarray(soxr.resample(x, rate, SAMPLE_RATE, quality="HQ"), dtype=np.float32)
    text = " ".join(transcript.split())
    if not text:
        raise VoiceError(f"{name}: the transcript is empty; F5 needs the words of the reference")
    lv = _levels(x)
    if lv.size == 0 or float(lv.max()) < 1e-4:
        raise VoiceError(f"{name}: the reference audio is silent")
    loud = lv > float(lv.max()) * 10 ** (-_PAUSE_DB / 20)
    voiced = np.nonzero(loud)[0]
    # Edge silence: keep 50 ms before the first and after the last voiced window.
    pad = 5
    first, last = max(0, int(voiced[0]) - pad), min(lv.size, int(voiced[-1]) + 1 + pad)
    x, loud = x[first * _WIN : last * _WIN], loud[first:last]
    original_s = len(x) / SAMPLE_RATE
    clipped: float | None = None
    if original_s > MAX_REF_S:
        cut = _pause_before(loud, MAX_REF_S)
        if cut is None:
            raise VoiceError(
                f"{name}: the reference is {original_s:.1f} s and has no pause between "
                f"{MIN_CLIP_S:g} and {MAX_REF_S:g} s to clip it at; use a reference of at most "
                f"{MAX_REF_S:g} s"
            )
        share = float(loud[:cut].sum()) / max(1.0, float(loud.sum()))
        head = _cut_transcript(text, share)
        if head is None:
            raise VoiceError(
                f"{name}: the reference is {original_s:.1f} s, so it was clipped at a pause at "
                f"{cut * _WIN / SAMPLE_RATE:.1f} s, but the transcript has no sentence or clause "
                f"break near {share:.0%} of its length to cut it to match; use a reference of at "
                f"most {MAX_REF_S:g} s or a transcript with punctuation"
            )
        x, text, clipped = x[: cut * _WIN], head, original_s
    seconds = len(x) / SAMPLE_RATE
    if seconds < MIN_REF_S:
        raise VoiceError(
            f"{name}: the reference has {seconds:.2f} s of sound; F5 needs at least 1 s"
        )
    rate_bps = nbytes(text) / seconds
    if not RATE_RANGE[0] <= rate_bps <= RATE_RANGE[1]:
        raise VoiceError(
            f"{name}: the transcript ({nbytes(text)} bytes) does not match {seconds:.1f} s of "
            f"audio ({rate_bps:.1f} bytes/s; speech is {RATE_RANGE[0]:g}–{RATE_RANGE[1]:g}); "
            "check that it is the transcript of this recording"
        )
    # A little silence after the speech, as upstream adds, so the model hears the pause.
    x = np.concatenate((x, np.zeros(SAMPLE_RATE // 20, dtype=np.float32)))
    rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))
    gain = 1.0
    if rms < TARGET_RMS:
        x = (x * (TARGET_RMS / rms)).astype(np.float32)
        gain = rms / TARGET_RMS
    return x, _end_punctuate(text), gain, clipped


def _pause_before(loud: npt.NDArray[np.bool_], limit_s: float) -> int | None:
    """Window index in the middle of the last pause of at least _MIN_PAUSE_S that ends
    before ``limit_s`` and starts after MIN_CLIP_S."""
    lo, hi = int(MIN_CLIP_S * 100), int(limit_s * 100)
    min_len = int(_MIN_PAUSE_S * 100)
    best: int | None = None
    run_start: int | None = None
    for i in range(min(hi, loud.size)):
        if not loud[i]:
            if run_start is None:
                run_start = i
            continue
        if run_start is not None and i - run_start >= min_len and run_start >= lo:
            best = (run_start + i) // 2
        run_start = None
    return best


def load_voice(wav: Path, language: str, builtin: bool = False, text: str | None = None) -> F5Voice:
    import soundfile as sf

    txt = wav.with_suffix(".txt")
    if text is None:
        if not txt.exists():
            raise VoiceError(f"{wav}: no transcript; put the words of the recording in {txt}")
        text = txt.read_text(encoding="utf-8")
    try:
        data, rate = sf.read(str(wav), dtype="float32", always_2d=False)
    except Exception as exc:  # soundfile raises its own error types for unreadable files
        raise VoiceError(f"{wav}: cannot read audio: {exc}") from None
    audio, ref_text, gain, clipped = prepare_reference(data, int(rate), text, str(wav))
    return F5Voice(
        id=wav.stem,
        language=language,
        text=ref_text,
        audio=audio,
        gain=gain,
        builtin=builtin,
        clipped_from_s=clipped,
    )


def builtin_voices() -> list[F5Voice]:
    """The reference clips shipped inside the f5-tts package (its own examples)."""
    from importlib.resources import files

    base = Path(str(files("f5_tts").joinpath("infer/examples/basic")))
    voices = []
    for vid, stem, lang, text in (
        ("f5_basic_en", "basic_ref_en", "en", "Some call me nature, others call me mother nature."),
        ("f5_basic_zh", "basic_ref_zh", "zh", "对，这就是我，万人敬仰的太乙真人。"),
    ):
        v = load_voice(base / f"{stem}.wav", lang, builtin=True, text=text)
        v.id = vid
        voices.append(v)
    return voices


def scan_voices_dir(root: Path, default_language: str) -> list[F5Voice]:
    """Every ``<id>.wav`` with its ``<id>.txt`` under ``root`` (see the module docstring)."""
    if not root.is_dir():
        raise VoiceError(f"f5_voices_dir {root} is not a directory")
    voices: list[F5Voice] = []
    for wav in sorted(root.glob("*.wav")):
        voices.append(load_voice(wav, default_language))
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        for wav in sorted(sub.glob("*.wav")):
            voices.append(load_voice(wav, sub.name.lower()))
    seen: set[str] = set()
    for v in voices:
        if v.id in seen:
            raise VoiceError(f"{root}: two voices are named {v.id!r}")
        seen.add(v.id)
    return voices
