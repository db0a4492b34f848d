"""Data preparation: shards, EOS separation, validation split, manifest hashes, tokenizers."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from transformers import AutoTokenizer

from growlm.data import PrepareOptions, load_tokenizer, open_shards, prepare, prepare_cached
from growlm.data.shards import dtype_for_vocab
from growlm.errors import DiskFull, InvalidData, OutputExists

FIXTURE = Path(__file__).parent / "fixtures" / "shakespeare"
PLAYS = sorted(FIXTURE.glob("*.txt"))


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GROWLM_CACHE", str(tmp_path / "cache"))


def _options(**kw) -> PrepareOptions:
    base = dict(sources=[str(FIXTURE)], vocab_size=400, val_fraction=0.1, block_tokens=256)
    base.update(kw)
    return PrepareOptions(**base)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("prep") / "tok"
    return prepare(_options(), out)


def test_documents_are_split_by_eos_and_every_token_is_kept(prepared):
    shards = open_shards(prepared, verify_hashes=True)
    tok = load_tokenizer(shards.tokenizer_dir)
    train = np.concatenate(shards.splits["train"])
    val = np.concatenate(shards.splits["val"])
    expected = sum(len(ids) + 1 for ids in tok.encode_documents([p.read_text() for p in PLAYS]))
    assert len(train) + len(val) == expected
    eos = shards.manifest["eos_id"]
    assert int((train == eos).sum() + (val == eos).sum()) == len(PLAYS) == 2
    assert shards.manifest["documents"] == 2
    # the stream starts with the first play, in file order
    first = PLAYS[0].read_text()
    assert tok.decode(train[:200].tolist()) == first[: len(tok.decode(train[:200].tolist()))]


def test_validation_split_is_every_kth_block(prepared):
    shards = open_shards(prepared)
    total = shards.tokens("train") + shards.tokens("val")
    blocks = total // 256
    assert shards.tokens("val") == (blocks // 10) * 256
    assert 0.08 < shards.tokens("val") / total < 0.11


def test_manifest_records_counts_hashes_and_dtype(prepared):
    manifest = json.loads((prepared / "manifest.json").read_text())
    assert manifest["dtype"] == "uint16"
    assert manifest["vocab_size"] == 400
    for split in ("train", "val"):
        info = manifest["splits"][split]
        assert info["tokens"] == sum(s["tokens"] for s in info["shards"])
        for shard in info["shards"]:
            data = (prepared / shard["file"]).read_bytes()
            assert hashlib.sha256(data).hexdigest() == shard["sha256"]
            assert len(data) == shard["tokens"] * 2
    hashes = {Path(f["path"]).name: f["sha256"] for f in manifest["sources"][0]["files"]}
    assert (
        hashes["macbeth.txt"] == hashlib.sha256((FIXTURE / "macbeth.txt").read_bytes()).hexdigest()
    )


def test_corrupt_shard_is_reported(prepared, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(prepared, copy)
    shard = copy / "train-00000.bin"
    shard.write_bytes(shard.read_bytes()[:-2])
    with pytest.raises(InvalidData, match="truncated"):
        open_shards(copy)
    shutil.copytree(prepared, tmp_path / "copy2")
    shard = tmp_path / "copy2" / "val-00000.bin"
    data = bytearray(shard.read_bytes())
    data[0] ^= 1
    shard.write_bytes(bytes(data))
    with pytest.raises(InvalidData, match="hash"):
        open_shards(tmp_path / "copy2", verify_hashes=True)


def test_trained_tokenizer_loads_with_autotokenizer(prepared):
    folder = open_shards(prepared).tokenizer_dir
    assert (folder / "tokenizer.json").is_file() and (folder / "tokenizer_config.json").is_file()
    hf = AutoTokenizer.from_pretrained(str(folder))
    text = "Fair is foul, and foul is fair:\nHover through the fog."
    assert hf.decode(hf(text, add_special_tokens=False)["input_ids"]) == text
    assert hf.eos_token_id == load_tokenizer(folder).eos_id
    assert len(hf) == 400


def test_existing_tokenizer_folder_is_reused(prepared, tmp_path):
    tok_dir = open_shards(prepared).tokenizer_dir
    out = prepare(_options(tokenizer=str(tok_dir), vocab_size=9999), tmp_path / "again")
    again = open_shards(out)
    assert again.vocab_size == 400
    assert (again.tokenizer_dir / "tokenizer.json").read_bytes() == (
        tok_dir / "tokenizer.json"
    ).read_bytes()
    first = open_shards(prepared)
    assert np.array_equal(
        np.concatenate(again.splits["train"]), np.concatenate(first.splits["train"])
    )


def test_jsonl_rows_and_text_field(tmp_path):
    rows = [{"body": f"Row number {i}: to be or not to be." * 5} for i in range(60)]
    src = tmp_path / "docs.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    out = prepare(
        _options(sources=[str(src)], text_field="body", vocab_size=300, block_tokens=64),
        tmp_path / "out",
    )
    shards = open_shards(out)
    assert shards.manifest["documents"] == 60
    eos = shards.manifest["eos_id"]
    n_eos = sum(int((a == eos).sum()) for arrays in shards.splits.values() for a in arrays)
    assert n_eos == 60
    with pytest.raises(InvalidData, match="no field 'text'"):
        prepare(_options(sources=[str(src)]), tmp_path / "bad")


def test_parquet_rows_tokenise_like_the_same_jsonl_rows(tmp_path):
    import pyarrow as pa  # installed with the eval extra (datasets): never skipped
    import pyarrow.parquet as pq

    rows = [f"Row {i}: what light through yonder window breaks. " * 4 for i in range(40)]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    jsonl = tmp_path / "a" / "docs.jsonl"
    jsonl.write_text("".join(json.dumps({"body": r, "id": i}) + "\n" for i, r in enumerate(rows)))
    parquet = tmp_path / "b" / "docs.parquet"
    pq.write_table(pa.table({"id": list(range(40)), "body": rows}), parquet)
    opts = {"text_field": "body", "vocab_size": 300, "block_tokens": 64}
    a = open_shards(prepare(_options(sources=[str(jsonl)], **opts), tmp_path / "oa"))
    b = open_shards(prepare(_options(sources=[str(parquet)], **opts), tmp_path / "ob"))
    assert b.manifest["documents"] == 40
    for split in ("train", "val"):
        assert np.array_equal(np.concatenate(a.splits[split]), np.concatenate(b.splits[split]))
    with pytest.raises(InvalidData, match=r"no column 'text' \(columns: id, body\)"):
        prepare(_options(sources=[str(parquet)]), tmp_path / "oc")


def test_hub_source_streams_the_named_split_and_field(tmp_path, monkeypatch):
    """``hf:name:config@split`` goes to datasets.load_dataset(name, config, split=, streaming=
    True) and its text field is read like a .jsonl's (the hub itself is not reachable here)."""
    import datasets

    from growlm.data import sources

    calls = []
    rows = [{"content": f"Hub row {i}: all the world's a stage. " * 4} for i in range(30)]

    def fake_load(name, config, split, streaming):
        calls.append((name, config, split, streaming))
        return iter(rows)

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    monkeypatch.setattr(sources, "check_hub_reachable", lambda source: None)  # a faked hub
    source = "hf:someorg/plays:verse@validation"
    out = prepare(_options(sources=[source], text_field="content", block_tokens=64), tmp_path / "o")
    assert calls and set(calls) == {("someorg/plays", "verse", "validation", True)}
    assert open_shards(out).manifest["documents"] == 30

    def offline(*args, **kw):
        raise ConnectionError("hub unreachable")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(InvalidData, match=r"'hf:x/y' could not be loaded: hub unreachable"):
        prepare(_options(sources=["hf:x/y"]), tmp_path / "o2")


