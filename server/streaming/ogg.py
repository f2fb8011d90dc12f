"""Ogg Opus muxing (RFC 7845 on RFC 3533 pages), written incrementally so files can stream."""

from __future__ import annotations

import secrets
import struct

__all__ = ["OggOpusWriter", "ogg_crc32"]


def _make_crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        r = byte << 24
        for _ in range(8):
            r = ((r << 1) ^ 0x04C11DB7) if r & 0x80000000 else (r << 1)
        table.append(r & 0xFFFFFFFF)
    return tuple(table)


_CRC_TABLE = _make_crc_table()


def ogg_crc32(data: bytes | bytearray | memoryview, crc: int = 0) -> int:
    """The Ogg page checksum: CRC-32, polynomial 0x04C11DB7, initial 0, MSB first, no final xor.

    zlib.crc32 / binascii.crc32 use the same polynomial but bit-reflected, with initial value
    and final xor 0xFFFFFFFF, so they give a different number; hence this table-driven one.
    It runs once per page (about one per second of audio), not per frame.
    """
    table = _CRC_TABLE
    for b in data:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ table[(crc >> 24) ^ b]
    return crc


_FLAG_CONTINUED = 0x01
_FLAG_BOS = 0x02
_FLAG_EOS = 0x04
_MAX_SEGMENTS = 255
# Page header up to the segment count: "OggS", version, flags, granule, serial, sequence, crc.
_PAGE_HEADER = struct.Struct("<4sBBqIIIB")
_NO_GRANULE = -1  # a page on which no packet ends


