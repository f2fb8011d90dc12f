"""Piper voices on an onnxruntime session this server configures.

``PiperVoice.load`` gives onnxruntime its defaults: a thread per physical core, and
threads that spin-wait for work. With one engine process per core (``engine_threads``)
an idle process's spinning threads take CPU from the busy ones (they also made an
idle process look busy to the tests). So the session is built here with a thread
count from the settings (``engine_process_threads``) and spinning off; the rest is
Piper's own constructor.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def cpu_session(model: Path | bytes, threads: int) -> Any:
    """An onnxruntime CPU session for a model file (or its serialized bytes) with
    ``threads`` intra-op threads that sleep when idle."""
    import onnxruntime  # type: ignore[import-untyped]

    opts = onnxruntime.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    source = model if isinstance(model, bytes) else str(model)
    return onnxruntime.InferenceSession(
        source, sess_options=opts, providers=["CPUExecutionProvider"]
    )


def load_voice(model: Path, config: Path, threads: int) -> Any:
    """A ``PiperVoice`` for ``model`` and its JSON ``config`` on :func:`cpu_session`."""
    from piper import PiperVoice
    from piper.config import PiperConfig

    with open(config, encoding="utf-8") as f:
        cfg = PiperConfig.from_dict(json.load(f))
    return PiperVoice(session=cpu_session(model, threads), config=cfg)
