"""semiseg3d fetch: SHA-256 checked downloads from a local HTTP server (no real network),
resume of a truncated .part file with an HTTP Range request, checksum failures, local-folder
copies, and the checksum list the package carries."""

from __future__ import annotations

import hashlib
import http.server
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from semiseg3d.cli import main as cli_main
from semiseg3d.data.download import fetch_la, list_digest, read_checksums, staging_dir
from semiseg3d.errors import InputError

H5_DIR = "2018LA_Seg_Training Set"
CASES = ("CASEAAAAAAAAAAAAAAA1", "CASEAAAAAAAAAAAAAAA2")


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """The local server must be reached directly, whatever proxy the environment sets."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves files under ``server.root``; honours ``Range: bytes=N-`` unless
    ``server.ignore_range``; records the Range header of each request."""

    def do_GET(self) -> None:  # noqa: N802 - http.server API
        server = self.server
        rel = urllib.parse.unquote(self.path.lstrip("/"))
        path = server.root / rel  # type: ignore[attr-defined]
        server.requests.append((rel, self.headers.get("Range")))  # type: ignore[attr-defined]
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        rng = self.headers.get("Range")
        if rng and not server.ignore_range:  # type: ignore[attr-defined]
            start = int(rng.removeprefix("bytes=").rstrip("-"))
            if start >= len(data):
                self.send_response(416)
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            body = data[start:]
        else:
            self.send_response(200)
            body = data
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        cut = server.cut_short.pop(rel, None)  # type: ignore[attr-defined]
        if cut is not None:  # promise the whole body, send a part, hang up
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:  # silence
        pass


