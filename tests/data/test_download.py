"""Downloads against a real HTTP server on 127.0.0.1: good, broken and slow mirrors."""

from __future__ import annotations

import errno
import gzip
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from bnlab.data import sources
from bnlab.data.datasets import load_dataset
from bnlab.data.sources import read_files
from bnlab.errors import DataError
from tests.data.tinydata import NAMES, Tiny, other_gz

ROLES = {name: role for role, name in NAMES.items()}


@dataclass
class Server:
    """base: "http://127.0.0.1:PORT"; requests: every path asked for, in order."""

    base: str
    requests: list[str]

    def mirror(self, kind: str) -> str:
        return f"{self.base}/{kind}/"


@pytest.fixture
def server(tiny: Tiny) -> Iterator[Server]:
    """Serves each tiny file under /good/, /truncated/ (half, honest Content-Length),
    /short/ (half, then the connection drops), /wrong/ (another valid file), /slow/
    (never answers), /huge/ (announces more bytes than the file can be), /endless/ (sends
    that many with no Content-Length), /bomb/ (a small gzip of far too many bytes) and
    /empty/ (200 with no body); anything else is a 404."""
    routes: dict[str, tuple[bytes, int | None]] = {}  # path -> (payload, Content-Length)
    for name, payload in tiny.gz.items():
        half = payload[: len(payload) // 2]
        too_many = sources.max_download_bytes(tiny.spec.files()[ROLES[name]]) + 1
        routes[f"/good/{name}"] = (payload, len(payload))
        routes[f"/truncated/{name}"] = (half, len(half))
        routes[f"/short/{name}"] = (half, len(payload))
        routes[f"/wrong/{name}"] = (other_gz(), len(other_gz()))
        routes[f"/huge/{name}"] = (payload, too_many)
        routes[f"/endless/{name}"] = (bytes(too_many), None)
        bomb = gzip.compress(bytes(10 * too_many))
        routes[f"/bomb/{name}"] = (bomb, len(bomb))
        routes[f"/empty/{name}"] = (b"", 0)
    requests: list[str] = []
    release = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            requests.append(self.path)
            if self.path.startswith("/slow/"):
                release.wait(10)
                return
            if self.path not in routes:
                self.send_error(404)
                return
            payload, length = routes[self.path]
            self.send_response(200)
            if length is not None:
                self.send_header("Content-Length", str(length))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield Server(f"http://127.0.0.1:{httpd.server_port}", requests)
    release.set()
    httpd.shutdown()
    httpd.server_close()
    thread.join()


# Seconds a mirror may take to answer: /slow/ never does (it holds 10 s), and the local
# server's /good/ must answer within it on a loaded 2-core machine (0.25 s once timed out
# beside the other pytest worker's training).
TIMEOUT = 1.0


def files_under(directory: Path) -> list[str]:
    """Every file below `directory` (temp files included), relative, sorted."""
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file())


def download(tiny: Tiny, cache: Path, mirrors: list[str], **kwargs) -> list[sources.LocatedFile]:
    found = read_files(tiny.spec, cache_dir=cache, system_dirs=[], mirrors=mirrors, **kwargs)
    return [record for record, _ in found.values()]


def test_good_download_lands_in_the_cache_verified_and_is_reused(tiny, server, tmp_path):
    records = download(tiny, tmp_path, [server.mirror("good")])
    assert [r.origin for r in records] == ["download"] * 4
    assert all(r.path == tmp_path / "tiny" / r.path.name for r in records)
    assert files_under(tmp_path) == sorted(f"tiny/{name}" for name in NAMES.values())
    for record in records:
        assert record.path.read_bytes() == tiny.gz[record.path.name]
    asked = len(server.requests)
    again = download(tiny, tmp_path, [server.mirror("good")])
    assert [r.origin for r in again] == ["cache"] * 4
    assert len(server.requests) == asked  # nothing downloaded twice


@pytest.mark.parametrize("bad", ["missing", "truncated", "short", "wrong", "slow"])
def test_a_failing_mirror_falls_through_to_the_next_and_leaves_nothing_behind(
    tiny, server, tmp_path, bad
):
    records = download(tiny, tmp_path, [server.mirror(bad), server.mirror("good")],
                       timeout=TIMEOUT)
    assert [r.origin for r in records] == ["download"] * 4
    assert files_under(tmp_path) == sorted(f"tiny/{name}" for name in NAMES.values())
    assert server.requests[:2] == [f"/{bad}/{NAMES['train_images']}",
                                   f"/good/{NAMES['train_images']}"]


