"""The IMDSv2 stand-in follows the IMDSv2 rules the module depends on."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from ansible_collections.mlhpc.cluster.tests.fixtures import imds_server as fixture

TTL = {fixture.TTL_HEADER: "60"}


def call(server, method, path, headers=None, timeout=5):
    """Return (status, body) of one request."""
    request = urllib.request.Request(server.url + path, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read().decode()


def token(server):
    status, body = call(server, "PUT", fixture.TOKEN_PATH, TTL)
    assert status == 200
    return body


def test_listens_on_an_ephemeral_loopback_port(imds_server):
    server = imds_server()
    assert server.host == "127.0.0.1"
    assert server.port > 0
    assert server.url == f"http://127.0.0.1:{server.port}"


@pytest.mark.parametrize("ttl", [None, "", "zero", "0", "21601"])
def test_token_request_without_a_valid_ttl_is_400(imds_server, ttl):
    server = imds_server()
    headers = {} if ttl is None else {fixture.TTL_HEADER: ttl}
    assert call(server, "PUT", fixture.TOKEN_PATH, headers)[0] == 400
    assert server.token_requests == 0


def test_token_request_through_a_proxy_is_403(imds_server):
    server = imds_server()
    status, _ = call(server, "PUT", fixture.TOKEN_PATH, {**TTL, "X-Forwarded-For": "10.0.0.1"})
    assert status == 403


def test_metadata_with_a_token(imds_server):
    server = imds_server(instance_type="trn1.32xlarge", instance_id="i-0abc", availability_zone="eu-west-1b")
    headers = {fixture.TOKEN_HEADER: token(server)}
    assert call(server, "GET", "/latest/meta-data/instance-type", headers) == (200, "trn1.32xlarge")
    assert call(server, "GET", "/latest/meta-data/instance-id", headers) == (200, "i-0abc")
    assert call(server, "GET", "/latest/meta-data/placement/availability-zone", headers) == (
        200,
        "eu-west-1b",
    )
    assert call(server, "GET", "/latest/meta-data/placement/region", headers) == (200, "eu-west-1")
    status, listing = call(server, "GET", "/latest/meta-data/", headers)
    assert status == 200
    assert set(listing.split()) == {"instance-id", "instance-type", "placement"}
    assert call(server, "GET", "/latest/meta-data/no-such-key", headers)[0] == 404


def test_token_ttl_is_echoed(imds_server):
    server = imds_server()
    request = urllib.request.Request(
        server.url + fixture.TOKEN_PATH, method="PUT", headers={fixture.TTL_HEADER: "120"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.headers[fixture.TTL_HEADER] == "120"
        assert len(response.read()) >= 32


@pytest.mark.parametrize(
    "headers", [{}, {fixture.TOKEN_HEADER: "not-a-token"}], ids=["no-token", "bad-token"]
)
def test_metadata_without_a_valid_token_is_401(imds_server, headers):
    server = imds_server()
    status, _ = call(server, "GET", "/latest/meta-data/instance-type", headers)
    assert status == 401
    assert server.unauthorized == 1


def test_an_expired_token_is_401(imds_server):
    now = [1000.0]
    server = imds_server(clock=lambda: now[0])
    headers = {fixture.TOKEN_HEADER: token(server)}
    now[0] += 59
    assert call(server, "GET", "/latest/meta-data/instance-type", headers)[0] == 200
    now[0] += 1
    assert call(server, "GET", "/latest/meta-data/instance-type", headers)[0] == 401


def test_refuses_the_first_token_requests(imds_server):
    server = imds_server(refuse_tokens=2, refuse_status=429)
    assert call(server, "PUT", fixture.TOKEN_PATH, TTL)[0] == 429
    assert call(server, "PUT", fixture.TOKEN_PATH, TTL)[0] == 429
    assert call(server, "PUT", fixture.TOKEN_PATH, TTL)[0] == 200
    assert (server.token_requests, server.refused_tokens) == (3, 2)


def test_delays_only_the_first_requests(imds_server):
    server = imds_server(delay=0.3, delay_first=1)
    with pytest.raises((TimeoutError, urllib.error.URLError)):
        call(server, "PUT", fixture.TOKEN_PATH, TTL, timeout=0.1)
    started = time.monotonic()
    assert call(server, "PUT", fixture.TOKEN_PATH, TTL, timeout=2)[0] == 200
    assert time.monotonic() - started < 0.3


def test_cli_serves_and_writes_its_port(tmp_path):
    port_file = tmp_path / "imds.port"
    script = Path(fixture.__file__)
    process = subprocess.Popen(
        [sys.executable, str(script), "--instance-type", "g5.48xlarge", "--port-file", str(port_file)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline()
        port = int(port_file.read_text())
        assert line.strip() == f"imds stand-in listening on http://127.0.0.1:{port}"
        server = fixture.ImdsStandIn(port=port)  # only for its url
        assert call(
            server, "GET", "/latest/meta-data/instance-type", {fixture.TOKEN_HEADER: token(server)}
        ) == (
            200,
            "g5.48xlarge",
        )
    finally:
        process.terminate()
        assert process.wait(timeout=5) == 0
        process.stdout.close()
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass
