"""Resume tokens: bound to one session, signed, expiring."""

from __future__ import annotations

import pytest

from server.state.tokens import ResumeTokenError, ResumeTokens, shared_secret
from tests.state.conftest import Connect


def _code(tokens: ResumeTokens, token: str, sid: str, now: float, key_id: str | None = None) -> str:
    with pytest.raises(ResumeTokenError) as err:
        tokens.verify(token, sid, key_id, now=now)
    return err.value.code


def test_mint_and_verify() -> None:
    t = ResumeTokens(b"secret")
    tok = t.mint("abc", ttl_s=60, now=1000.0)
    keyed = t.mint("abc", ttl_s=60, key_id="k1", now=1000.0)
    assert t.verify(keyed, "abc", key_id="k1", now=1000.0) == 0  # the epoch minted in
    later = t.mint("abc", ttl_s=60, now=1000.0, epoch=3)
    assert t.verify(later, "abc", now=1000.0) == 3
    assert _code(t, keyed, "abc", now=1000.0) == "resume_forbidden"
    assert _code(t, tok, "abc", now=1000.0, key_id="k2") == "resume_forbidden"
    t.verify(tok, "abc", now=1059.0)
    assert _code(t, tok, "abc", now=1060.0) == "resume_token_expired"
    assert _code(t, tok, "abd", now=1000.0) == "invalid_resume_token"
    assert _code(ResumeTokens(b"other"), tok, "abc", now=1000.0) == "invalid_resume_token"
    payload, sig = tok.split(".")
    tampered = sig[:-2] + ("AB" if sig.endswith("AA") else "AA")  # this one ends in AA
    assert _code(t, payload + "." + tampered, "abc", now=1000.0) == "invalid_resume_token"
    assert _code(t, "garbage", "abc", now=1000.0) == "invalid_resume_token"


async def test_nodes_share_one_secret_through_redis(redis_url: str, connect: Connect) -> None:
    a, b = connect(redis_url), connect(redis_url)
    sa = await shared_secret(a, "tok:resume_secret")
    sb = await shared_secret(b, "tok:resume_secret")
    assert sa == sb and len(sa) == 64
    tok = ResumeTokens(sa).mint("s", 10)
    ResumeTokens(sb).verify(tok, "s")