def test_all_mirrors_failing_is_one_line_naming_each_reason_and_the_fix(tiny, server, tmp_path):
    kinds = ["missing", "truncated", "short", "wrong", "slow"]
    with pytest.raises(DataError) as err:
        download(tiny, tmp_path, [server.mirror(kind) for kind in kinds], timeout=TIMEOUT)
    message = str(err.value)
    name = NAMES["train_images"]
    url = {kind: f"{server.mirror(kind)}{name}" for kind in kinds}
    assert message.startswith(f"could not download {name} [{url['missing']}: HTTP 404 ")
    assert f"{url['truncated']}: truncated gzip data" in message
    assert f"{url['short']}: the connection closed after " in message
    assert f"{url['wrong']}: wrong content (decompressed: " in message
    assert f"{url['slow']}: timed out" in message
    assert message.endswith(
        "; sudo apt-get install dataset-tiny, or pass data_dir=DIR holding the 4 .gz files "
        "of tiny"
    )
    assert "\n" not in message
    assert files_under(tmp_path) == []


@pytest.mark.parametrize(
    "mirror", ["http://example.com/data/", "http://10.0.0.1/", "ftp://127.0.0.1/", "file:///tmp/"]
)
def test_a_mirror_that_is_neither_https_nor_loopback_http_is_refused_up_front(
    tiny, tmp_path, mirror
):
    tiny.put(tmp_path / "tiny")  # even with every file cached, the bad option is reported
    with pytest.raises(DataError, match=r"is not an https:// URL \(plain http:// is allowed only"):
        download(tiny, tmp_path, [mirror])


def test_localhost_by_name_counts_as_loopback(tiny, server, tmp_path):
    mirror = server.mirror("good").replace("127.0.0.1", "localhost")
    assert [r.origin for r in download(tiny, tmp_path, [mirror])] == ["download"] * 4


def test_a_failed_save_removes_its_temp_file(tiny, server, tmp_path, monkeypatch):
    def disk_full(src: object, dst: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "replace", disk_full)
    with pytest.raises(DataError, match=r"cannot save .*tiny-train-images.gz \(No space left"):
        download(tiny, tmp_path, [server.mirror("good")])
    assert files_under(tmp_path) == []


def test_a_corrupt_cached_copy_is_replaced_by_a_verified_download_with_a_note(
        tiny, server, tmp_path):
    tiny.put(tmp_path / "tiny")
    bad = tmp_path / "tiny" / NAMES["train_labels"]
    bad.write_bytes(tiny.gz[NAMES["train_labels"]][:-9])  # the gzip trailer cut off
    records = {r.role: r for r in download(tiny, tmp_path, [server.mirror("good")])}
    replaced = records["train_labels"]
    assert (replaced.origin, replaced.path) == ("download", bad)
    assert replaced.notes == (f"{bad} is truncated: the gzip stream ends early; replaced it "
                              "with a fresh download",)
    assert bad.read_bytes() == tiny.gz[NAMES["train_labels"]]
    assert server.requests == [f"/good/{NAMES['train_labels']}"]  # only the bad one
    assert files_under(tmp_path) == sorted(f"tiny/{name}" for name in NAMES.values())


def test_a_corrupt_cached_copy_stays_the_error_when_the_download_fails_too(
        tiny, server, tmp_path):
    tiny.put(tmp_path / "tiny")
    bad = tmp_path / "tiny" / NAMES["train_labels"]
    bad.write_bytes(other_gz())
    with pytest.raises(DataError, match=rf"^{re.escape(str(bad))} has the wrong content "
                       r".*; delete it"):
        download(tiny, tmp_path, [server.mirror("wrong")])
    assert bad.read_bytes() == other_gz()  # nothing written over it
    assert files_under(tmp_path) == sorted(f"tiny/{name}" for name in NAMES.values())


def test_load_dataset_downloads_then_splits(tiny, server, tmp_path):
    splits = load_dataset("tiny", cache_dir=tmp_path, system_dirs=[],
                          mirrors=[server.mirror("good")], registry={"tiny": tiny.spec})
    assert [s.origin for s in splits.sources] == ["download"] * 4
    np.testing.assert_array_equal(splits.x_val, tiny.arrays["train_images"][:3])


@pytest.mark.parametrize(("kind", "reason"), [
    ("huge", "announces "),
    ("endless", "sent more than "),
    ("bomb", "gzip data that decompresses to more than "),
    ("empty", "an empty response (0 bytes)"),
])
def test_a_mirror_sending_too_much_or_nothing_is_refused_without_holding_it(
        tiny, server, tmp_path, kind, reason):
    with pytest.raises(DataError) as err:
        download(tiny, tmp_path, [server.mirror(kind)])
    assert f"{server.mirror(kind)}{NAMES['train_images']}: {reason}" in str(err.value)
    assert files_under(tmp_path) == []


def test_download_progress_is_reported_up_to_the_whole_file(tiny, server, tmp_path):
    seen: list[tuple[str, int, int | None]] = []
    download(tiny, tmp_path, [server.mirror("good")], on_progress=lambda *a: seen.append(a))
    for name, payload in tiny.gz.items():
        mine = [(done, total) for n, done, total in seen if n == name]
        assert mine and mine[-1] == (len(payload), len(payload))
        assert [done for done, _ in mine] == sorted(done for done, _ in mine)
