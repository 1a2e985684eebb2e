"""Finding, downloading, verifying and reading corpora; errors for every bad file."""

import hashlib
import http.server
import threading
import urllib.error
import urllib.request
from functools import partial

import pytest

from charlm import CORPORA, CorpusError, load_corpus
from charlm.data import corpora
from charlm.data.corpora import CorpusSpec, cache_dir, is_cached, locate
from charlm.data.textfiles import read_file_text

BOOK = b"It was the best of times.\nIt was the worst of times.\n" * 50


@pytest.fixture
def server(tmp_path):
    """A web server on 127.0.0.1 serving tmp_path/www; yields its base URL and counts requests."""
    root = tmp_path / "www"
    root.mkdir()
    hits = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            hits.append(self.path)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}", hits
    httpd.shutdown()
    httpd.server_close()


def register(monkeypatch, url, sha1, **kw):
    spec = CorpusSpec("tale", "tale.txt", url, sha1, "a test corpus", **kw)
    monkeypatch.setitem(CORPORA, "tale", spec)
    return spec


def test_named_corpus_is_read_from_charlm_data(data_dir):
    assert locate("timemachine") == data_dir / "timemachine.txt"


def test_every_named_corpus_in_the_offline_folder_passes_its_sha1(data_dir):
    for name in CORPORA:
        assert locate(name).parent == data_dir


def test_download_goes_to_the_cache_with_sha1_checked_then_the_cache_is_used(server, monkeypatch, tmp_path):
    root, base, hits = server
    (root / "tale.txt").write_bytes(BOOK)
    register(monkeypatch, f"{base}/tale.txt", hashlib.sha1(BOOK).hexdigest())
    monkeypatch.setenv("CHARLM_DATA", str(tmp_path / "empty"))
    path = locate("tale")
    assert path == cache_dir() / "tale.txt" and path.read_bytes() == BOOK
    assert locate("tale") == path and len(hits) == 1  # the second call did not download again
    corpus, vocab = load_corpus("tale")
    assert "".join(vocab.to_tokens(corpus[:6].tolist())) == "it was"
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".part")]


def test_sha1_mismatch_is_an_error_and_nothing_is_kept(server, monkeypatch):
    root, base, _ = server
    (root / "tale.txt").write_bytes(BOOK)
    register(monkeypatch, f"{base}/tale.txt", "0" * 40)
    monkeypatch.delenv("CHARLM_DATA")
    with pytest.raises(CorpusError, match="has SHA-1 .* expected 0000"):
        locate("tale")
    assert not cache_dir().exists() or not list(cache_dir().iterdir())


def test_publisher_updated_file_is_accepted_with_a_warning(server, monkeypatch, caplog):
    root, base, _ = server
    (root / "tale.txt").write_bytes(BOOK)
    register(monkeypatch, f"{base}/tale.txt", "0" * 40, publisher_updates=True)
    monkeypatch.delenv("CHARLM_DATA")
    assert locate("tale").read_bytes() == BOOK
    assert "publisher revises this file" in caplog.text


def test_corrupt_cached_file_is_removed_and_downloaded_again(server, monkeypatch):
    root, base, hits = server
    (root / "tale.txt").write_bytes(BOOK)
    register(monkeypatch, f"{base}/tale.txt", hashlib.sha1(BOOK).hexdigest())
    monkeypatch.delenv("CHARLM_DATA")
    cache_dir().mkdir(parents=True)
    (cache_dir() / "tale.txt").write_bytes(b"truncated")
    assert locate("tale").read_bytes() == BOOK and len(hits) == 1


def test_file_url_downloads_too(tmp_path, monkeypatch):
    source = tmp_path / "src.txt"
    source.write_bytes(BOOK)
    register(monkeypatch, source.as_uri(), hashlib.sha1(BOOK).hexdigest())
    monkeypatch.delenv("CHARLM_DATA")
    assert locate("tale").read_bytes() == BOOK


def test_offline_with_nothing_found_names_corpus_address_and_charlm_data(monkeypatch, tmp_path):
    register(monkeypatch, "http://127.0.0.1:9/tale.txt", "0" * 40)  # port 9: nothing listens
    monkeypatch.setenv("CHARLM_DATA", str(tmp_path))
    with pytest.raises(CorpusError) as err:
        locate("tale")
    message = str(err.value)
    assert "'tale'" in message and "http://127.0.0.1:9/tale.txt" in message and "CHARLM_DATA" in message
    assert "\n" not in message


def test_wrong_file_in_charlm_data_is_rejected(tmp_path, monkeypatch):
    (tmp_path / "timemachine.txt").write_text("not the book")
    monkeypatch.setenv("CHARLM_DATA", str(tmp_path))
    with pytest.raises(CorpusError, match="does not match corpus 'timemachine'"):
        locate("timemachine")


def test_unknown_name_lists_the_corpora():
    with pytest.raises(CorpusError, match="unknown corpus 'moby': choose one of timemachine, "):
        load_corpus("moby")


def test_a_user_file_works_like_a_named_corpus(tmp_path):
    path = tmp_path / "mine.txt"
    path.write_text("Hello, world\n", encoding="utf-8")
    corpus, vocab = load_corpus(str(path), clean="raw")
    assert "".join(vocab.to_tokens(corpus.tolist())) == "Hello, world\n"


