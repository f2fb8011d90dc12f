"""Real-time pacing of a frame stream (sans-I/O): frames leave no more than ``lead_s``
ahead of the listener.

A telephony bridge that forwards blindly (Twilio plays whatever it is sent) holds in
the far end's buffer all the audio the server has sent and the listener has not heard
yet. Sent as fast as it is made, that is the whole utterance, and a barge-in cannot
take it back. Paced, it is at most the lead.

The listener's playhead is modelled as starting with the first frame of a talkspurt
and moving at real time. When it passes the audio sent (the engine stalled, the
utterance ended, the socket was slow), the far end has run dry: the next frame starts
a new talkspurt, so a stall is never followed by a catch-up burst beyond the lead.
"""

from __future__ import annotations

_SLACK_S = 0.001  # a wait shorter than this is rounding, not pacing


class Pacer:
    __slots__ = ("_sent_s", "_t0", "frame_s", "lead_s")

    def __init__(self, frame_s: float, lead_s: float) -> None:
        self.frame_s = frame_s
        self.lead_s = lead_s
        self._t0: float | None = None  # when the talkspurt's first frame left
        self._sent_s = 0.0  # audio sent in this talkspurt

    def wait(self, now: float) -> float:
        """Seconds to wait before the next frame may leave (0: now)."""
        if self._t0 is None:
            return 0.0
        played = now - self._t0
        if played >= self._sent_s:
            return 0.0  # ran dry: the next frame starts a new talkspurt
        w = self._sent_s - played - self.lead_s
        return w if w > _SLACK_S else 0.0

    def starts_spurt(self, now: float) -> bool:
        """Whether a frame leaving at ``now`` starts a talkspurt (RTP's marker bit)."""
        return self._t0 is None or now - self._t0 >= self._sent_s

    def sent(self, now: float) -> None:
        """A frame left at ``now``."""
        if self.starts_spurt(now):
            self._t0, self._sent_s = now, 0.0
        self._sent_s += self.frame_s

    def ahead_s(self, now: float) -> float:
        """Audio sent and not yet played, by the model: what a blind forwarder holds."""
        if self._t0 is None:
            return 0.0
        return max(0.0, self._sent_s - (now - self._t0))
