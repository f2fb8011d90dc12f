"""The ElevenLabs codec without sockets: intents from messages, messages from output."""

from __future__ import annotations

import json

import pytest

from server import protocol as p
from server.dialects import intents as i
from server.dialects.elevenlabs import ElevenLabsCodec, output_format


def codec(multi: bool = True, **query: str) -> ElevenLabsCodec:
    return ElevenLabsCodec("v1", {"output_format": "pcm_24000", **query}, multi)


def msg(**m: object) -> str:
    return json.dumps(m)


def test_output_formats() -> None:
    assert output_format("pcm_22050") == i.AudioFormat("pcm_s16le", 22050, "pcm_22050")
    assert output_format("ulaw_8000").encoding == "mulaw"
    assert output_format("alaw_8000").encoding == "alaw"
    assert output_format("mp3_44100_128") == i.AudioFormat("mp3", 44100, "mp3_44100_128", 128000)
    assert output_format("opus_48000_64").encoding == "ogg_opus"
    for bad in ("pcm_11025", "mp3_8000_32", "opus_24000_64", "wav", "pcm_", "mp3_44100_999"):
        with pytest.raises(i.DialectError) as e:
            output_format(bad)
        assert e.value.code == "invalid_output_format" and e.value.close_code == 1008


def test_multi_context_open_text_flush_close_is_a_finish() -> None:
    c = codec()
    opened = c.decode(msg(text=" ", context_id="a", voice_settings={"speed": 1.1, "x": 1}))
    assert len(opened) == 1 and isinstance(opened[0], i.Open)
    assert opened[0].args.speed == pytest.approx(1.1) and opened[0].args.timings
    assert c.decode(msg(text="Hi there.", context_id="a")) == [i.Say("a", "Hi there.")]
    assert c.decode(msg(flush=True, context_id="a")) == [i.Flush("a")]
    assert c.decode(msg(close_context=True, context_id="a")) == [i.Finish("a")]
    # a second close_context is the interruption of what is still playing
    assert c.decode(msg(close_context=True, context_id="a")) == [i.Stop("a")]


def test_close_context_without_a_flush_is_a_barge_in() -> None:
    c = codec()
    c.decode(msg(text=" ", context_id="a"))
    c.decode(msg(text="Still talking", context_id="a"))
    assert c.decode(msg(close_context=True, context_id="a")) == [i.Stop("a")]


def test_keepalives_and_auto_mode() -> None:
    c = codec(auto_mode="true")
    assert c.decode(msg(text="")) == []  # no context: keep-alive
    assert c.decode(msg(text="", context_id="z")) == []  # before its init: keep-alive
    c.decode(msg(text=" ", context_id="a"))
    assert c.decode(msg(text="", context_id="a")) == []
    # auto_mode: each message is spoken at once
    assert c.decode(msg(text="One sentence.", context_id="a")) == [
        i.Say("a", "One sentence."),
        i.Flush("a"),
    ]
    assert c.decode(msg(close_socket=True)) == [i.CloseSocket()]


def test_single_context_ends_with_empty_text_and_reads_the_key() -> None:
    c = codec(multi=False)
    [opened, said] = c.decode(msg(text="Hello ", xi_api_key="k1"))
    assert isinstance(opened, i.Open) and said == i.Say("0", "Hello ")
    assert c.api_key == "k1"
    assert c.decode(msg(text="")) == [i.Finish("0"), i.CloseSocket()]


def test_rendering_audio_final_and_errors() -> None:
    c = codec()
    c.decode(msg(text=" ", context_id="a"))
    audio = json.loads(c.render_audio("a", b"\x01\x02"))
    assert audio == {
        "audio": "AQI=",
        "isFinal": None,
        "alignment": None,
        "normalizedAlignment": None,
        "contextId": "a",
    }
    c.render_segment("a", p.Segment(index=0, text="Hi you.", first_frame=0))
    words = [
        p.WordTiming(text="Hi", char=0, start=0.1, end=0.3),
        p.WordTiming(text="you", char=3, start=0.35, end=0.6),
    ]
    c.render_words("a", p.Words(segment=0, words=words))
    with_align = json.loads(c.render_audio("a", b"\x00"))
    a = with_align["alignment"]
    assert "".join(a["chars"]) == "Hi you. "  # the last word ends at a space
    assert a["charStartTimesMs"][0] == 100 and a["charStartTimesMs"][3] == 350
    assert json.loads(c.render_audio("a", b"\x00"))["alignment"] is None  # sent once
    assert [json.loads(w) for w in c.render_final("a", False)] == [
        {"isFinal": True, "contextId": "a"}
    ]
    err = i.DialectError("max_active_conversations", "too many", 1008, "f")
    assert json.loads(c.render_error(err)[0]) == {
        "message": "too many",
        "error": "max_active_conversations",
        "code": 1008,
        "contextId": "f",
    }


def test_bad_messages_are_errors_that_close() -> None:
    c = codec()
    for bad, code in (("{x", "invalid_json"), ("[]", "invalid_message")):
        with pytest.raises(i.DialectError) as e:
            c.decode(bad)
        assert (e.value.code, e.value.close_code) == (code, 1008)
    with pytest.raises(i.DialectError) as e:
        c.decode(msg(text=3, context_id="a"))
    assert e.value.code == "invalid_field" and "'text' must be str" in e.value.message
    assert e.value.close_code == 1008  # ElevenLabs closes on a message off its schema
    with pytest.raises(i.DialectError) as e:
        c.decode(msg(text=" ", context_id="b", voice_settings={"speed": "fast"}))
    assert (e.value.code, e.value.close_code) == ("invalid_field", 1008)
    for q in ("0", "181", "soon"):
        with pytest.raises(i.DialectError):
            codec(inactivity_timeout=q)
