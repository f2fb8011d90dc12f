"""Resume: a conversation takes over another node's (or connection's) session from its
journal (server/ws/resume.py reads it from the store)."""

from __future__ import annotations

import numpy as np

from server import protocol as p
from server.conversation.core import Conversation
from server.conversation.phase import Phase
from server.conversation.setup import StreamSpec
from server.conversation.types import CLOSE_NORMAL, Restore


def restore_into(
    conv: Conversation, r: Restore, spec: StreamSpec, resume_token: str, **ready: object
) -> None:
    """Take over a resumed session: replay its frames from ``r.next_frame``, then
    synthesize the text it accepted and had not synthesized yet, marks in place."""
    conv.rename(r.session_id)
    conv.resumed = True
    conv.start(spec, resume_token, **ready)
    if r.carry:  # the start of the next frame, cut at the last chunk's end
        spec.pipeline.carry_in(np.frombuffer(r.carry, dtype=np.float32))
    conv.frames_sent = r.next_frame
    conv.segments = r.segments
    conv.chars_in = r.chars_in
    conv.marks_in = r.marks_in
    for message, frame in r.replay:
        if message:
            conv.outbox.put_message(message, droppable=True)
        conv.outbox.put_frame(frame)
    pos = r.done_chars
    if r.chunk is not None:  # finish the chunk in progress from its engine audio
        ch = r.chunk
        # ch.text is the journal's span: the whitespace before the chunk, then the chunk
        job = conv._job("chunk", ch.text.lstrip(), index=ch.index)
        job.raw_chars = len(ch.text)
        job.audio, job.skip_frames = ch.audio, ch.skip_frames
        spec.worker.submit(job)
        conv.pending_chars += len(ch.text)
        conv.segments = max(conv.segments, ch.index + 1)
        pos += len(ch.text)
    for offset, kind in r.marks:  # already in the journal
        conv._submit_chunks(conv.chunker.push(r.text[pos:offset]))
        pos = offset
        conv._apply_mark(kind)
    conv._submit_chunks(conv.chunker.push(r.text[pos:]))
    if r.finished:
        conv._go(Phase.CLOSING)
        conv.outbox.put_message(p.Done(frames=0), droppable=True)
        conv.close_after = (CLOSE_NORMAL, "done")
    conv.notify()
