from __future__ import annotations

import itertools
import shlex
import shutil
import struct
import subprocess
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import soxr

from server.streaming.encoder import (
    AudioEncoder,
    FlushingEncoder,
    OggOpusEncoder,
    OpusEncoder,
    flush_encoder,
    make_encoder,
    pre_skip,
)
from server.streaming.framer import Framer
from server.streaming.ogg import OggOpusWriter, ogg_crc32
from server.streaming.pipeline import AudioPipeline

needs_tools = pytest.mark.skipif(
    not all(shutil.which(t) for t in ("ffmpeg", "ffprobe", "opusdec")),
    reason="ffmpeg/ffprobe/opusdec not installed",
)


def _bitwise_crc(data: bytes) -> int:
    """Ogg CRC the slow way (bit by bit), independent of the module's table."""
    crc = 0
    for b in data:
        crc ^= b << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else crc << 1
            crc &= 0xFFFFFFFF
    return crc


@dataclass
class Page:
    flags: int
    granule: int
    serial: int
    seq: int
    crc: int
    lacing: bytes
    body: bytes
    raw: bytes


def parse_pages(data: bytes) -> list[Page]:
    pages = []
    pos = 0
    while pos < len(data):
        magic, version, flags, granule, serial, seq, crc, n = struct.unpack_from(
            "<4sBBqIIIB", data, pos
        )
        assert magic == b"OggS" and version == 0
        lacing = data[pos + 27 : pos + 27 + n]
        start = pos + 27 + n
        end = start + sum(lacing)
        pages.append(Page(flags, granule, serial, seq, crc, lacing, data[start:end], data[pos:end]))
        pos = end
    assert pos == len(data)
    return pages


def packets_of(pages: list[Page]) -> list[bytes]:
    packets: list[bytes] = []
    partial = b""
    for page in pages:
        assert bool(page.flags & 1) == bool(partial), "continued flag must match an open packet"
        pos = 0
        for value in page.lacing:
            partial += page.body[pos : pos + value]
            pos += value
            if value < 255:
                packets.append(partial)
                partial = b""
    assert partial == b""
    return packets


def check_pages(pages: list[Page]) -> None:
    for i, page in enumerate(pages):
        zeroed = page.raw[:22] + b"\0\0\0\0" + page.raw[26:]
        assert page.crc == _bitwise_crc(zeroed) == ogg_crc32(zeroed), f"bad CRC on page {i}"
        assert page.seq == i
        assert page.serial == pages[0].serial
        assert bool(page.flags & 2) == (i == 0), "BOS only on the first page"
        assert bool(page.flags & 4) == (i == len(pages) - 1), "EOS only on the last page"
        assert len(page.lacing) <= 255


def test_crc_check_value() -> None:
    # CRC-32 with poly 0x04C11DB7, init 0, no reflection, no final xor ("123456789").
    assert ogg_crc32(b"123456789") == 0x89A1897F == _bitwise_crc(b"123456789")


def _speechlike(rate: int, seconds: float) -> npt.NDArray[np.float32]:
    t = np.arange(int(rate * seconds)) / rate
    chirp = np.sin(2 * np.pi * (150 * t + 400 * t**2))  # 150 Hz rising to ~2.5 kHz
    tone = np.sin(2 * np.pi * 220 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 2 * t))
    return (0.3 * chirp + 0.2 * tone).astype(np.float32)


def _write_file(path: Path, rate: int, x: npt.NDArray[np.float32]) -> bytes:
    enc = OpusEncoder(rate, 20, 32000)
    scale = 48000 // rate
    writer = OggOpusWriter(rate, pre_skip=enc.lookahead * scale, serial=1234)
    framer = Framer(enc.frame_samples)
    chunks = [writer.headers()]
    streamed_before_finish = 0
    for i in range(0, x.size, 1000):
        for frame in framer.push(x[i : i + 1000]):
            page = writer.packet(enc.encode(frame), enc.frame_samples * scale)
            streamed_before_finish += len(page)
            chunks.append(page)
    pending = framer.pending
    tail = framer.finish(min_pad=enc.lookahead)
    for frame in tail:
        chunks.append(writer.packet(enc.encode(frame), enc.frame_samples * scale))
    trim = tail.size - pending - enc.lookahead  # padding left after the real audio
    chunks.append(writer.finish(trim_48k=trim * scale))
    assert streamed_before_finish > 0, "pages must come out while the stream is written"
    data = b"".join(chunks)
    path.write_bytes(data)
    return data


