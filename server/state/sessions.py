"""Session state for resume: a record, the text it accepted, and its recent frames.

A session is journaled as it runs so that a client whose connection dropped can
resume it on any node: the record (its settings, counters and owner), the text it
accepted (appended as it arrives), its flush/end marks (with their text offsets),
and a bounded replay window of the encoded frames it committed.

Nothing is sent before it is here. A chunk's engine audio (PCM) is journaled before
its first frame is encoded, and each slice of frames is committed before it is sent,
in one atomic step with the counters (``commit``). A node that takes a session over
replays the window, re-encodes the rest of the chunk in progress from its journaled
PCM (skipping the frames already committed: same samples, same frame grid), then
synthesizes the text from there on. No frame is lost or repeated, even when the old
node died mid-chunk; regenerating the chunk instead would not do, because the
engines are not deterministic (Piper's noise, F5's sampling).

An engine worker that cannot journal a chunk's audio ahead (F5's batched worker,
whose chunk arrives piece by piece) commits a chunk's frames whole at its end.

Every write names the writer (``owner``, one per attachment of a session to a
connection). ``takeover`` gives the session a new owner; the old one's writes are
then refused (``moved``), which is how a node learns the session went elsewhere.

Two implementations with the same behaviour: ``RedisSessionStore`` (one Lua script
per write, so a write is all-or-nothing even if the node dies in it) and
``MemorySessionStore`` (one process: resume on the same node).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

import msgspec
import structlog

from server.state import session_scripts as lua

if TYPE_CHECKING:
    from server.state.connect import StateRedis

log = structlog.get_logger("voxwire.sessions")

Fence = Literal["ok", "moved", "gone"]


class ResumeUnavailable(Exception):
    """The session's journal was broken (the store failed while it ran)."""


class TokenUsed(Exception):
    """The session was taken over since the resume token was minted: the token was
    used already (a token is good for one takeover; ``ready`` brings the next)."""


class StoredFrame(msgspec.Struct, array_like=True):
    n: int  # frame number: the n-th binary message of the session
    audio: bytes
    message: str  # a text message sent just before the frame ("" for none)


class ChunkAudio(msgspec.Struct, kw_only=True):
    """The chunk being spoken: its engine audio, journaled before its first frame."""

    index: int  # segment index
    first: int  # number of its first frame
    chars: int  # its text: the next ``chars`` characters after ``done_chars``
    pcm: bytes  # 16-bit mono at the engine's rate


class Commit(msgspec.Struct, kw_only=True):
    """Output made durable at once: a slice of frames, or a whole chunk, or a mark's."""

    chunk: ChunkAudio | None = None  # a chunk starts (before the frames below)
    chunk_done: bool = False  # the chunk in progress ended (with these frames)
    frames: list[StoredFrame]  # numbered from the record's ``frames`` on
    chars: int = 0  # accepted text this finishes (chunk spans are contiguous)
    marks: int = 0  # flush/end marks this finishes
    finished: bool = False  # the end mark: the session's audio is complete
    carry: bytes = b""  # framer remainder (float32 samples at the output rate)
    segments: int = 0  # next segment index


class Snapshot(msgspec.Struct, kw_only=True):
    """What a node taking a session over needs."""

    session_id: str
    meta: bytes  # the session's resolved settings (JSON, written by the session)
    epoch: int  # how many times the session was taken over
    frames: int  # frames committed
    acked: int  # last frame the client acknowledged (-1: none)
    done_chars: int  # accepted text already synthesized (or dropped by a cancel)
    marks_done: int
    finished: bool
    carry: bytes
    segments: int
    text: str  # every character accepted, from the start
    marks: list[tuple[int, str]]  # (text offset, "flush" | "end"), from the start
    chunk: ChunkAudio | None  # the chunk that was being spoken, if any


class Peek(msgspec.Struct, kw_only=True):
    """A session's counters, read without taking it over (to check a resume first)."""

    frames: int
    acked: int
    oldest: int | None  # the oldest frame the replay window holds (None: empty)


