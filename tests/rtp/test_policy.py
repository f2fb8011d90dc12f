"""The RTP destination policy: allowlist syntax, matching, and the start rate."""

from __future__ import annotations

import pytest

from server.rtp.policy import StartRate, parse_allowlist, refusal


def test_entries_networks_and_port_ranges() -> None:
    allow = parse_allowlist(
        "10.0.0.0/8:40000-40999, 127.0.0.1:5004, [fd00::/8]:6000, 192.168.1.0/24"
    )
    assert refusal(allow, "10.20.30.40", 40500) is None
    assert refusal(allow, "10.20.30.40", 41000) is not None
    assert refusal(allow, "127.0.0.1", 5004) is None
    assert refusal(allow, "127.0.0.1", 5005) is not None
    assert refusal(allow, "fd12::1", 6000) is None
    assert refusal(allow, "fe80::1", 6000) is not None
    # a network without ports: 1024-65535, never the well-known ports (DNS, NTP...)
    assert refusal(allow, "192.168.1.7", 1024) is None
    assert refusal(allow, "192.168.1.7", 53) is not None
    # an IPv4-mapped IPv6 address is its IPv4 address
    assert refusal(allow, "::ffff:127.0.0.1", 5004) is None
    assert refusal(parse_allowlist("fd00::/8"), "fd00::9", 7000) is None


def test_a_refusal_says_why() -> None:
    why = refusal(parse_allowlist("10.0.0.0/8:40000-40999"), "8.8.8.8", 53)
    assert why is not None and "8.8.8.8 port 53" in why and "10.0.0.0/8:40000-40999" in why
    off = refusal((), "10.0.0.1", 40000)
    assert off is not None and "off" in off


@pytest.mark.parametrize(
    ("entry", "named"),
    [
        ("example.com:5000", "'example.com' is not an IP network"),
        ("10.0.0.0/8:0-10", "ports out of 1-65535"),
        ("10.0.0.0/8:70000", "ports out of 1-65535"),
        ("10.0.0.0/8:a-b", "bad port range"),
        ("10.0.0.0/8:5000-4000", "ports out of 1-65535"),
        ("[fd00::/8]x", "expected ]:PORTS"),
    ],
)
def test_bad_entries_are_named(entry: str, named: str) -> None:
    with pytest.raises(ValueError, match=named.replace("[", r"\[").replace("]", r"\]")):
        parse_allowlist(f"127.0.0.1, {entry}")


def test_the_setting_is_checked_at_start_up() -> None:
    import msgspec

    from server.config import load_settings

    with pytest.raises(msgspec.ValidationError, match="rtp_allowed_destinations"):
        load_settings(env={"VOXWIRE_RTP_ALLOWED_DESTINATIONS": "nonsense"})
    assert load_settings(env={"VOXWIRE_RTP_ALLOWED_DESTINATIONS": "10.0.0.0/8"})


def test_start_rate_is_a_sliding_minute_per_client() -> None:
    rate = StartRate(2)
    assert rate.take("a", 0.0) and rate.take("a", 1.0)
    assert not rate.take("a", 2.0)
    assert rate.take("b", 2.0)  # another client has its own window
    assert rate.take("a", 60.5)  # the first start left the window
    assert not rate.take("a", 60.6)
    assert StartRate(0).take("a", 0.0)  # 0: unlimited
