"""The protocol codec, without sockets."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server import protocol as p
from server.responses import option_ranges
from tests.support import ROOT


def test_decodes_every_client_message() -> None:
    assert p.decode_client_message('{"type":"start"}') == p.Start()
    start = p.decode_client_message(
        '{"type":"start","voice":"v","engine":"piper","language":"en","speed":1.5,'
        '"output":{"encoding":"mulaw","sample_rate":8000,"frame_ms":20}}'
    )
    assert isinstance(start, p.Start) and start.output == p.OutputFormat(
        encoding="mulaw", sample_rate=8000, frame_ms=20
    )
    assert p.decode_client_message('{"type":"text","text":"hi "}') == p.Text(text="hi ")
    assert p.decode_client_message('{"type":"flush"}') == p.Flush()
    assert p.decode_client_message('{"type":"cancel"}') == p.Cancel()
    assert p.decode_client_message('{"type":"end"}') == p.End()


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ('{"type":"nope"}', "unknown_type"),
        ('{"type":"text","text":5}', "invalid_field"),
        ('{"type":"text"}', "missing_field"),
        ('{"type":"start","speed":0.1}', "out_of_range"),
        ('{"type":"start","output":{"sample_rate":96000}}', "out_of_range"),
        ('{"type":"start","output":{"encoding":"opus","sample_rate":22050}}', "out_of_range"),
        ('{"type":"start","output":{"encoding":"pcm_s16le","frame_ms":7}}', "out_of_range"),
        ('{"type":"start","output":{"bitrate":1}}', "out_of_range"),
        ('{"type":"flush","x":1}', "unknown_field"),
        ('"text"', "invalid_message"),
        ('{"type":"flush","type":"end"}', "invalid_message"),  # not "unknown type 'end'"
        # nested past the parsers' recursion: a clear error, not a dead session
        ('{"msg":{"text":' + "[" * 1500 + "0" + "]" * 1500 + "}}", "invalid_json"),
        ('{"type":"bogus","x":' + "[" * 1500 + "]" * 1500 + "}", "unknown_type"),
        ("", "invalid_json"),
    ],
)
def test_errors_have_stable_codes(raw: str, code: str) -> None:
    with pytest.raises(p.ProtocolError) as info:
        p.decode_client_message(raw)
    assert info.value.code == code
    assert info.value.message


def test_server_messages_encode_with_their_type() -> None:
    seg = json.loads(p.encode_server_message(p.Segment(index=2, text="Hi.", first_frame=40)))
    assert seg == {"type": "segment", "index": 2, "text": "Hi.", "first_frame": 40}
    err = json.loads(p.encode_server_message(p.Error(code="x", message="y", fatal=True)))
    assert err == {"type": "error", "code": "x", "message": "y", "fatal": True}


def test_published_schema_matches_the_code() -> None:
    published = json.loads((ROOT / "docs" / "protocol.schema.json").read_text())
    assert published == p.json_schema(), (
        "run: python -m server.protocol > docs/protocol.schema.json"
    )
    defs = published["$defs"]
    for name in (
        "Start",
        "Text",
        "Flush",
        "Cancel",
        "End",
        "Ready",
        "Segment",
        "Flushed",
        "Cancelled",
        "Done",
        "Error",
        "OutputFormat",
    ):
        assert name in defs


_OPTION_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=200),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)
_OPTION_NAMES = st.sampled_from([*p.EngineOptions.__struct_fields__, "loudness", "", "Seed"])


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_OPTION_NAMES, _OPTION_VALUES, max_size=4) | _OPTION_VALUES)
def test_any_engine_options_decode_within_bounds_or_are_named(value: object) -> None:
    """Whatever a client puts in ``engine_options``: a struct whose every value is in
    its bounds, or a ProtocolError that names the field, never another exception."""
    raw = json.dumps({"type": "start", "engine_options": value})
    try:
        msg = p.decode_client_message(raw)
    except p.ProtocolError as exc:
        assert exc.code in {"invalid_field", "out_of_range", "unknown_field", "invalid_json"}
        assert "engine_options" in exc.message
        return
    assert isinstance(msg, p.Start)
    o = msg.engine_options
    if o is None:
        return
    for r in option_ranges():
        v = getattr(o, r.name)
        if v is None:
            continue
        if r.type == "string":
            assert isinstance(v, str) and 1 <= len(v) <= (r.max_length or 0)
        else:
            assert r.min is not None and r.max is not None and r.min <= v <= r.max
