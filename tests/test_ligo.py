"""G_learn (LiGO): learn-depth / learn-width on tiny models.

Step 0 is stack bitwise; trained maps beat stack / random-width on held-out text; the written
checkpoint loads with transformers and computes what map training computed; bad input is one line.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from tiny_models import BASE, CONFIGS, FAMILIES, make_model

from growlm.arch import spec_for
from growlm.cli import main
from growlm.errors import InvalidData, InvalidGrowth
from growlm.ops.axes import axis_maps
from growlm.ops.in_memory import grow_tensors
from growlm.ops.layout import Naming, source_shape
from growlm.ops.ligo import learn_grow
from growlm.ops.width import target_shape

REPO = Path(__file__).resolve().parent.parent
SHAKESPEARE = REPO / "tests" / "fixtures" / "shakespeare"
SAMPLE = REPO / "growlm" / "assets" / "sample.txt"
SEQ = 32


def _weights(path: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for f in sorted(path.glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


def _grow(capsys, *argv: str) -> tuple[int, str]:
    code = main(["grow", *argv])
    return code, capsys.readouterr().err.strip()


# -- 1. step 0 is stack, bitwise -----------------------------------------------------------


@pytest.mark.parametrize("family", ["llama", "llama-tied", "gpt2"])
def test_step0_learn_depth_writes_stack_bitwise(family, tiny_dir, tmp_path, capsys):
    src = tiny_dir(family)
    stack, learned = tmp_path / "stack", tmp_path / "learned"
    assert main(["grow", str(src), str(stack), "--op", "stack", "--factor", "2"]) == 0
    args = ["--op", "learn-depth", "--factor", "2", "--steps", "0", "--data", str(SAMPLE)]
    assert main(["grow", str(src), str(learned), *args]) == 0
    a, b = _weights(stack), _weights(learned)
    assert list(a) == list(b)
    for name in a:
        assert a[name].dtype == b[name].dtype and torch.equal(a[name], b[name]), name
    assert (stack / "config.json").read_text() == (learned / "config.json").read_text()
    record = json.loads((learned / "growth.json").read_text())
    assert record["operator"] == "learn-depth" and record["steps"] == 0
    assert record["tokens"] == 0 and record["flops"] == 0.0


def test_step0_bfloat16_library_equals_stack():
    model = make_model("llama").to(torch.bfloat16)
    weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
    conf, learned, report = learn_grow(model.config, weights, "ligo", {"factor": 3}, steps=0)
    _, stacked, _ = grow_tensors(model.config, weights, "stack", {"factor": 3})
    assert list(learned) == list(stacked) and conf.num_hidden_layers == 9
    assert all(torch.equal(learned[k], stacked[k]) for k in stacked)
    assert all(t.dtype == torch.bfloat16 for t in learned.values())
    assert report["loss_first"] is None and report["tokens"] == 0
    assert [m["src"] for m in report["layer_map"]] == [0, 1, 2] * 3
    # the output never aliases the input or itself
    ptrs = [t.data_ptr() for t in learned.values()]
    assert len(set(ptrs)) == len(ptrs) and not set(ptrs) & {t.data_ptr() for t in weights.values()}


# -- every family: the training path computes the materialised model; old units kept -------


def _loss(model, batch: torch.Tensor) -> float:
    with torch.no_grad():
        logits = model(input_ids=batch[:, :-1]).logits
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1)).item()


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_learn_depth_and_width(family):
    from transformers import AutoModelForCausalLM

    model = make_model(family)
    weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
    batch = torch.randint(3, 128, (2, 17), generator=torch.Generator().manual_seed(0))
    op, params = "learn-depth+learn-width", {"factor": 2, "hidden_size": 64}
    conf0, w0, _ = learn_grow(model.config, weights, op, params, steps=0)
    conf, w, report = learn_grow(model.config, weights, op, params, [batch] * 3, steps=3, lr=1e-2)
    assert conf.to_dict() == conf0.to_dict()
    # map-training step 0 ran the same model the step-0 materialisation writes
    big = AutoModelForCausalLM.from_config(conf0, dtype=torch.float32).eval()
    missing, unexpected = big.load_state_dict(w0, strict=False)
    assert unexpected == [] and set(missing) <= {"lm_head.weight"}
    assert abs(_loss(big, batch) - report["loss_first"]) < 1e-5
    assert report["loss_last"] < report["loss_first"]
    assert report["tokens"] == 3 * 2 * 16
    big_flops = 6.0 * report["out_params"] * report["tokens"]
    assert report["flops"] == big_flops + report["compose_flops"] and report["compose_flops"] > 0
    assert report["out_params"] == sum(t.numel() for t in w.values())
    assert any(k.startswith("depth.") for k in report["maps"]) and "width.hidden" in report["maps"]
    assert sum(not torch.equal(w[k], w0[k]) for k in w) > len(w) // 2  # the maps moved


@pytest.mark.parametrize("family", FAMILIES)
def test_step0_width_map_keeps_every_old_unit(family):
    """[I; random]: the entries of kept units are the source's exactly (norms included)."""
    model = make_model(family)
    weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
    params = {"hidden_size": 64, "intermediate_size": 160}
    _, grown, _ = learn_grow(model.config, weights, "learn-width", params, steps=0)
    _, skeleton, _ = grow_tensors(model.config, weights, "random-width", params)
    cfg = model.config.to_dict()
    spec = spec_for(cfg["model_type"])
    _, src = source_shape(spec, cfg)
    maps = axis_maps(src, target_shape(spec, cfg, src, params), copy=False)
    naming = Naming.detect(spec, set(weights))
    specs = {naming.find(ts): ts for ts in spec.global_tensors}
    for i in range(cfg[spec.keys.layers]):
        specs.update({naming.find(ts, i): ts for ts in spec.layer_tensors})
    new_units = 0
    for name, out in grown.items():
        ts = specs[name]
        assert out.shape == skeleton[name].shape, name
        if ts.role in ("norm", "norm_bias"):  # not mapped: kept entries, new ones 1 (or 0)
            assert torch.equal(out, skeleton[name]), name
            continue
        expected = weights[name]
        if ts is spec.embed and spec.embed_scale_sqrt_hidden:
            expected = expected * math.sqrt(32 / 64)  # Gemma's sqrt(hidden) embedding scale
        kept = out
        for dim, ax in enumerate(ts.axes):
            amap = maps.get(ax.kind)
            if amap is None or amap.is_identity:
                continue
            keep = amap.index >= 0
            kept = kept.index_select(dim, keep.nonzero().squeeze(1))
            expected = expected.index_select(dim, amap.index[keep])
            new_units += int((~keep).sum())
        torch.testing.assert_close(kept, expected, rtol=1e-6, atol=0, msg=name)
    assert new_units > 0