def test_bad_sources_give_clear_errors(tmp_path):
    with pytest.raises(InvalidData, match="does not exist"):
        prepare(_options(sources=[str(tmp_path / "missing")]), tmp_path / "o1")
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(InvalidData, match=r"unsupported file type '\.csv'"):
        prepare(_options(sources=[str(tmp_path / "x.csv")]), tmp_path / "o2")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{not json\n')
    with pytest.raises(InvalidData, match=r"bad.jsonl:2: not valid JSON"):
        prepare(_options(sources=[str(bad)]), tmp_path / "o3")
    with pytest.raises(InvalidData, match="too small for a validation split"):
        prepare(_options(block_tokens=100_000), tmp_path / "o4")
    with pytest.raises(InvalidData, match=r"vocab_size must be in \[257, 1048576\], got 100"):
        prepare(_options(vocab_size=100), tmp_path / "o5")
    (tmp_path / "o6").mkdir()
    with pytest.raises(OutputExists, match="already exists"):
        prepare(_options(), tmp_path / "o6")


def test_cache_key_follows_content_not_location(tmp_path):
    a = prepare_cached(_options())
    copy = tmp_path / "copy"
    copy.mkdir()
    for p in PLAYS:
        (copy / p.name).write_bytes(p.read_bytes())
    assert prepare_cached(_options(sources=[str(copy)])) == a
    (copy / "macbeth.txt").write_text(PLAYS[0].read_text() + "\nEpilogue.\n")
    assert prepare_cached(_options(sources=[str(copy)])) != a
    assert prepare_cached(_options(vocab_size=401)) != a


def test_dtype_widens_for_large_vocabularies():
    assert dtype_for_vocab(65536) == np.uint16
    assert dtype_for_vocab(65537) == np.uint32


def test_cli_data_prepare_and_one_line_errors(tmp_path, capsys):
    from growlm.cli import main

    out = tmp_path / "cli"
    code = main(
        [
            "data",
            "prepare",
            str(FIXTURE),
            "--out",
            str(out),
            "--vocab-size",
            "300",
            "--block-tokens",
            "256",
            "--val-fraction",
            "0.1",
        ]
    )
    assert code == 0
    assert "prepared 2 documents" in capsys.readouterr().out
    assert open_shards(out).vocab_size == 300
    code = main(["data", "prepare", str(FIXTURE), "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        code == 2
        and len(err) == 1
        and err[0].startswith("error: --out ")
        and "already exists" in err[0]
    )
    assert "--force" in err[0]


def test_not_enough_disk_for_the_shards_is_refused_before_tokenizing(tmp_path, monkeypatch):
    """The check asks for 2 bytes per token at one token per 8 bytes of text: refused one byte
    short of that, prepared with exactly that much free (the check is the only reader of it)."""
    import shutil

    from growlm.data.prepare import MAX_BYTES_PER_TOKEN
    from growlm.io.diskspace import human_bytes

    text = sum(p.stat().st_size for p in PLAYS)
    need = text // MAX_BYTES_PER_TOKEN * 2
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage._replace(free=need - 1))
    out = tmp_path / "tok"
    with pytest.raises(DiskFull) as e:
        prepare(_options(), out)
    assert str(e.value) == (
        f"not enough disk for the token shards of {human_bytes(text)} of text in {str(out)!r}: "
        f"needs about {human_bytes(need)}, {human_bytes(need - 1)} free; free space or choose "
        "another --out"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage._replace(free=need))
    assert open_shards(prepare(_options(), out)).tokens("train") > 0
