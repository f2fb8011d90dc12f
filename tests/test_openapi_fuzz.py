"""The HTTP API fuzzed from its own OpenAPI document with schemathesis, against a real
server, with an API key and without: no 5xx, every response conforms to its documented
schema, status code, content type and headers, a 405's ``Allow`` names every method of
the path, schema-valid requests are accepted and invalid ones refused, and (with keys)
missing or wrong credentials are refused. Seeded and deterministic, and bounded (a few
dozen cases per operation) so each run takes well under a minute on two cores.

The node speaks with the zero-cost ``replay`` engine (``tts-1`` maps to it): the fuzz is
about the HTTP layer, and Piper speaking 4096-character inputs would take minutes.

Relaxed, each for a reason written next to it in ``_config``: the checks about
credentials on the node without keys (open by design), ``positive_data_acceptance``
where a schema-valid request is refused for what the schema cannot know (a voice name
that does not exist, a node without voice cloning, tokens on a node without keys), and
``object_level_authorization`` (one key: no second user to judge it with).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ServerProcess

KEY = "vw_fuzz_key_0123456789abcdef"
ST = Path(sys.executable).with_name("st")
SEED = 20261130
MAX_EXAMPLES = 25


def _config(with_key: bool) -> str:
    lines = [
        f"seed = {SEED}",
        "[generation]",
        "deterministic = true",  # derandomized, and no example database on disk
        f"max-examples = {MAX_EXAMPLES}",
        "[checks]",
        "object_level_authorization.enabled = false",
    ]
    if not with_key:
        # no keys configured: the node is open, so credentials are neither needed nor
        # checked (README, Access control)
        lines += ["ignored_auth.enabled = false", "missing_required_header.enabled = false"]
    lines += [
        "[[operations]]",
        'include-operation-id = "createSpeech"',
        # the voices are not in the schema (uploaded ones come and go): a voice that does
        # not exist is refused with 400 naming the available ones, as OpenAI does
        'checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "404"]',
        "[[operations]]",
        'include-operation-id = "createVoice"',
        # the test node runs no voice-cloning engine: every upload is refused (422
        # engine_not_enabled, documented), so only the refusals' shape is checked
        "checks.positive_data_acceptance.enabled = false",
    ]
    if not with_key:
        lines += [
            "[[operations]]",
            'include-operation-id = "mintToken"',
            # no keys, no tokens: 400 auth_disabled (documented)
            'checks.positive_data_acceptance.expected-statuses = ["2xx", "400"]',
        ]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("with_key", [True, False], ids=["api-key", "open"])
def test_http_api_conforms_to_its_openapi_document(with_key: bool, tmp_path: Path) -> None:
    settings: dict[str, object] = {
        "replay_engine": True,
        "engine": "replay",
        # the documented maximum of ttl_s, so a schema-valid ttl_s is one this node takes
        "token_max_ttl_s": 86400,
    }
    if with_key:
        settings["api_keys"] = KEY
    assert ST.exists(), "schemathesis is missing: pip install -e '.[test]'"
    config = tmp_path / "schemathesis.toml"
    config.write_text(_config(with_key))
    srv = ServerProcess(**settings)
    try:
        srv.wait_ready()
        cmd = [str(ST), "--config-file", str(config), "--no-color", "run"]
        cmd += [srv.http + "/openapi.json", "--workers", "1", "--request-timeout", "60"]
        if with_key:
            cmd += ["-H", f"Authorization: Bearer {KEY}"]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=600)
        report = proc.stdout[-12000:] + proc.stderr[-2000:]
        assert proc.returncode == 0, report
        assert "Selected: 11/11" in proc.stdout and " passed" in proc.stdout, report
        logs = srv.logs()
        assert "Traceback" not in logs and "Exception in ASGI application" not in logs
    finally:
        srv.stop()