@needs_tools
@pytest.mark.parametrize("rate", [24000, 48000, 16000])
def test_real_file_decodes_with_exact_length(tmp_path: Path, rate: int) -> None:
    x = _speechlike(rate, 3.0)
    f = tmp_path / "speech.ogg"
    data = _write_file(f, rate, x)
    expected_48k = x.size * 48000 // rate

    pages = parse_pages(data)
    check_pages(pages)
    head = packets_of(pages[:1])[0]
    magic, version, channels, pre_skip, input_rate, gain, family = struct.unpack("<8sBBHIhB", head)
    assert (magic, version, channels, pre_skip, input_rate, gain, family) == (
        b"OpusHead", 1, 1, 312, rate, 0, 0,
    )  # fmt: skip
    assert len(pages[0].lacing) == 1 and pages[0].granule == 0
    assert packets_of(pages[1:2])[0].startswith(b"OpusTags") and pages[1].granule == 0
    audio = pages[2:]
    granules = [p.granule for p in audio]
    assert granules == sorted(granules)
    assert granules[-1] == expected_48k + pre_skip  # end trimmed to the real audio
    # About one page per second.
    assert 3 <= len(audio) <= 5
    assert all(47000 <= b - a <= 50000 for a, b in itertools.pairwise([0, *granules[:-1]]))
    assert len(packets_of(pages)) == 2 + sum(len(p.lacing) for p in audio)

    probe = subprocess.run(
        [
            *shlex.split(
                "ffprobe -v error -show_entries stream=codec_name,channels -of default=nw=1"
            ),
            str(f),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "codec_name=opus" in probe and "channels=1" in probe

    pcm = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(f), "-f", "s16le", "-ac", "1", "-ar", "48000", "-"],
        capture_output=True,
        check=True,
    ).stdout
    y_ff = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768
    assert abs(y_ff.size - expected_48k) <= 960

    out = tmp_path / "out.wav"
    subprocess.run(["opusdec", "--quiet", "--rate", "48000", str(f), str(out)], check=True)
    with wave.open(str(out)) as w:
        assert w.getframerate() == 48000 and w.getnchannels() == 1
        y_od = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float32) / 32768
    assert y_od.size == expected_48k  # opusdec honours pre-skip and the end trim exactly

    # Pre-skip removes the encoder delay: the decoded audio lines up with the input (SILK's
    # best waveform match sits up to ~0.1 ms early; a pre-skip error would be 6.5 ms).
    ref = soxr.resample(x, rate, 48000)
    for y in (y_ff, y_od):
        n = min(y.size, ref.size) - 100
        lags = list(range(-20, 21))
        corr = [np.corrcoef(y[100 + lag : n + lag], ref[100:n])[0, 1] for lag in lags]
        assert abs(lags[int(np.argmax(corr))]) <= 6
        assert max(corr) > 0.85


def test_lacing_and_packets_spanning_pages() -> None:
    w = OggOpusWriter(48000, 312, serial=7)
    sizes = [255, 510, 1, 0, 254, 256, 255 * 254, 300, 255 * 255, 70000, 3]
    rng = np.random.default_rng(5)
    packets = [rng.integers(0, 256, s, dtype=np.uint8).tobytes() for s in sizes]
    data = w.headers()
    for p in packets:
        data += w.packet(p, 960)
    data += w.finish()
    pages = parse_pages(data)
    check_pages(pages)
    assert packets_of(pages)[2:] == packets
    # Multiples of 255 end with a 0 lacing value.
    first_audio = pages[2]
    assert first_audio.lacing[:4] == b"\xff\x00\xff\xff"
    assert first_audio.lacing[4] == 0
    # A page on which no packet ends has granule -1, and the next one is marked continued.
    spanning = [i for i, p in enumerate(pages) if p.granule == -1]
    assert spanning
    for i in spanning:
        assert pages[i + 1].flags & 1
    # Granules count packets completed on each page.
    ends = [p.granule for p in pages[2:] if p.granule != -1]
    assert ends == sorted(ends) and ends[-1] == 960 * len(sizes)


def test_page_closes_at_255_segments() -> None:
    w = OggOpusWriter(48000, 312, serial=9)
    data = w.headers()
    for _ in range(300):
        data += w.packet(b"\x01\x02", 120)  # 2.5 ms packets: 255 of them are only 0.64 s
    data += w.finish()
    pages = parse_pages(data)
    check_pages(pages)
    assert [len(p.lacing) for p in pages[2:]] == [255, 45]
    assert [p.granule for p in pages[2:]] == [255 * 120, 300 * 120]