class OggOpusWriter:
    """Builds an Ogg Opus stream page by page.

    Call headers() first, then packet() for every Opus packet, then finish(). Each returns the
    bytes of the pages it completed, ready to append to a file or a response body. A live
    stream calls close_page() to send a page before it is full.

    Audio pages close once they hold about one second of audio (or all 255 lacing values), so
    a player can start on a stream that is still being written. A full page is only sent out
    when the next packet arrives, so the final page always has a packet on it to carry the
    EOS flag and the end-trimmed granule position.
    """

    PAGE_SAMPLES_48K = 48000

    def __init__(
        self,
        input_sample_rate: int,
        pre_skip: int,
        serial: int | None = None,
        vendor: str = "voxwire",
        channels: int = 1,
    ) -> None:
        if channels not in (1, 2):
            raise ValueError(f"channels must be 1 or 2 (mapping family 0), got {channels}")
        if not 0 <= pre_skip <= 0xFFFF:
            raise ValueError(f"pre_skip {pre_skip} does not fit in 16 bits")
        self.input_sample_rate = input_sample_rate
        self.pre_skip = pre_skip
        self.serial = secrets.randbits(32) if serial is None else serial & 0xFFFFFFFF
        self.vendor = vendor
        self.channels = channels
        self._seq = 0
        self._granule = 0  # 48 kHz samples of all packets so far, pre-skip included
        self._started = False
        self._finished = False
        # The page being filled.
        self._lacing = bytearray()
        self._body = bytearray()
        self._page_granule = _NO_GRANULE
        self._page_samples = 0
        self._page_continued = False
        self._page_full = False
        self._prev_granule = 0

    def _page(self, flags: int, granule: int, lacing: bytes, body: bytes) -> bytes:
        header = _PAGE_HEADER.pack(
            b"OggS", 0, flags, granule, self.serial, self._seq, 0, len(lacing)
        )
        page = bytearray(header)
        page += lacing
        page += body
        struct.pack_into("<I", page, 22, ogg_crc32(page))
        self._seq += 1
        return bytes(page)

    @staticmethod
    def _lacing_values(size: int) -> bytes:
        # 255 means "the packet goes on"; a final value < 255 (0 for an exact multiple of 255)
        # ends it.
        return b"\xff" * (size // 255) + bytes((size % 255,))

    def headers(self) -> bytes:
        """The two header pages: OpusHead alone on a BOS page, then OpusTags."""
        if self._started:
            raise RuntimeError("headers() already written")
        self._started = True
        head = struct.pack(
            "<8sBBHIhB",
            b"OpusHead",
            1,  # version
            self.channels,
            self.pre_skip,
            self.input_sample_rate,
            0,  # output gain
            0,  # mapping family 0: mono or stereo, no mapping table
        )
        vendor = self.vendor.encode()
        tags = b"OpusTags" + struct.pack("<I", len(vendor)) + vendor + struct.pack("<I", 0)
        if len(tags) >= _MAX_SEGMENTS * 255:
            raise ValueError("vendor string too long for one page")
        return self._page(_FLAG_BOS, 0, self._lacing_values(len(head)), head) + self._page(
            0, 0, self._lacing_values(len(tags)), tags
        )

    def _flush(self, eos: bool = False) -> bytes:
        flags = (_FLAG_CONTINUED if self._page_continued else 0) | (_FLAG_EOS if eos else 0)
        page = self._page(flags, self._page_granule, bytes(self._lacing), bytes(self._body))
        if self._page_granule != _NO_GRANULE:
            self._prev_granule = self._page_granule
        self._lacing.clear()
        self._body.clear()
        self._page_granule = _NO_GRANULE
        self._page_samples = 0
        self._page_continued = False
        self._page_full = False
        return page

    def packet(self, data: bytes, samples_48k: int) -> bytes:
        """Add one Opus packet lasting `samples_48k` samples at 48 kHz; return finished pages."""
        if not self._started:
            raise RuntimeError("headers() must be written before packets")
        if self._finished:
            raise RuntimeError("stream already finished")
        out = bytearray()
        if self._page_full:
            out += self._flush()
        lacing = self._lacing_values(len(data))
        if self._lacing and len(self._lacing) + len(lacing) > _MAX_SEGMENTS:
            # Start a fresh page rather than split a packet that would fit on one.
            out += self._flush()
        self._granule += samples_48k
        self._page_samples += samples_48k
        pos = 0
        while True:
            room = _MAX_SEGMENTS - len(self._lacing)
            take = lacing[:room]
            lacing = lacing[room:]
            n_bytes = sum(take)
            self._lacing += take
            self._body += data[pos : pos + n_bytes]
            pos += n_bytes
            if not lacing:
                break
            # Only a packet of 255 * 255 bytes or more gets here: it spans pages.
            out += self._flush()
            self._page_continued = True
        self._page_granule = self._granule
        if self._page_samples >= self.PAGE_SAMPLES_48K or len(self._lacing) >= _MAX_SEGMENTS:
            self._page_full = True
        return bytes(out)

    def close_page(self) -> bytes:
        """Close the page being filled now and return it (b"" if it holds no packet).

        For live streams, where a page must not wait for a second of audio: call it after
        each packet() (or every few) to send the audio at once. The final page may then
        hold no packet, so finish() writes an empty EOS page and cannot trim the end.
        """
        if not self._started:
            raise RuntimeError("headers() must be written before pages")
        if self._finished or not self._lacing:
            return b""
        return self._flush()

    def finish(self, trim_48k: int = 0) -> bytes:
        """Write the last page with EOS; its granule drops the final `trim_48k` samples.

        The trim is clamped to the audio on the last page (RFC 7845 forbids a final granule
        below the previous page's).
        """
        if not self._started:
            raise RuntimeError("headers() must be written before finish()")
        if self._finished:
            raise RuntimeError("stream already finished")
        self._finished = True
        if self._page_granule == _NO_GRANULE:
            # No audio since the last page (none at all, or close_page() sent it): an empty
            # EOS page closes the stream.
            self._page_granule = self._granule
        else:
            trim = max(0, min(trim_48k, self._page_granule - self._prev_granule))
            self._page_granule -= trim
        return self._flush(eos=True)

    @property
    def granule(self) -> int:
        """48 kHz samples written so far, pre-skip included."""
        return self._granule
