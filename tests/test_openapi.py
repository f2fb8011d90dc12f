"""The OpenAPI document is valid, generated from the types, served with its /docs page."""

from __future__ import annotations

import httpx
from openapi_spec_validator import validate

from server.openapi import document
from tests.support import ServerProcess


def test_document_is_valid_openapi_3_1() -> None:
    doc = document()
    validate(doc)  # an outside validator
    speech = doc["components"]["schemas"]["SpeechRequest"]
    assert speech["properties"]["input"]["maxLength"] == 4096
    assert speech["properties"]["speed"]["minimum"] == 0.25
    assert set(speech["required"]) == {"model", "input", "voice"}
    assert "/v1/audio/speech" in doc["paths"] and "/v1/tokens" in doc["paths"]
    voices = doc["paths"]["/v1/voices"]
    assert set(voices) == {"get", "post"} and "multipart/form-data" in str(voices["post"])
    assert set(doc["paths"]["/v1/voices/{voice_id}"]) == {"parameters", "get", "delete"}
    assert "/v1/voices/{voice_id}/preview" in doc["paths"]


def test_served_document_and_docs_page(server: ServerProcess) -> None:
    r = httpx.get(server.http + "/openapi.json")
    assert r.status_code == 200 and r.json() == document()
    r = httpx.get(server.http + "/docs", follow_redirects=True)
    assert r.status_code == 200 and '<script type="module" src="docs.js">' in r.text
    js = httpx.get(server.http + "/docs/docs.js")
    assert js.status_code == 200 and "/openapi.json" in js.text
    # nothing on the page comes from another host
    assert "http://" not in r.text and "https://" not in r.text
    assert "http" not in js.text.replace("/openapi.json", "")


def test_engines_and_voices_match_their_schemas(server: ServerProcess) -> None:
    schemas = document()["components"]["schemas"]
    for path, name in (("/v1/engines", "EnginesResponse"), ("/v1/voices", "VoicesResponse")):
        body = httpx.get(server.http + path).json()
        # every required field, and nothing the schema does not name (`upload` is
        # optional: only nodes that can clone voices have it)
        assert set(schemas[name]["required"]) <= set(body) <= set(schemas[name]["properties"])
