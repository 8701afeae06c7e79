"""A job request that is not JSON is `415`, with the error envelope; nothing is stored."""

from __future__ import annotations

import orjson

from tests.conftest import Service
from tests.support import IMAGE_JOB


async def test_non_json_body_is_415(service: Service) -> None:
    client = service.client
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "application/xml"):
        response = await client.http.post(
            "/v1/jobs",
            content=orjson.dumps(IMAGE_JOB),
            headers=client.headers({"Content-Type": content_type}),
        )
        assert response.status_code == 415, (content_type, response.text)
        assert response.json()["error"]["type"] == "unsupported_media_type"
    charset = await client.http.post(
        "/v1/jobs",
        content=orjson.dumps(IMAGE_JOB),
        headers=client.headers({"Content-Type": "application/json; charset=utf-8"}),
    )
    assert charset.status_code == 201, charset.text
    listed = (await client.get("/v1/jobs")).json()["data"]
    assert [job["id"] for job in listed] == [charset.json()["id"]]


async def test_non_json_body_without_a_key_is_still_401(service: Service) -> None:
    response = await service.client.http.post(
        "/v1/jobs", content=b"model=x", headers={"Content-Type": "text/plain"}
    )
    assert response.status_code == 401
