"""Piper voices on the server's own onnxruntime session (threads from the settings,
no spinning), loaded by the real Piper engine."""

from __future__ import annotations

import numpy as np

from server.config import Settings
from server.engines.piper import DEFAULT_VOICE, PiperEngine
from server.engines.piper_voices import PiperOptions


def test_the_voice_runs_on_the_threads_the_settings_give() -> None:
    s = Settings(engine_threads=2, engine_process_threads=3)
    engine = PiperEngine(PiperOptions.from_settings(s, s.engine_cpu_threads()))
    engine.load()
    pv = engine._voice(DEFAULT_VOICE)
    opts = pv.session.get_session_options()
    assert opts.intra_op_num_threads == 3
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    audio = np.concatenate(list(engine.synthesize("Hello there.", DEFAULT_VOICE, 1.0)))
    assert len(audio) > engine.sample_rate * 0.4 and float(np.abs(audio).max()) > 0.05


def test_zero_threads_leaves_piper_its_own_session() -> None:
    engine = PiperEngine(PiperOptions(threads=0))
    engine.load()
    opts = engine._voice(DEFAULT_VOICE).session.get_session_options()
    assert opts.intra_op_num_threads == 0  # onnxruntime's default: one per core