# -- 2./3. trained maps beat the plain operators; the checkpoint loads and matches ---------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny Llama trained briefly on The Tempest, saved with its tokenizer; map-training
    text (most of Macbeth) and held-out windows (its last fifth)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from growlm.data.tokenizer import train_tokenizer

    root = tmp_path_factory.mktemp("ligo")
    src = root / "src"
    tempest = (SHAKESPEARE / "tempest.txt").read_text()
    tok = train_tokenizer([tempest], 320, src)
    kw = dict(CONFIGS["llama"], vocab_size=tok.vocab_size)
    kw.update(bos_token_id=tok.eos_id, eos_token_id=tok.eos_id, pad_token_id=None)
    conf = AutoConfig.for_model("llama", **{**BASE, **kw})
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(conf, dtype=torch.float32)
    ids = np.asarray(tok.encode_documents([tempest])[0])
    rng = np.random.default_rng(0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(80):
        starts = rng.integers(0, len(ids) - SEQ - 1, 8)
        batch = torch.from_numpy(np.stack([ids[s : s + SEQ + 1] for s in starts]))
        logits = model(input_ids=batch[:, :-1]).logits
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.save_pretrained(str(src))
    macbeth = (SHAKESPEARE / "macbeth.txt").read_text()
    cut = len(macbeth) * 4 // 5
    (root / "maps.txt").write_text(macbeth[:cut])
    held = np.asarray(tok.encode_documents([macbeth[cut:]])[0])
    windows = [held[s : s + SEQ + 1] for s in range(0, len(held) - SEQ - 1, SEQ)][:64]
    return root, src, torch.from_numpy(np.stack(windows))


def _heldout(path: Path, windows: torch.Tensor) -> float:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()
    return float(np.mean([_loss(model, b) for b in windows.split(16)]))


def _learn_cli(trained, out: Path, *args: str) -> dict:
    root, src, _ = trained
    data = ["--data", str(root / "maps.txt"), "--seq-len", str(SEQ), "--batch-size", "8"]
    assert main(["grow", str(src), str(out), *args, *data, "--lr", "1e-2", "--json"]) == 0
    return json.loads((out / "growth.json").read_text())


def test_learn_depth_beats_stack_on_heldout(trained, tmp_path, capsys):
    _, src, held = trained
    assert main(["grow", str(src), str(tmp_path / "stack"), "--op", "stack", "--factor", "2"]) == 0
    record = _learn_cli(
        trained, tmp_path / "ld", "--op", "learn-depth", "--factor", "2", "--steps", "40"
    )
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    stack, learned = _heldout(tmp_path / "stack", held), _heldout(tmp_path / "ld", held)
    print(f"held-out loss: stack {stack:.4f}, learn-depth {learned:.4f}")
    assert learned < stack - 0.01
    assert record["steps"] == report["steps"] == 40 and record["tokens"] == 40 * 8 * SEQ
    # the large model's passes, plus composing the maps: depth only, each of the 40 steps mixes
    # every source layer tensor into every output layer, 2 FLOPs a product, x3 with backward
    src_layer_params = sum(
        t.numel() for n, t in load_file(str(src / "model.safetensors")).items() if ".layers." in n
    )
    compose = 40 * 3 * 2 * report["out_layers"] * src_layer_params
    assert report["compose_flops"] == compose
    assert report["flops"] == 6.0 * report["out_params"] * report["tokens"] + compose
    assert report["loss_first"] is not None and report["loss_last"] is not None
    assert record["data"].endswith("maps.txt") and record["seq_len"] == SEQ
    depth = record["depth_maps"]["self_attn.q_proj.weight"]
    assert len(depth) == 6 and len(depth[0]) == 3 and depth[3][0] != 1.0  # it learned


def test_learn_width_beats_random_width_on_heldout(trained, tmp_path):
    _, src, held = trained
    width = ["--hidden-size", "64", "--intermediate-size", "96"]
    assert main(["grow", str(src), str(tmp_path / "rw"), "--op", "random-width", *width]) == 0
    _learn_cli(trained, tmp_path / "lw", "--op", "learn-width", *width, "--steps", "30")
    plain, learned = _heldout(tmp_path / "rw", held), _heldout(tmp_path / "lw", held)
    print(f"held-out loss: random-width {plain:.4f}, learn-width {learned:.4f}")
    assert learned < plain - 0.05


def test_learned_checkpoint_loads_and_matches_functional_call(trained, tmp_path):
    from transformers import AutoConfig, AutoModelForCausalLM

    _, _, held = trained
    out = tmp_path / "both"
    _learn_cli(
        trained,
        out,
        "--op",
        "learn-depth+learn-width",
        "--factor",
        "2",
        "--hidden-size",
        "64",
        "--steps",
        "5",
        "--check",
    )
    loaded = AutoModelForCausalLM.from_pretrained(str(out)).eval()
    assert loaded.config.num_hidden_layers == 6 and loaded.config.hidden_size == 64
    conf = AutoConfig.from_pretrained(str(out))
    shell = AutoModelForCausalLM.from_config(conf, dtype=torch.float32).eval()
    batch = held[:4, :-1]
    with torch.no_grad():
        a = loaded(input_ids=batch).logits
        b = torch.func.functional_call(shell, _weights(out), args=(batch,)).logits
    # same float32 weights, same kernels: equal up to 1e-6 (in practice bitwise)
    assert (a - b).abs().max().item() <= 1e-6


def test_prepared_data_folder_and_progress(trained, tmp_path, capsys):
    from growlm.data import PrepareOptions, prepare

    root, src, _ = trained
    options = PrepareOptions(sources=[str(root / "maps.txt")], tokenizer=str(src), val_fraction=0.0)
    prepared = prepare(options, tmp_path / "prepared")
    args = ["--op", "learn-depth", "--factor", "2", "--steps", "3", "--seq-len", str(SEQ)]
    assert main(["grow", str(src), str(tmp_path / "out"), *args, "--data", str(prepared)]) == 0
    captured = capsys.readouterr()
    assert "map step 3/3: loss" in captured.err and "loss_last" in captured.out
    record = json.loads((tmp_path / "out" / "growth.json").read_text())
    assert record["tokens"] == 3 * 8 * SEQ and record["data"] == str(prepared)


# -- library and trainer-facing paths ------------------------------------------------------


def test_library_training_is_deterministic_and_reports():
    model = make_model("qwen2")
    weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
    gen = torch.Generator().manual_seed(1)
    batches = [torch.randint(3, 128, (2, 9), generator=gen) for _ in range(4)]
    runs = [
        learn_grow(
            model.config,
            weights,
            "learn-depth",
            {"factor": 2, "steps": 4, "lr": 0.01},
            lambda step: batches[step],
            seed=3,
        )
        for _ in range(2)
    ]
    (c1, w1, r1), (_, w2, r2) = runs
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
    assert r1["loss_first"] == r2["loss_first"] and r1["loss_last"] == r2["loss_last"]
    for key in ("op", "params", "src_layers", "out_layers", "layer_map", "steps", "tokens"):
        assert key in r1
    assert r1["tokens"] == 4 * 2 * 8 and r1["lr"] == 0.01 and c1.num_hidden_layers == 6


def test_grow_tensors_learned_ops_for_the_trainer():
    model = make_model("llama")
    weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
    params = {"factor": 2, "hidden_size": 64, "steps": 50}
    # meta tensors (the trainer's dry run): shapes only, the steps are not trained
    meta = {k: torch.empty(v.shape, device="meta") for k, v in weights.items()}
    conf, grown, _ = grow_tensors(model.config, meta, "learn-depth+learn-width", params)
    assert conf.num_hidden_layers == 6 and conf.hidden_size == 64
    assert all(t.is_meta for t in grown.values())
    # moments follow the initial map (stack + random-width): copied units, zero new ones
    moments = {k: torch.ones_like(v) for k, v in weights.items()}
    _, grown, _ = grow_tensors(
        model.config, moments, "learn-width", params | {"factor": None}, fill="exp_avg"
    )
    embed = grown["model.embed_tokens.weight"]
    assert embed.shape == (128, 64) and embed[:, :32].eq(1).all() and embed[:, 32:].eq(0).all()
    # real weights, no data: only steps 0
    with pytest.raises(InvalidGrowth, match="pass batches"):
        grow_tensors(model.config, weights, "learn-depth", {"factor": 2, "steps": 5})


def test_library_bad_batches():
    model = make_model("llama")
    weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
    cases = [
        (torch.rand(2, 9), "integer tensor"),
        (torch.randint(0, 128, (9,)), "integer tensor"),
        (torch.full((2, 9), 500), "outside the model's vocabulary"),
    ]
    for batch, needle in cases:
        with pytest.raises(InvalidData, match=needle) as err:
            learn_grow(model.config, weights, "learn-depth", {"factor": 2}, [batch], steps=1)
        assert "\n" not in str(err.value)
    with pytest.raises(InvalidData, match="ran out after 1 steps"):
        good = torch.randint(0, 128, (2, 9))
        learn_grow(model.config, weights, "learn-depth", {"factor": 2}, [good], steps=2)
    with pytest.raises(InvalidGrowth, match="steps given twice"):
        learn_grow(model.config, weights, "learn-depth", {"factor": 2, "steps": 1}, steps=2)


# -- 4. bad input: one line, typed, nothing written ----------------------------------------

BAD = [
    ("no steps", ["--op", "learn-depth", "--factor", "2"], "needs --steps K"),
    ("negative steps", ["--op", "learn-depth", "--factor", "2", "--steps", "-1"], "--steps must"),
    ("lr zero", ["--op", "learn-depth", "--factor", "2", "--steps", "0", "--lr", "0"], "--lr must"),
    (
        "lr nan",
        ["--op", "learn-width", "--hidden-size", "64", "--steps", "0", "--lr", "nan"],
        "--lr must be a number > 0",
    ),
    (
        "param of the other op",
        ["--op", "learn-depth", "--factor", "2", "--steps", "0", "--hidden-size", "64"],
        "--hidden-size does not apply to learn-depth",
    ),
    ("no factor", ["--op", "learn-depth", "--steps", "0"], "learn-depth needs --factor"),
    ("no width", ["--op", "learn-width", "--steps", "0"], "learn-width needs a larger"),
    (
        "mixed with plain",
        ["--op", "stack+learn-width", "--factor", "2", "--hidden-size", "64", "--steps", "0"],
        "mixes the learned learn-width with the plain direct-depth",
    ),
    (
        "steps without data",
        ["--op", "learn-depth", "--factor", "2", "--steps", "3"],
        "give --data PATH",
    ),
    (
        "missing data",
        ["--op", "learn-depth", "--factor", "2", "--steps", "3", "--data", "/nonexistent/text.txt"],
        "does not exist",
    ),
    (
        "steps on a plain op",
        ["--op", "stack", "--factor", "2", "--steps", "3"],
        "--steps does not apply to direct-depth",
    ),
    (
        "data on a plain op",
        ["--op", "stack", "--factor", "2", "--data", str(SAMPLE)],
        "--data applies to learn-depth / learn-width only",
    ),
    (
        "seq-len too long",
        [
            "--op",
            "learn-depth",
            "--factor",
            "2",
            "--steps",
            "1",
            "--data",
            str(SAMPLE),
            "--seq-len",
            "4096",
        ],
        "exceeds the model's 128 positions",
    ),
    (
        "no tokenizer",
        ["--op", "learn-depth", "--factor", "2", "--steps", "1", "--data", str(SAMPLE)],
        "has no usable tokenizer",
    ),
]


@pytest.mark.parametrize(("what", "args", "needle"), BAD, ids=[c[0] for c in BAD])
def test_bad_learned_growth_is_one_line(what, args, needle, tiny_dir, tmp_path, capsys):
    src = tmp_path / "src"
    shutil.copytree(tiny_dir("llama"), src)
    code, err = _grow(capsys, str(src), str(tmp_path / "out"), *args)
    assert code == 2, err
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    assert needle in err, err
    assert [p.name for p in tmp_path.iterdir() if "out" in p.name] == []


def test_ops_lists_learned_operators(capsys):
    assert main(["ops"]) == 0
    out = capsys.readouterr().out
    assert "learn-depth" in out and "trains its map" in out


@pytest.mark.parametrize(
    ("positions", "expected"), [(32, 32), (128, 128), (4096, 128), (None, 128)]
)
def test_seq_len_default_fits_a_short_context_model(positions, expected, tmp_path):
    """learn-* default window: min(128, the model's positions), not an error on short contexts."""
    from types import SimpleNamespace

    from growlm.grow import _learn_data

    config = {} if positions is None else {"max_position_embeddings": positions}
    source = SimpleNamespace(config=config)
    settings = SimpleNamespace(op=SimpleNamespace(name="learn-depth"), steps=1)
    data = tmp_path / "t.txt"
    data.write_text("text")
    assert _learn_data(source, settings, data, None, None).seq_len == expected  # type: ignore[arg-type]


def test_text_data_is_tokenized_in_pieces_and_only_as_far_as_needed(tmp_path, monkeypatch):
    from growlm.data.batches import _pieces, path_batches
    from growlm.data.tokenizer import train_tokenizer

    text = "".join(f"line {i} of the corpus, with some words.\n" for i in range(5000))
    pieces = list(_pieces(text, size=1000))
    assert "".join(pieces) == text and all(p.endswith("\n") for p in pieces)
    assert max(len(p) for p in pieces) <= 1000 and len(pieces) > 100
    tok = train_tokenizer([text], 300, tmp_path / "tok")
    (tmp_path / "corpus.txt").write_text(text)
    assert tok.vocab_size == 300
    seen: list[int] = []
    from growlm.data import batches as mod

    original = mod._tokenizer

    def counting(folder):
        hf = original(folder)

        class Counted:
            eos_token_id = hf.eos_token_id

            def __call__(self, piece, **kw):
                seen.append(len(piece))
                return hf(piece, **kw)

        return Counted()

    monkeypatch.setattr(mod, "_tokenizer", counting)
    take = path_batches(tmp_path / "corpus.txt", tmp_path / "tok", 300, 8, 2, max_tokens=64)
    assert take(0).shape == (2, 9)
    assert sum(seen) <= 2 * mod.PIECE_CHARS and sum(seen) < len(text)  # stopped early
