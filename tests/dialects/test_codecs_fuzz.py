"""Any message, however odd, is a list of intents or a DialectError naming the fault:
never another exception (the edge would drop the connection without a word)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from server.dialects import intents as i
from server.dialects.cartesia import CartesiaCodec
from server.dialects.deepgram import DeepgramCodec
from server.dialects.elevenlabs import ElevenLabsCodec

KEYS = [
    "text", "flush", "context_id", "close_context", "close_socket", "voice_settings",
    "xi_api_key", "type", "transcript", "continue", "cancel", "voice", "output_format",
    "add_timestamps", "max_buffer_delay_ms", "speed", "model_id", "language", "mode", "id",
    "encoding", "sample_rate", "container", "__experimental_controls",
]  # fmt: skip
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True),
    st.text(max_size=30),
    st.sampled_from(["Speak", "Flush", "Clear", "Close", "id", "raw", "pcm_f32le", " ", ""]),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=12,
)
messages = st.one_of(
    st.dictionaries(st.sampled_from(KEYS), values, max_size=8).map(json.dumps),
    values.map(json.dumps),
    st.text(max_size=60),
)


def feed(codec: Any, texts: list[str]) -> None:
    for text in texts:
        try:
            out = codec.decode(text)
        except i.DialectError as err:
            assert err.code and err.message
            continue
        assert isinstance(out, list)
        for intent in out:
            assert isinstance(
                intent, i.Open | i.Say | i.Flush | i.Finish | i.Cancel | i.Stop | i.CloseSocket
            )


@settings(max_examples=300)
@given(st.lists(messages, max_size=8))
def test_elevenlabs_multi(texts: list[str]) -> None:
    feed(ElevenLabsCodec("v", {"output_format": "pcm_16000"}, True), texts)


@settings(max_examples=200)
@given(st.lists(messages, max_size=8))
def test_elevenlabs_single(texts: list[str]) -> None:
    feed(ElevenLabsCodec("v", {}, False), texts)


@settings(max_examples=300)
@given(st.lists(messages, max_size=8))
def test_deepgram(texts: list[str]) -> None:
    feed(DeepgramCodec({}, {"v"}, {"piper"}), texts)


@settings(max_examples=300)
@given(st.lists(messages, max_size=8))
def test_cartesia(texts: list[str]) -> None:
    feed(CartesiaCodec(), texts)
