"""The fetch stage: a pinned external file from a verified mirror or a download through the
shared HTTP layer, verified by sha256 before it is kept; what cannot be had is one line."""

from __future__ import annotations

import hashlib
import http.server
import threading
from pathlib import Path

import pytest

from tasks.errors import SourceError
from tasks.fetch.run import fetch_file
from tasks.params.fetch import ExternalFile, FetchHttp

FAST = FetchHttp(connect_timeout=2, read_timeout=5, retries=0)


@pytest.fixture(scope="module")
def cascade(shared) -> bytes:
    return (shared / "models" / "lbpcascade_animeface.xml").read_bytes()


@pytest.fixture()
def server(cascade):
    """127.0.0.1 serving /good (the cascade) and /bad (other bytes)."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            body = cascade if self.path == "/good" else b"<cascade>not it</cascade>"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


def pinned(cascade: bytes, dest: Path, url="http://127.0.0.1:9/none", mirrors=()) -> ExternalFile:
    return ExternalFile(url=url, sha256=hashlib.sha256(cascade).hexdigest(), path=str(dest), mirrors=tuple(mirrors))


def test_a_verified_mirror_is_copied_and_a_wrong_one_skipped(cascade, shared, tmp_path):
    wrong = tmp_path / "wrong.xml"
    wrong.write_bytes(b"tampered")
    dest = tmp_path / "models" / "cascade.xml"
    how = fetch_file(pinned(cascade, dest, mirrors=[wrong, shared / "models/lbpcascade_animeface.xml"]), FAST)
    assert "mirror" in how and dest.read_bytes() == cascade and not dest.is_symlink()
    assert "present" in fetch_file(pinned(cascade, dest), FAST)  # already there: nothing fetched


def test_a_symlink_is_replaced_by_a_real_file(cascade, shared, tmp_path):
    dest = tmp_path / "cascade.xml"
    dest.symlink_to(shared / "models/lbpcascade_animeface.xml")
    fetch_file(pinned(cascade, dest, mirrors=[shared / "models/lbpcascade_animeface.xml"]), FAST)
    assert not dest.is_symlink() and dest.read_bytes() == cascade


def test_download_is_verified_before_it_is_kept(cascade, server, tmp_path):
    dest = tmp_path / "cascade.xml"
    assert "downloaded" in fetch_file(pinned(cascade, dest, url=f"{server}/good"), FAST)
    assert dest.read_bytes() == cascade
    other = tmp_path / "other.xml"
    with pytest.raises(SourceError, match="not the pinned"):
        fetch_file(pinned(cascade, other, url=f"{server}/bad"), FAST)
    assert not other.exists() and [p.name for p in tmp_path.iterdir()] == ["cascade.xml"]  # no partial file left


def test_nothing_to_get_is_one_line_naming_the_file(cascade, tmp_path):
    dest = tmp_path / "cascade.xml"
    with pytest.raises(SourceError) as e:
        fetch_file(pinned(cascade, dest), FAST)
    msg = str(e.value)
    assert "\n" not in msg and str(dest) in msg and "cannot download" in msg