@pytest.fixture
def release(tmp_path: Path) -> Path:
    """A fake release folder (like UA-MT's data/) and its checksum list."""
    root = tmp_path / "release"
    for i, case in enumerate(CASES):
        d = root / H5_DIR / case
        d.mkdir(parents=True)
        (d / "mri_norm2.h5").write_bytes(bytes((i * 7 + j) % 251 for j in range(5000)))
    (root / "train.list").write_text(f"{CASES[0]}\n")
    (root / "test.list").write_text(f"{CASES[1]}\n")
    lines = []
    for case in CASES:
        digest = hashlib.sha256((root / H5_DIR / case / "mri_norm2.h5").read_bytes()).hexdigest()
        lines.append(f"{digest}  {case}/mri_norm2.h5")
    for name in ("train.list", "test.list"):
        lines.append(f"{hashlib.sha256((root / name).read_bytes()).hexdigest()}  {name}")
    (tmp_path / "sums.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture
def server(release: Path) -> Iterator[http.server.HTTPServer]:
    httpd = http.server.HTTPServer(("127.0.0.1", 0), _Handler)
    httpd.root = release  # type: ignore[attr-defined]
    httpd.requests = []  # type: ignore[attr-defined]
    httpd.ignore_range = False  # type: ignore[attr-defined]
    httpd.cut_short = {}  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _url(httpd: http.server.HTTPServer) -> str:
    return f"http://127.0.0.1:{httpd.server_address[1]}"


def test_download_and_skip(server, release: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    sums = tmp_path / "sums.txt"
    summary = fetch_la(out, url_base=_url(server), checksums=sums, log=None)
    assert (summary.fetched, summary.skipped) == (4, 0)
    for case in CASES:
        got = (out / case / "mri_norm2.h5").read_bytes()
        assert got == (release / H5_DIR / case / "mri_norm2.h5").read_bytes()
    assert (out / "train.list").read_text() == f"{CASES[0]}\n"
    assert (out / "preprocess.json").is_file()
    # the folder with a space is URL-encoded
    assert (f"{H5_DIR}/{CASES[0]}/mri_norm2.h5", None) in server.requests
    server.requests.clear()
    again = fetch_la(out, url_base=_url(server), checksums=sums, log=None)
    assert (again.fetched, again.skipped) == (0, 4) and server.requests == []


@pytest.mark.parametrize("ignore_range", [False, True])
def test_resume_from_truncated_part(
    server, release: Path, tmp_path: Path, ignore_range: bool
) -> None:
    server.ignore_range = ignore_range
    out = tmp_path / "out"
    full = (release / H5_DIR / CASES[0] / "mri_norm2.h5").read_bytes()
    part = staging_dir(out) / CASES[0] / "mri_norm2.h5.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(full[:1234])
    fetch_la(out, url_base=_url(server), checksums=tmp_path / "sums.txt", log=None)
    assert (out / CASES[0] / "mri_norm2.h5").read_bytes() == full
    assert not part.exists()
    # the client asked for the rest only; a server that ignores Range gets a fresh file
    assert (f"{H5_DIR}/{CASES[0]}/mri_norm2.h5", "bytes=1234-") in server.requests


def test_checksum_mismatch_names_file_and_removes_it(server, release: Path, tmp_path: Path) -> None:
    bad = release / H5_DIR / CASES[1] / "mri_norm2.h5"
    bad.write_bytes(b"tampered" + bad.read_bytes()[8:])
    out = tmp_path / "out"
    with pytest.raises(InputError) as info:
        fetch_la(out, url_base=_url(server), checksums=tmp_path / "sums.txt", log=None)
    message = str(info.value)
    assert (
        message.startswith(str(out / CASES[1] / "mri_norm2.h5")) and "SHA-256 mismatch" in message
    )
    assert "\n" not in message
    assert not (out / CASES[1] / "mri_norm2.h5").exists()
    assert not (out / CASES[1] / "mri_norm2.h5.part").exists()
    assert not (out / "preprocess.json").exists()  # not marked complete


def test_part_with_wrong_prefix_fails_then_recovers(server, release: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    part = staging_dir(out) / CASES[0] / "mri_norm2.h5.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"\x00" * 100)  # not a prefix of the real file
    with pytest.raises(InputError, match="SHA-256 mismatch"):
        fetch_la(out, url_base=_url(server), checksums=tmp_path / "sums.txt", log=None)
    assert not part.exists()
    fetch_la(
        out, url_base=_url(server), checksums=tmp_path / "sums.txt", log=None
    )  # rerun fixes it
    assert (out / "preprocess.json").is_file()


def test_body_cut_short_resumes_with_range(server, release: Path, tmp_path: Path) -> None:
    rel = f"{H5_DIR}/{CASES[0]}/mri_norm2.h5"
    server.cut_short[rel] = 1500
    out = tmp_path / "out"
    fetch_la(out, url_base=_url(server), checksums=tmp_path / "sums.txt", log=None)
    assert (out / CASES[0] / "mri_norm2.h5").read_bytes() == (release / rel).read_bytes()
    # the second request asked for the rest, not for the whole file again
    assert [r for r in server.requests if r[0] == rel] == [(rel, None), (rel, "bytes=1500-")]


def test_unfinished_fetch_stays_out_of_the_final_folder(
    server, release: Path, tmp_path: Path
) -> None:
    second = release / H5_DIR / CASES[1] / "mri_norm2.h5"
    content = second.read_bytes()
    second.unlink()  # the server fails on the second case
    out = tmp_path / "out"
    # what a killed earlier run left: a half-written copy in the final folder
    (out / CASES[0]).mkdir(parents=True)
    stale = out / CASES[0] / ".mri_norm2.h5.x1y2.tmp.h5"
    stale.write_bytes(b"\0" * 10)
    with pytest.raises(InputError, match="download failed"):
        fetch_la(out, url_base=_url(server), checksums=tmp_path / "sums.txt", log=None)
    assert not stale.exists()
    assert [p for p in out.rglob("*") if p.is_file()] == []  # nothing verified in DIR yet
    staged = staging_dir(out) / CASES[0] / "mri_norm2.h5"
    assert staged.is_file()  # the verified first case waits in the staging folder
    second.write_bytes(content)
    server.requests.clear()
    summary = fetch_la(out, url_base=_url(server), checksums=tmp_path / "sums.txt", log=None)
    assert (summary.fetched, summary.skipped) == (3, 1)  # case 1 came from the staging folder
    assert all(CASES[0] not in r[0] for r in server.requests)
    assert (out / CASES[0] / "mri_norm2.h5").is_file() and (
        out / CASES[1] / "mri_norm2.h5"
    ).is_file()
    assert not staging_dir(out).exists()


def test_missing_file_on_server(server, release: Path, tmp_path: Path) -> None:
    (release / "test.list").unlink()
    with pytest.raises(InputError, match=r"test\.list: download failed \(HTTP 404"):
        fetch_la(tmp_path / "out", url_base=_url(server), checksums=tmp_path / "sums.txt", log=None)


def test_local_copy_crlf_lists_and_corrupt_source(release: Path, tmp_path: Path) -> None:
    # a local copy laid out like ../shared/data/LA (no "2018LA_Seg_Training Set" level)
    src = tmp_path / "local"
    for case in CASES:
        (src / case).mkdir(parents=True)
        (src / case / "mri_norm2.h5").write_bytes(
            (release / H5_DIR / case / "mri_norm2.h5").read_bytes()
        )
    (src / "train.list").write_bytes(f"{CASES[0]}\r\n\r\n".encode())  # CRLF + blank line
    (src / "test.list").write_text(f"{CASES[1]}\n")
    out = tmp_path / "out"
    rc = cli_main(
        ["fetch", "--dataset", "la", "--out", str(out), "--source-dir", str(src)]
        + ["--checksums", str(tmp_path / "sums.txt")]
    )
    assert rc == 0
    assert (out / "train.list").read_text() == f"{CASES[0]}\n"
    # a damaged source file is refused, named, and not copied
    out2 = tmp_path / "out2"
    (src / CASES[1] / "mri_norm2.h5").write_bytes(b"broken")
    with pytest.raises(InputError) as info:
        fetch_la(out2, source_dir=src, checksums=tmp_path / "sums.txt", log=None)
    assert str(info.value).startswith(str(src / CASES[1] / "mri_norm2.h5"))
    assert not out2.exists()  # nothing enters the final folder before all is verified
    assert sorted(p.name for p in (staging_dir(out2) / CASES[1]).iterdir()) == []
    # a list with other ids is refused too
    (src / CASES[1] / "mri_norm2.h5").write_bytes(
        (release / H5_DIR / CASES[1] / "mri_norm2.h5").read_bytes()
    )
    (src / "test.list").write_text(f"{CASES[0]}\n")
    with pytest.raises(InputError, match=r"test\.list: SHA-256 mismatch"):
        fetch_la(tmp_path / "out3", source_dir=src, checksums=tmp_path / "sums.txt", log=None)


def test_package_checksums_cover_the_shared_release(la_dir: Path) -> None:
    sums = read_checksums()
    shared = read_checksums(la_dir / "SHA256SUMS")
    assert {k: v for k, v in sums.items() if k.endswith(".h5")} == shared
    assert len(shared) == 100
    for name in ("train.list", "test.list"):
        assert sums[name] == list_digest((la_dir / name).read_text())


def test_checksum_list_errors(tmp_path: Path) -> None:
    bad = tmp_path / "sums.txt"
    bad.write_text("abc  x.h5\n")
    with pytest.raises(InputError, match="line 1"):
        read_checksums(bad)
    bad.write_text(f"{'0' * 64}  ../x.h5\n")
    with pytest.raises(InputError, match="relative"):
        read_checksums(bad)


def test_registration_datasets_say_where_to_get_them(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert cli_main(["fetch", "--dataset", "pancreas", "--out", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "TCIA" in err[0] and "semiseg3d convert --dataset pancreas" in err[0]
    assert not (tmp_path / "p").exists()
