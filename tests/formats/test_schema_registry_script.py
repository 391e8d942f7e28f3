"""scripts/schema-registry start --tls --basic-auth: a plain registry in the same DIR is restarted
secured on the same port, the URL stays the last line of stdout after NAME=value lines, only HTTPS
answers, anonymous calls are refused, and the password is not on the Java command line."""

from __future__ import annotations

import base64
import os
import ssl
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.formats.conftest import _run


def get(url: str, context: ssl.SSLContext | None = None, user_info: str | None = None) -> int:
    request = urllib.request.Request(f"{url}/schemas/types")
    if user_info:
        request.add_header(
            "Authorization", f"Basic {base64.b64encode(user_info.encode()).decode()}"
        )
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_start_tls_basic_auth_restarts_a_plain_registry_secured(tmp_path: Path) -> None:
    d = str(tmp_path / "registry")
    owner = str(os.getpid())
    try:
        plain = _run("start", "--dir", d, "--owner-pid", owner)
        assert plain.returncode == 0, plain.stderr
        assert plain.stdout.splitlines() == [plain.stdout.strip()]  # the URL alone
        http_url = plain.stdout.strip()
        assert http_url.startswith("http://127.0.0.1:")

        secured = _run("start", "--tls", "--basic-auth", "--dir", d, "--owner-pid", owner)
        assert secured.returncode == 0, secured.stderr
        assert "runs as plain; restarting it" in secured.stderr
        *lines, url = secured.stdout.strip().splitlines()
        assert url == http_url.replace("http://", "https://")  # same port
        named = dict(line.split("=", 1) for line in lines)
        assert sorted(named) == [
            "BASIC_AUTH_USER_INFO",
            "SSL_CA_LOCATION",
            "SSL_CERTIFICATE_LOCATION",
            "SSL_KEY_LOCATION",
        ]
        user_info = named["BASIC_AUTH_USER_INFO"]
        password = user_info.split(":", 1)[1]
        java = int(Path(d, "pid").read_text())
        assert password.encode() not in Path(f"/proc/{java}/cmdline").read_bytes()

        context = ssl.create_default_context(cafile=named["SSL_CA_LOCATION"])
        assert get(url, context, user_info) == 200
        assert get(url, context) == 401
        assert get(url, context, "etl:wrong") == 401
        with pytest.raises(OSError):  # the port speaks TLS only: a plain request is cut off
            get(http_url)

        status = _run("status", "--dir", d)
        assert status.returncode == 0, status.stdout
        assert status.stdout.strip().splitlines()[-1] == url
    finally:
        _run("stop", "--purge", "--dir", d)