class SessionStore(Protocol):
    ttl_s: float

    async def peek(self, session_id: str) -> Peek | None:
        """None if the session does not exist; raises ResumeUnavailable if broken."""
        ...

    async def create(self, session_id: str, owner: str, meta: bytes, replay_frames: int) -> None:
        """A new session; its replay window holds its newest ``replay_frames`` frames."""
        ...

    async def append_text(self, session_id: str, owner: str, text: str) -> Fence: ...

    async def add_mark(self, session_id: str, owner: str, offset: int, kind: str) -> Fence: ...

    async def commit(self, session_id: str, owner: str, c: Commit) -> Fence: ...

    async def cancel(
        self, session_id: str, owner: str, sent: int, chars: int, marks: int
    ) -> Fence: ...

    async def ack(self, session_id: str, owner: str, frame: int) -> Fence: ...

    async def heartbeat(self, session_id: str, owner: str) -> Fence: ...

    async def poison(self, session_id: str, owner: str) -> None: ...

    async def delete(self, session_id: str, owner: str) -> None: ...

    async def takeover(
        self, session_id: str, owner: str, epoch: int | None = None
    ) -> Snapshot | None:
        """Make ``owner`` the session's writer; None if it does not exist (any more).

        With ``epoch`` (the one the resume token was minted in), only if the session
        is still in that epoch, else TokenUsed: of two resumes with one token, one wins.
        """
        ...

    async def frames_from(self, session_id: str, first: int) -> list[StoredFrame]:
        """The committed frames numbered ``first`` and later that the window still holds."""
        ...

    async def ping(self) -> None: ...


# ---------------------------------------------------------------- memory


@dataclass(slots=True)
class _Mem:
    meta: bytes
    owner: str
    expires: float
    window: deque[StoredFrame]
    epoch: int = 0
    frames: int = 0
    acked: int = -1
    done_chars: int = 0
    marks_done: int = 0
    finished: bool = False
    broken: bool = False
    carry: bytes = b""
    segments: int = 0
    text: list[str] = field(default_factory=list)
    marks: list[tuple[int, str]] = field(default_factory=list)
    chunk: ChunkAudio | None = None


class MemorySessionStore:
    """One process's sessions (the embedded default): resume on the same node."""

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._s: dict[str, _Mem] = {}
        self._next_sweep = 0.0

    def _get(self, sid: str) -> _Mem | None:
        now = time.monotonic()
        if now >= self._next_sweep:  # expired sessions go away even if never touched again
            self._next_sweep = now + 1.0
            for k in [k for k, v in self._s.items() if v.expires <= now]:
                del self._s[k]
        s = self._s.get(sid)
        if s is not None and s.expires <= now:
            del self._s[sid]
            return None
        return s

    def _fenced(self, sid: str, owner: str) -> tuple[Fence, _Mem | None]:
        s = self._get(sid)
        if s is None:
            return "gone", None
        if s.owner != owner:
            return "moved", None
        s.expires = time.monotonic() + self.ttl_s
        return "ok", s

    async def create(self, session_id: str, owner: str, meta: bytes, replay_frames: int) -> None:
        self._s[session_id] = _Mem(
            meta=meta,
            owner=owner,
            expires=time.monotonic() + self.ttl_s,
            window=deque(maxlen=replay_frames),
        )

    async def append_text(self, session_id: str, owner: str, text: str) -> Fence:
        f, s = self._fenced(session_id, owner)
        if s is not None:
            s.text.append(text)
        return f

    async def add_mark(self, session_id: str, owner: str, offset: int, kind: str) -> Fence:
        f, s = self._fenced(session_id, owner)
        if s is not None:
            s.marks.append((offset, kind))
        return f

    async def commit(self, session_id: str, owner: str, c: Commit) -> Fence:
        f, s = self._fenced(session_id, owner)
        if s is not None:
            if c.chunk is not None:
                s.chunk = c.chunk
            for fr in c.frames:
                s.window.append(StoredFrame(s.frames, fr.audio, fr.message))
                s.frames += 1
            s.done_chars += c.chars
            s.marks_done += c.marks
            s.finished = s.finished or c.finished
            s.carry = c.carry
            s.segments = c.segments
            if c.chunk_done:
                s.chunk = None
        return f

    async def cancel(self, session_id: str, owner: str, sent: int, chars: int, marks: int) -> Fence:
        f, s = self._fenced(session_id, owner)
        if s is not None:
            while s.window and s.window[-1].n >= sent:
                s.window.pop()
            s.frames = min(s.frames, sent)
            s.done_chars = chars
            s.marks_done = marks
            s.carry = b""
            s.chunk = None
        return f

    async def ack(self, session_id: str, owner: str, frame: int) -> Fence:
        f, s = self._fenced(session_id, owner)
        if s is not None:
            s.acked = max(s.acked, frame)
        return f

    async def heartbeat(self, session_id: str, owner: str) -> Fence:
        return self._fenced(session_id, owner)[0]

    async def poison(self, session_id: str, owner: str) -> None:
        _, s = self._fenced(session_id, owner)
        if s is not None:
            s.broken = True

    async def delete(self, session_id: str, owner: str) -> None:
        f, _ = self._fenced(session_id, owner)
        if f == "ok":
            del self._s[session_id]

    async def peek(self, session_id: str) -> Peek | None:
        s = self._get(session_id)
        if s is None:
            return None
        if s.broken:
            raise ResumeUnavailable(session_id)
        oldest = s.window[0].n if s.window else None
        return Peek(frames=s.frames, acked=s.acked, oldest=oldest)

    async def takeover(
        self, session_id: str, owner: str, epoch: int | None = None
    ) -> Snapshot | None:
        s = self._get(session_id)
        if s is None:
            return None
        if s.broken:
            raise ResumeUnavailable(session_id)
        if epoch is not None and s.epoch != epoch:
            raise TokenUsed(session_id)
        s.owner = owner
        s.epoch += 1
        s.expires = time.monotonic() + self.ttl_s
        return Snapshot(
            session_id=session_id,
            meta=s.meta,
            epoch=s.epoch,
            frames=s.frames,
            acked=s.acked,
            done_chars=s.done_chars,
            marks_done=s.marks_done,
            finished=s.finished,
            carry=s.carry,
            segments=s.segments,
            text="".join(s.text),
            marks=list(s.marks),
            chunk=s.chunk,
        )

    async def frames_from(self, session_id: str, first: int) -> list[StoredFrame]:
        s = self._get(session_id)
        return [] if s is None else [f for f in s.window if f.n >= first]

    async def ping(self) -> None:
        return None


# ---------------------------------------------------------------- Redis (scripts: session_scripts)


def _s(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else v


class RedisSessionStore:
    """Sessions in Redis, shared by every node; each write is one Lua script.

    It counts each writer's journal writes (``_writes``) so that a record that lost
    some of them (a failover: see session_scripts.SEQ) refuses the next one; the
    writer is told ``gone``, which ends resume for its session.
    """

    def __init__(self, redis: StateRedis, prefix: str, ttl_s: float) -> None:
        self.redis = redis
        self.prefix = prefix
        self.ttl_s = ttl_s
        self._ttl_ms = max(1, int(ttl_s * 1000))
        # (session, owner) -> (writes applied, last use): this node's writers. An entry
        # idle for two TTLs is dropped (its record has expired, or its writer stopped
        # without deleting it); a writer without one writes unchecked.
        self._writes: dict[tuple[str, str], tuple[int, float]] = {}
        self._next_sweep = 0.0
        reg = redis.register_script
        self._create = reg(lua.CREATE)
        self._append = reg(lua.APPEND)
        self._mark = reg(lua.MARK)
        self._commit = reg(lua.COMMIT)
        self._cancel = reg(lua.CANCEL)
        self._ack = reg(lua.ACK)
        self._heartbeat = reg(lua.HEARTBEAT)
        self._poison = reg(lua.POISON)
        self._delete = reg(lua.DELETE)
        self._takeover = reg(lua.TAKEOVER)

    def keys(self, sid: str) -> list[str]:
        # {sid} is a hash tag: on a Redis Cluster a session's keys share a slot, as its
        # multi-key scripts need.
        base = f"{self.prefix}session:{{{sid}}}"
        return [base, base + ":text", base + ":marks", base + ":frames", base + ":pcm"]

    def _count(self, sid: str, owner: str) -> str:
        """The writes ``owner`` made to the record, as SEQ's argument ('': unknown)."""
        now = time.monotonic()
        if now >= self._next_sweep:
            self._next_sweep = now + self.ttl_s
            idle = now - 2 * self.ttl_s
            for k in [k for k, (_, used) in self._writes.items() if used < idle]:
                del self._writes[k]
        known = self._writes.get((sid, owner))
        return "" if known is None else str(known[0])

    def _counted(self, sid: str, owner: str, writes: int | None) -> None:
        if writes is None:
            self._writes.pop((sid, owner), None)
        else:
            self._writes[(sid, owner)] = (writes, time.monotonic())

    async def _run(self, script: object, sid: str, owner: str, *args: object) -> str:
        r = await script(keys=self.keys(sid), args=[owner, self._ttl_ms, *args])  # type: ignore[operator]
        return _s(r)

    async def _fenced(self, script: object, sid: str, owner: str, *args: object) -> Fence:
        out: Fence = await self._run(script, sid, owner, *args)  # type: ignore[assignment]
        if out != "ok":
            self._counted(sid, owner, None)
        return out

    async def _write(self, script: object, sid: str, owner: str, *args: object) -> Fence:
        """A journal write, sequenced (session_scripts.SEQ)."""
        count = self._count(sid, owner)
        r = await self._run(script, sid, owner, count, *args)
        if r == "lost":  # the count stays as it was: every later write is refused too
            log.warning(
                "session_writes_lost",
                session_id=sid,
                error="the state store lost writes of this session (a failover to a "
                "replica that had not received them); it can no longer be resumed",
            )
            return "gone"
        self._counted(sid, owner, int(count) + 1 if r == "ok" and count else None)
        out: Fence = r  # type: ignore[assignment]
        return out

    async def create(self, session_id: str, owner: str, meta: bytes, replay_frames: int) -> None:
        await self._create(
            keys=self.keys(session_id), args=[owner, self._ttl_ms, meta, replay_frames]
        )
        self._counted(session_id, owner, 0)

    async def append_text(self, session_id: str, owner: str, text: str) -> Fence:
        return await self._write(self._append, session_id, owner, text)

    async def add_mark(self, session_id: str, owner: str, offset: int, kind: str) -> Fence:
        return await self._write(self._mark, session_id, owner, f"{offset}:{kind}")

    async def commit(self, session_id: str, owner: str, c: Commit) -> Fence:
        ch = c.chunk
        args: list[object] = [
            f"{ch.index}:{ch.first}:{ch.chars}" if ch is not None else "",
            ch.pcm if ch is not None else b"",
            c.chars,
            c.marks,
            1 if c.finished else 0,
            c.carry,
            c.segments,
            1 if c.chunk_done else 0,
        ]
        for f in c.frames:
            args += [f.message, f.audio]
        return await self._write(self._commit, session_id, owner, *args)

    async def cancel(self, session_id: str, owner: str, sent: int, chars: int, marks: int) -> Fence:
        return await self._write(self._cancel, session_id, owner, sent, chars, marks)

    async def ack(self, session_id: str, owner: str, frame: int) -> Fence:
        return await self._write(self._ack, session_id, owner, frame)

    async def heartbeat(self, session_id: str, owner: str) -> Fence:
        known = self._writes.get((session_id, owner))
        if known is not None:  # a live writer's count is kept while it beats
            self._counted(session_id, owner, known[0])
        return await self._fenced(self._heartbeat, session_id, owner)

    async def poison(self, session_id: str, owner: str) -> None:
        self._counted(session_id, owner, None)
        await self._fenced(self._poison, session_id, owner)

    async def delete(self, session_id: str, owner: str) -> None:
        self._counted(session_id, owner, None)
        await self._fenced(self._delete, session_id, owner)

    async def takeover(
        self, session_id: str, owner: str, epoch: int | None = None
    ) -> Snapshot | None:
        want = "" if epoch is None else str(epoch)
        r = await self._takeover(keys=self.keys(session_id), args=[owner, self._ttl_ms, want])
        if r is None:
            return None
        if not isinstance(r, list):
            if _s(r) == "used":
                raise TokenUsed(session_id)
            raise ResumeUnavailable(session_id)
        flat, text, marks, pcm = r
        h = {_s(flat[i]): flat[i + 1] for i in range(0, len(flat), 2)}
        chunk = None
        if "chunk" in h:
            index, first, chars = (int(x) for x in _s(h["chunk"]).split(":"))
            chunk = ChunkAudio(index=index, first=first, chars=chars, pcm=bytes(pcm))

        def num(k: str) -> int:
            return int(h[k])

        # (a record from before writes were counted has no count: SEQ starts it at 0)
        self._counted(session_id, owner, int(h.get("w", 0)))

        parsed: list[tuple[int, str]] = []
        for m in marks:
            off, kind = _s(m).split(":", 1)
            parsed.append((int(off), kind))
        return Snapshot(
            session_id=session_id,
            meta=bytes(h["meta"]),
            epoch=num("epoch"),
            frames=num("frames"),
            acked=num("acked"),
            done_chars=num("done_chars"),
            marks_done=num("marks_done"),
            finished=num("finished") == 1,
            carry=bytes(h["carry"]),
            segments=num("segments"),
            text=_s(text),
            marks=parsed,
            chunk=chunk,
        )

    async def peek(self, session_id: str) -> Peek | None:
        key, _, _, frames_key, _ = self.keys(session_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hmget(key, ["frames", "acked", "broken"])
            pipe.xrange(frames_key, count=1)
            (frames, acked, broken), head = await pipe.execute()
        if frames is None:
            return None
        if broken is not None:
            raise ResumeUnavailable(session_id)
        oldest = int(head[0][1][b"n"]) if head else None
        return Peek(frames=int(frames), acked=int(acked), oldest=oldest)

    async def frames_from(self, session_id: str, first: int) -> list[StoredFrame]:
        out: list[StoredFrame] = []
        entries = await self.redis.xrange(self.keys(session_id)[3]) or []
        for _id, f in entries:
            assert f is not None
            n = int(f[b"n"])
            if n >= first:
                audio = f[b"a"]
                assert isinstance(audio, bytes)
                out.append(StoredFrame(n, audio, _s(f.get(b"m", b""))))
        return out

    async def ping(self) -> None:
        await self.redis.ping()
