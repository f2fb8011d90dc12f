"""The torch side of F5: the device, the models and the vocoder, reference mels, and
one padded batch through ``CFM.sample`` and Vocos.

It runs in the server's process with ``engine_isolation=thread``, and in the
generation host (``server/engines/f5/host.py``) with ``process``; ``F5Engine`` keeps
the planning and the voices either way. torch and f5-tts are imported only inside
methods.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from server.engines.base import Audio
from server.engines.f5.checkpoints import ModelSpec, load_cfm, load_vocos
from server.engines.f5.policy import duration_frames, nbytes, trim_trailing_silence
from server.engines.f5.registry import ModelRegistry
from server.engines.f5.voices import F5Voice

if TYPE_CHECKING:
    from server.engines.f5.options import F5Options, Sampling


@dataclass(slots=True)
class Row:
    """One item of a batch: the voice, its reference mel on the device, the text."""

    voice: F5Voice
    mel: Any
    text: str
    speed: float


class F5Device:
    def __init__(self, opts: F5Options, specs: list[ModelSpec]) -> None:
        self.opts = opts
        self.registry: ModelRegistry[Any] = ModelRegistry(
            specs, self._load_model, self._unload_model, opts.max_resident
        )
        self.device = "cpu"
        self.dtype: Any = None
        self.device_name = "cpu"
        self._vocos: Any = None
        self._mel_spec: Any = None

    def setup(self) -> None:
        """Pick the device and the weights' type; nothing is loaded yet."""
        import torch
        from f5_tts.model.modules import MelSpec

        from server.engines.f5.checkpoints import MEL

        opts = self.opts
        device = opts.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = device
        cuda = device.startswith("cuda")
        dtypes = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
        if opts.dtype == "auto":
            self.dtype = torch.float16 if cuda else torch.float32
        else:
            self.dtype = dtypes[opts.dtype]
        self.device_name = torch.cuda.get_device_name(device) if cuda else "cpu"
        if not cuda and opts.cpu_threads:
            # On a shared CPU, torch's default (a thread per core) can be far slower.
            torch.set_num_threads(opts.cpu_threads)
        self._mel_spec = MelSpec(**MEL).to(device)

    def mel(self, audio: Audio) -> Any:
        """A reference's mel, (frames, mels), kept on the device for every generation."""
        import torch

        wave = torch.from_numpy(audio).to(self.device)[None]
        with torch.inference_mode():
            # (1, mels, frames) -> (frames, mels)
            return self._mel_spec(wave)[0].transpose(0, 1).contiguous()

    def preload(self, key: str) -> None:
        """The vocoder and the model of ``key`` (raises when either cannot load)."""
        self._vocoder()
        self.registry.get(key)

    def stats(self) -> tuple[int, int, int]:
        """Models loaded, and the CUDA memory torch has allocated and reserved (bytes; -1
        each off CUDA). Cheap: torch's counters, no device sync."""
        models = len(self.registry.resident())
        if not self.device.startswith("cuda"):
            return models, -1, -1
        import torch

        cuda = torch.cuda
        return (
            models,
            int(cuda.memory_allocated(self.device)),
            int(cuda.memory_reserved(self.device)),
        )

    def loaded(self, key: str) -> bool:
        return self._vocos is not None and key in self.registry.resident()

    def _vocoder(self) -> Any:
        if self._vocos is None:
            self._vocos = load_vocos(self.opts.vocos, device=self.device, offline=self.opts.offline)
        return self._vocos

    def _load_model(self, spec: ModelSpec) -> Any:
        return load_cfm(
            spec,
            device=self.device,
            dtype=self.dtype,
            offline=self.opts.offline,
            batch_mask=self.opts.batch_mask,
        )

    def _unload_model(self, model: Any) -> None:
        import torch

        del model
        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()

    def release_memory(self) -> None:
        """Return the CUDA caching allocator's free blocks (after an out-of-memory)."""
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()

    def generate(self, key: str, rows: list[Row], sampling: Sampling | None = None) -> list[Audio]:
        """One padded batch through the model of ``key``: a waveform per row, its
        trailing silence trimmed. Blocks. Raises on failure."""
        import torch
        from f5_tts.model.utils import convert_char_to_pinyin
        from torch.nn.utils.rnn import pad_sequence

        policy = self.opts.policy
        how = sampling or self.opts.sampling()
        vocos = self._vocoder()
        model = self.registry.get(key)
        mels = [r.mel for r in rows]
        lens = [int(m.shape[0]) for m in mels]
        durs = [
            duration_frames(n, r.voice.text_bytes, nbytes(r.text), r.speed, policy)
            for n, r in zip(lens, rows, strict=True)
        ]
        # Input text is the reference transcript followed by the new text, as F5 was trained.
        texts = convert_char_to_pinyin([r.voice.text + r.text for r in rows])
        dev = self.device
        with torch.inference_mode():
            mel, _ = model.sample(
                cond=pad_sequence(mels, batch_first=True),
                text=texts,
                duration=torch.tensor(durs, device=dev, dtype=torch.long),
                lens=torch.tensor(lens, device=dev, dtype=torch.long),
                steps=how.steps,
                cfg_strength=how.cfg_strength,
                sway_sampling_coef=self.opts.sway_sampling_coef,
                seed=how.seed if how.seed >= 0 else None,
            )
            mel = mel.float()
            out: list[Audio] = []
            for i, r in enumerate(rows):
                # Each item is vocoded alone: Vocos' convolutions would see a padded
                # neighbour's frames at the item's end.
                gen = mel[i, lens[i] : durs[i]].transpose(0, 1)[None]
                wave = vocos.decode(gen)[0].cpu().numpy().astype(np.float32)
                wave = np.clip(wave * r.voice.gain, -1.0, 1.0)
                out.append(trim_trailing_silence(wave, policy))
        return out
