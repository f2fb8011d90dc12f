"""SIGTERM with dialect connections open: each finishes what it was saying, then gets
its dialect's error and 1012; an idle one at once."""

from __future__ import annotations

import json
import signal

from tests.dialects.wire import Got, collect, send
from tests.support import ServerProcess, connect

VOICE = "en_US-joe-medium"
TEXT = "Our meeting with the bank has moved to Thursday afternoon. Open the window please."


async def test_sigterm_finishes_the_contexts_then_closes_1012() -> None:
    srv = ServerProcess(drain_grace_s=60)
    try:
        srv.wait_ready()
        base = f"ws://127.0.0.1:{srv.port}"
        dg = await connect(f"{base}/v1/speak?model={VOICE}&encoding=linear16&sample_rate=16000")
        el = await connect(
            f"{base}/v1/text-to-speech/{VOICE}/multi-stream-input?output_format=pcm_16000"
        )
        idle = await connect(f"{base}/v1/speak?model={VOICE}")
        await send(dg, type="Speak", text=TEXT)  # no Flush: the drain speaks it anyway
        await send(el, text=TEXT, context_id="r")
        dg_got = await collect(dg, Got(), binary=1, timeout=30)
        el_got = await collect(el, Got(), until=lambda m: bool(m.get("audio")), timeout=30)
        srv.proc.send_signal(signal.SIGTERM)
        idle_got = await collect(idle, Got(), timeout=20)
        dg_got = await collect(dg, dg_got, timeout=60)
        el_got = await collect(el, el_got, timeout=60)
        assert srv.proc.wait(30) == 0
    finally:
        srv.stop()
    assert idle_got.close_code == 1012
    assert idle_got.msgs[-1]["type"] == "Error"
    assert idle_got.msgs[-1]["err_code"] == "server_draining"
    # the whole text was spoken (about 5 s of 16 kHz audio), then the error and 1012
    assert dg_got.close_code == 1012 and len(b"".join(dg_got.binary)) / 32000 > 3.5
    assert dg_got.msgs[-1]["err_code"] == "server_draining"
    assert el_got.close_code == 1012
    kinds = ["final" if m.get("isFinal") else m.get("error", "audio") for m in el_got.msgs]
    assert kinds[-2:] == ["final", "server_draining"], json.dumps(kinds[-4:])
    assert len(el_got.audio(ctx="r")) / 32000 > 3.5