@pytest.mark.parametrize("content, match", [
    (None, "no such file"),
    (b"", "the file is empty"),
    (b"  \n\t\n", "only whitespace"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary file"),
    (b"A\x81B\x8d" * 50, r"cannot tell its text encoding \(not UTF-8 at byte 1"),
])
def test_bad_text_files_get_an_error_naming_the_file(tmp_path, content, match):
    path = tmp_path / "bad.txt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CorpusError, match=match) as err:
        read_file_text(path)
    assert str(path) in str(err.value)


def test_a_folder_is_not_a_text_file(tmp_path):
    with pytest.raises(CorpusError, match="is a folder"):
        load_corpus(str(tmp_path))


def test_encoding_option_relaxes_utf8(tmp_path):
    path = tmp_path / "latin.txt"
    path.write_bytes("café".encode("latin-1"))
    assert read_file_text(path, encoding="latin-1") == "café"


def test_byte_order_mark_is_not_text(tmp_path):
    path = tmp_path / "bom.txt"
    path.write_bytes("\ufeffabc".encode("utf-8"))
    assert read_file_text(path) == "abc"


def test_zip_member_and_fallback_encoding_of_named_corpora(data_dir):
    # jaychou is a zip member; the offline War of the Worlds is Windows-1252 and falls back to it.
    assert corpora.read_corpus_text("jaychou-lyrics").startswith("想要有直升机")
    assert "Martians" in corpora.read_corpus_text("war-of-the-worlds")


def _no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise urllib.error.URLError("no network in this test")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


def test_the_time_machine_ships_with_charlm_so_the_book_runs_with_no_network_and_no_data(monkeypatch):
    monkeypatch.delenv("CHARLM_DATA", raising=False)
    _no_network(monkeypatch)
    assert is_cached("timemachine") == corpora.embedded_file(CORPORA["timemachine"])
    path = locate("timemachine")
    assert path == cache_dir() / "timemachine.txt"
    assert hashlib.sha1(path.read_bytes()).hexdigest() == CORPORA["timemachine"].sha1
    corpus, vocab = load_corpus("timemachine", max_tokens=10_000)
    assert len(corpus) == 10_000 and len(vocab) == 28  # the book's figures


def test_a_damaged_copy_inside_charlm_is_refused_like_a_bad_download(monkeypatch, tmp_path):
    import gzip

    monkeypatch.delenv("CHARLM_DATA", raising=False)
    _no_network(monkeypatch)
    bad = tmp_path / "timemachine.txt.gz"
    bad.write_bytes(gzip.compress(b"not the book"))
    monkeypatch.setattr(corpora, "embedded_file", lambda spec: bad)
    with pytest.raises(CorpusError, match=r"the copy inside charlm .* has SHA-1 .*expected 090b5e7e"):
        locate("timemachine")
    bad.write_bytes(b"not gzip at all")
    with pytest.raises(CorpusError, match="the copy inside charlm .* cannot be read"):
        locate("timemachine")
    assert not (cache_dir() / "timemachine.txt").exists()


def test_a_mirror_serves_every_corpus_under_its_file_name_sha1_checked(server, monkeypatch, data_dir):
    # What the test suite does on a fresh clone with no ../shared/data (tests/conftest.py): fetch each
    # corpus once. These machines reach no corpus host, so a loopback server plays the mirror.
    root, base, hits = server
    for name in ("tinyshakespeare.txt", "ptb.zip"):
        (root / name).write_bytes((data_dir / name).read_bytes())
    monkeypatch.delenv("CHARLM_DATA")
    monkeypatch.setenv("CHARLM_MIRROR", base + "/")
    assert locate("tinyshakespeare").read_bytes() == (data_dir / "tinyshakespeare.txt").read_bytes()
    assert locate("ptb") == cache_dir() / "ptb.zip"
    assert sorted(hits) == ["/ptb.zip", "/tinyshakespeare.txt"]
    (root / "tinyshakespeare.txt").write_bytes(b"a different file")  # a mirror is trusted no further
    (cache_dir() / "tinyshakespeare.txt").unlink()
    with pytest.raises(CorpusError, match=f"downloaded from {base}/tinyshakespeare.txt has SHA-1"):
        locate("tinyshakespeare")


def _shelf(root, tmp_path):
    """Two published books by two authors under root/shelf, their manifest, and the corpus they make."""
    published = {"Ames, Ann/Dawn.txt": b"*** START OF THE PROJECT GUTENBERG EBOOK DAWN ***\r\n\r\n"
                                        b"Dawn came.\r\n*** END OF THE PROJECT GUTENBERG EBOOK DAWN ***\r\n"
                                        b"licence\r\n",
                 "Bell, Bo/Dusk.txt": b"Dusk fell.\n"}
    rows = ["path\tsha1\tencoding\tcharacters"]
    for path, data in published.items():
        (root / "shelf" / path).parent.mkdir(parents=True)
        (root / "shelf" / path).write_bytes(data)
    corpus = "Dawn came.\n\nDusk fell.\n\n"
    rows += [f"Ames, Ann/Dawn.txt\t{hashlib.sha1(published['Ames, Ann/Dawn.txt']).hexdigest()}\tutf-8\t12",
             f"Bell, Bo/Dusk.txt\t{hashlib.sha1(published['Bell, Bo/Dusk.txt']).hexdigest()}\tutf-8\t12"]
    manifest = tmp_path / "shelf.manifest.tsv"
    manifest.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return manifest, corpus


def test_a_corpus_of_books_is_rebuilt_from_them_each_checked(server, monkeypatch, tmp_path):
    root, base, hits = server
    manifest, corpus = _shelf(root, tmp_path)
    register(monkeypatch, f"{base}/shelf/", hashlib.sha1(corpus.encode()).hexdigest(),
             members={"train": None, "val": None, "test": None}, manifest=str(manifest))
    monkeypatch.setenv("CHARLM_DATA", str(tmp_path / "empty"))
    assert locate("tale").read_text(encoding="utf-8") == corpus
    assert sorted(hits) == ["/shelf/Ames%2C%20Ann/Dawn.txt", "/shelf/Bell%2C%20Bo/Dusk.txt"]
    assert "".join(corpora.iter_source_text("tale", "train")) == corpus  # two authors: both train


def test_a_book_that_is_not_the_one_listed_leaves_nothing_in_the_cache(server, monkeypatch, tmp_path):
    root, base, _ = server
    manifest, corpus = _shelf(root, tmp_path)
    (root / "shelf" / "Bell, Bo" / "Dusk.txt").write_bytes(b"Dusk fell!\n")
    register(monkeypatch, f"{base}/shelf/", hashlib.sha1(corpus.encode()).hexdigest(),
             members={"train": None, "val": None, "test": None}, manifest=str(manifest))
    monkeypatch.delenv("CHARLM_DATA")
    with pytest.raises(CorpusError, match="Dusk.txt: SHA-1 .*, the manifest says"):
        locate("tale")
    assert not cache_dir().exists() or not list(cache_dir().iterdir())