def test_final_trim_is_clamped_to_the_last_page() -> None:
    w = OggOpusWriter(48000, 312, serial=3)
    data = w.headers()
    for _ in range(60):  # 1.2 s: a full first page, then 10 packets
        data += w.packet(b"\x08", 960)
    data += w.finish(trim_48k=10**6)
    pages = parse_pages(data)
    check_pages(pages)
    assert pages[-1].granule == pages[-2].granule == 50 * 960


def test_empty_stream_and_misuse() -> None:
    w = OggOpusWriter(24000, 312)
    with pytest.raises(RuntimeError):
        w.packet(b"x", 960)
    data = w.headers() + w.finish()
    pages = parse_pages(data)
    check_pages(pages)
    assert len(pages) == 3 and pages[-1].lacing == b"" and pages[-1].granule == 0
    with pytest.raises(RuntimeError):
        w.packet(b"x", 960)
    with pytest.raises(ValueError, match="channels"):
        OggOpusWriter(24000, 312, channels=3)
    assert 0 <= OggOpusWriter(24000, 312).serial < 2**32


def test_vendor_string_in_tags() -> None:
    w = OggOpusWriter(16000, 312, serial=1, vendor="voxwire 0.1")
    pages = parse_pages(w.headers())
    tags = packets_of(pages[1:])[0]
    assert tags == b"OpusTags" + struct.pack("<I", 11) + b"voxwire 0.1" + struct.pack("<I", 0)


# --- live streams: close_page() and the ogg_opus encoder -----------------------------------


def test_close_page_sends_each_packet_at_once() -> None:
    w = OggOpusWriter(48000, 312, serial=11)
    data = w.headers()
    with_pages = []
    for i in range(5):
        data += w.packet(bytes([i]) * 40, 960)
        page = w.close_page()
        assert w.close_page() == b""  # nothing left on the page
        with_pages.append(page)
        data += page
    data += w.finish(trim_48k=500)  # nothing left to trim: an empty EOS page
    pages = parse_pages(data)
    check_pages(pages)
    assert [parse_pages(p)[0].body for p in with_pages] == [bytes([i]) * 40 for i in range(5)]
    assert [p.granule for p in pages[2:]] == [960, 1920, 2880, 3840, 4800, 4800]
    assert pages[-1].lacing == b""
    assert w.close_page() == b""  # after the end too
    with pytest.raises(RuntimeError):
        OggOpusWriter(48000, 312).close_page()


def _links(pages: list[Page]) -> list[list[Page]]:
    """A chained Ogg stream cut into its logical streams (BOS ... EOS)."""
    links: list[list[Page]] = []
    for page in pages:
        if page.flags & 2:
            links.append([])
        links[-1].append(page)
    return links


def _utterance(p: AudioPipeline, enc: AudioEncoder, x: npt.NDArray[np.float32]) -> list[bytes]:
    out: list[bytes] = []
    for i in range(0, x.size, 1000):
        out += p.push(x[i : i + 1000])
    out += p.finish()
    out.append(flush_encoder(enc))
    return out


def _ffmpeg_48k(path: Path) -> npt.NDArray[np.float32]:
    pcm = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-f", "f32le", "-ac", "1", "-ar", "48000", "-"],
        capture_output=True,
        check=True,
    ).stdout
    return np.frombuffer(pcm, dtype="<f4")


def _opusdec_48k(path: Path, tmp_path: Path) -> npt.NDArray[np.float32]:
    out = tmp_path / "opusdec.wav"
    subprocess.run(["opusdec", "--quiet", "--rate", "48000", str(path), str(out)], check=True)
    with wave.open(str(out)) as w:
        assert w.getframerate() == 48000 and w.getnchannels() == 1
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    return pcm.astype(np.float32) / np.float32(32768)


def _lines_up(y: npt.NDArray[np.float32], ref: npt.NDArray[np.float32]) -> float:
    """Best correlation of y with ref within ±0.25 ms (SILK's match sits a little early)."""
    n = min(y.size, ref.size) - 200
    return max(
        float(np.corrcoef(y[100 + lag : n + lag], ref[100:n])[0, 1]) for lag in range(-12, 13)
    )


