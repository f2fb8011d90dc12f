"""The Cartesia codec without sockets."""

from __future__ import annotations

import json
from typing import Any

import pytest

from server import protocol as p
from server.dialects import intents as i
from server.dialects.cartesia import CartesiaCodec


def req(ctx: str, text: str, more: bool = True, **extra: Any) -> str:
    fmt = {"container": "raw", "encoding": "pcm_f32le", "sample_rate": 44100}
    m = {"context_id": ctx, "transcript": text, "continue": more, "output_format": fmt}
    m["voice"] = {"mode": "id", "id": "v"}
    return json.dumps({**m, **extra})


def test_a_context_opens_takes_text_and_ends() -> None:
    c = CartesiaCodec()
    [opened, said] = c.decode(req("a", "Hello ", add_timestamps=True, speed="slow"))
    assert isinstance(opened, i.Open) and said == i.Say("a", "Hello ")
    assert opened.args.fmt == i.AudioFormat("pcm_f32le", 44100, "pcm_f32le@44100")
    assert opened.args.timings and opened.args.speed == 0.8 and opened.args.voice == "v"
    assert c.decode(req("a", "there.", max_buffer_delay_ms=0)) == [
        i.Say("a", "there."),
        i.Flush("a"),
    ]
    assert c.decode(req("a", "", more=False)) == [i.Finish("a")]
    with pytest.raises(i.DialectError) as e:
        c.decode(req("a", "more"))
    assert e.value.code == "context_closed" and e.value.close_code is None
    assert c.decode(json.dumps({"context_id": "a", "cancel": True})) == [i.Stop("a")]
    assert c.decode(json.dumps({"context_id": "gone", "cancel": True})) == []


def test_a_refused_request_leaves_no_trace_and_an_open_context_goes_on() -> None:
    """Codec and edge agree on which contexts are open: a refused first request opens
    nothing (the next one opens the context), and an error on an open context leaves it
    open (its next request is text, not a second open)."""
    c = CartesiaCodec()
    for bad in (
        req("a", "Hi", add_timestamps=True, flush="yes"),
        req("a", "Hi", add_timestamps=True).replace('"continue": true', '"continue": "no"'),
        req("a", "Hi", add_timestamps=True, output_format={"encoding": "mp3"}),
    ):
        with pytest.raises(i.DialectError) as e:
            c.decode(bad)
        assert e.value.ctx == "a" and e.value.close_code is None
    [opened, _] = c.decode(req("a", "Hi"))
    assert isinstance(opened, i.Open) and not opened.args.timings
    with pytest.raises(i.DialectError) as e:
        c.decode(req("a", "again", flush=1))
    c.render_error(e.value)
    assert c.decode(req("a", "there.", more=False)) == [i.Say("a", "there."), i.Finish("a")]


def test_rendering() -> None:
    c = CartesiaCodec()
    c.decode(req("a", "Hi", add_timestamps=True))
    chunk = json.loads(c.render_audio("a", b"\x00\x01"))
    assert chunk == {
        "type": "chunk",
        "context_id": "a",
        "status_code": 206,
        "done": False,
        "data": "AAE=",
        "step_time": 0,
    }
    words = p.Words(segment=0, words=[p.WordTiming(text="Hi", char=0, start=0.1, end=0.4)])
    [ts] = [json.loads(w) for w in c.render_words("a", words)]
    assert ts["word_timestamps"] == {"words": ["Hi"], "start": [0.1], "end": [0.4]}
    assert json.loads(c.render_flushed("a")[0])["flush_id"] == 1
    assert json.loads(c.render_final("a", False)[0])["type"] == "done"
    assert c.render_final("b", True) == []  # nothing after a cancel
    err = json.loads(c.render_error(i.DialectError("x", "why", None, "a"))[0])
    assert err == {
        "type": "error",
        "context_id": "a",
        "status_code": 400,
        "done": True,
        "error": "why",
        "title": "x",
    }


@pytest.mark.parametrize(
    "fmt",
    [
        {"container": "wav", "encoding": "pcm_s16le", "sample_rate": 8000},
        {"container": "raw", "encoding": "mp3", "sample_rate": 8000},
        {"container": "raw", "encoding": "pcm_s16le", "sample_rate": 11025},
        {"container": "raw", "encoding": "pcm_s16le", "sample_rate": "8000"},
    ],
)
def test_bad_output_formats(fmt: dict[str, Any]) -> None:
    with pytest.raises(i.DialectError) as e:
        CartesiaCodec().decode(req("a", "Hi", output_format=fmt))
    assert e.value.ctx == "a" or e.value.code == "invalid_field"
