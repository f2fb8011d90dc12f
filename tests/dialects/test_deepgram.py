"""The Deepgram codec without sockets."""

from __future__ import annotations

import json

import pytest

from server.dialects import intents as i
from server.dialects.deepgram import DeepgramCodec, output_format

VOICES = {"en_US-joe-medium"}
ENGINES = {"piper"}


def test_the_url_sets_the_stream_up() -> None:
    c = DeepgramCodec({"model": "en_US-joe-medium", "encoding": "mulaw"}, VOICES, ENGINES)
    [opened] = c.opening()
    assert isinstance(opened, i.Open)
    assert opened.args.voice == "en_US-joe-medium" and opened.args.model is None
    assert opened.args.fmt == i.AudioFormat("mulaw", 8000, "mulaw@8000")
    assert output_format({}).sample_rate == 24000  # linear16's default
    assert DeepgramCodec({"model": "piper"}, VOICES, ENGINES).opening()[0].args.model == "piper"  # type: ignore[union-attr]
    assert DeepgramCodec({"speed": "9"}, VOICES, ENGINES).speed == 2.0  # the engines' range
    meta = json.loads(c.greeting()[0])
    assert meta["type"] == "Metadata" and meta["request_id"]


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ({"encoding": "opus"}, "UNSUPPORTED_ENCODING"),
        ({"sample_rate": "22050"}, "UNSUPPORTED_SAMPLE_RATE"),
        ({"sample_rate": "-1"}, "UNSUPPORTED_SAMPLE_RATE"),
        ({"container": "wav"}, "UNSUPPORTED_CONTAINER"),
        ({"model": "aura-2-thalia-en"}, "UNKNOWN_MODEL"),
        ({"speed": "fast"}, "INVALID_SPEED"),
    ],
)
def test_bad_urls(query: dict[str, str], code: str) -> None:
    with pytest.raises(i.DialectError) as e:
        DeepgramCodec(query, VOICES, ENGINES)
    assert e.value.code == code and e.value.close_code == 1008


def test_messages_and_sequence_ids() -> None:
    c = DeepgramCodec({}, VOICES, ENGINES)
    assert c.decode('{"type": "Speak", "text": "Hi. "}') == [i.Say("0", "Hi. ")]
    assert c.decode('{"type": "Flush"}') == [i.Flush("0")]
    assert c.decode('{"type": "Clear"}') == [i.Cancel("0")]
    assert c.decode('{"type": "Close"}') == [i.Finish("0"), i.CloseSocket()]
    assert json.loads(c.render_cancelled("0")[0]) == {"type": "Cleared", "sequence_id": 0}
    assert json.loads(c.render_flushed("0")[0]) == {"type": "Flushed", "sequence_id": 0}
    assert json.loads(c.render_flushed("0")[0]) == {"type": "Flushed", "sequence_id": 1}
    assert json.loads(c.render_cancelled("0")[0]) == {"type": "Cleared", "sequence_id": 2}
    assert c.render_audio("0", b"ab") == b"ab"
    warn = json.loads(c.render_error(i.DialectError("X", "why"))[0])
    assert warn["type"] == "Warning" and warn["warn_code"] == "X" and warn["warn_msg"] == "why"
    err = json.loads(c.render_error(i.DialectError("Y", "bad", 1008))[0])
    assert err["type"] == "Error" and err["err_code"] == "Y"
    with pytest.raises(i.DialectError) as e:
        c.decode('{"type": "Speak", "text": 1}')
    assert e.value.close_code is None