@needs_tools
@pytest.mark.parametrize(("rate", "engine_rate"), [(48000, 24000), (24000, 22050), (16000, 16000)])
def test_ogg_opus_encoder_streams_a_valid_file(tmp_path: Path, rate: int, engine_rate: int) -> None:
    enc = make_encoder("ogg_opus", rate, 20, None)
    assert isinstance(enc, OggOpusEncoder) and isinstance(enc, AudioEncoder)
    assert isinstance(enc, FlushingEncoder) and pre_skip(enc) == 0  # the OpusHead has it
    p = AudioPipeline(engine_rate, enc)
    x = _speechlike(engine_rate, 3.0)
    frames = _utterance(p, enc, x)

    # The first frame carries the header pages; every frame is one page, sent at once.
    first = parse_pages(frames[0])
    assert [len(packets_of([pg])) for pg in first] == [1, 1, 1]
    assert packets_of(first)[0].startswith(b"OpusHead") and first[0].flags & 2
    assert all(len(parse_pages(f)) == 1 for f in frames[1:-1])
    pages = parse_pages(b"".join(frames))
    check_pages(pages)
    assert pages[-1].lacing == b"" and pages[-1].flags & 4  # the flush: an empty EOS page
    magic, _, channels, skip, input_rate = struct.unpack("<8sBBHI", packets_of(pages)[0][:16])
    scale = 48000 // rate
    assert (magic, channels, skip, input_rate) == (b"OpusHead", 1, enc.lookahead * scale, rate)
    audio = pages[2:-1]
    assert [pg.granule for pg in audio] == [960 * (i + 1) for i in range(len(audio))]

    f = tmp_path / "stream.opus"
    f.write_bytes(b"".join(frames))
    expected_48k = x.size * 48000 // engine_rate
    ref = soxr.resample(x, engine_rate, 48000)
    for y in (_ffmpeg_48k(f), _opusdec_48k(f, tmp_path)):
        # Decoders skip the pre-skip; the end keeps the pipeline's silent padding (< a frame).
        assert 0 <= y.size - expected_48k < 960
        assert y.size == (len(audio) * 960) - skip
        assert _lines_up(y, ref) > 0.9


@needs_tools
def test_ogg_opus_encoder_chains_utterances(tmp_path: Path) -> None:
    enc = make_encoder("ogg_opus", 48000, 20, 32000)
    assert isinstance(enc, OggOpusEncoder)
    assert flush_encoder(enc) == b"" and enc.serial is None  # no stream begun yet
    p = AudioPipeline(24000, enc)
    x = _speechlike(24000, 1.5)
    one = b"".join(_utterance(p, enc, x))
    two = b"".join(_utterance(p, enc, x))
    links = _links(parse_pages(one + two))
    assert len(links) == 2 and links[0][0].serial != links[1][0].serial
    for link in links:
        check_pages(link)  # each link: its own serial, sequence from 0, BOS ... EOS
    f1, f2 = tmp_path / "one.opus", tmp_path / "two.opus"
    f1.write_bytes(one)
    f2.write_bytes(one + two)
    ref = soxr.resample(x, 24000, 48000)
    for decode in (_ffmpeg_48k, lambda path: _opusdec_48k(path, tmp_path)):
        y1, y2 = decode(f1), decode(f2)
        assert y2.size == 2 * y1.size  # the second link decodes exactly like the first
        assert _lines_up(y2[: y1.size], ref) > 0.9
        assert _lines_up(y2[y1.size :], ref) > 0.9  # the encoder restarted with the link


def test_ogg_opus_encoder_pages_of_several_packets_and_reset() -> None:
    opus = OpusEncoder(24000, 20, 24000)
    enc = OggOpusEncoder(opus, packets_per_page=3)
    frame = np.full(480, 0.1, np.float32)
    out = [enc.encode(frame) for _ in range(7)]
    serial = enc.serial
    assert [len(parse_pages(o)) for o in out] == [2, 0, 1, 0, 0, 1, 0]  # headers wait for audio
    enc.reset()  # barge-in: the Opus state goes, the Ogg stream goes on
    assert enc.serial == serial
    out += [enc.encode(frame), enc.flush()]
    pages = parse_pages(b"".join(out))
    check_pages(pages)
    assert [len(pg.lacing) for pg in pages[2:]] == [3, 3, 2]  # the EOS page takes the rest
    assert [pg.granule for pg in pages[2:]] == [2880, 5760, 7680]
    with pytest.raises(ValueError, match="packets_per_page"):
        OggOpusEncoder(opus, packets_per_page=0)
    with pytest.raises(ValueError, match="480"):
        enc.encode(np.zeros(479, np.float32))
