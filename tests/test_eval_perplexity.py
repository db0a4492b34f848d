"""growlm eval on a tiny Llama with a byte-level BPE trained here: perplexity, bits per byte,
sliding windows, and lm-eval's offline tasks."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from growlm.cli import main

REPO = Path(__file__).resolve().parent.parent
HELDOUT = REPO / "tests" / "fixtures" / "heldout_en.txt"


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    from transformers import LlamaConfig, LlamaForCausalLM

    from growlm.data.tokenizer import train_tokenizer

    folder = tmp_path_factory.mktemp("tiny_lm")
    texts = (REPO / "tests" / "fixtures" / "shakespeare" / "macbeth.txt").read_text()
    tok = train_tokenizer(texts.split("\n\n"), 300, folder)
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=tok.vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        eos_token_id=tok.eos_id,
    )
    LlamaForCausalLM(cfg).save_pretrained(str(folder))
    return folder


def test_perplexity_matches_direct_loss(tiny_lm):
    from growlm.eval.perplexity import load_model, perplexity

    model, tok = load_model(tiny_lm)
    text = "Fair is foul, and foul is fair."
    ids = tok(text, add_special_tokens=False)["input_ids"]
    res = perplexity(model, tok, [text])
    with torch.no_grad():
        seq = torch.tensor([[tok.eos_token_id, *ids]])
        direct = model(seq, labels=seq).loss.item()  # mean NLL of every token after EOS
    assert res.tokens == len(ids)
    assert res.perplexity == pytest.approx(math.exp(direct), rel=1e-5)
    nbytes = len(text.encode())
    assert res.bits_per_byte == pytest.approx(direct * len(ids) / math.log(2) / nbytes, rel=1e-5)


def test_sliding_windows_score_every_token_once(tiny_lm):
    from growlm.eval.perplexity import load_model, perplexity

    model, tok = load_model(tiny_lm)
    text = HELDOUT.read_text()
    n = len(tok(text, add_special_tokens=False)["input_ids"])
    assert n > 200  # longer than the 64-token window: several windows
    half = perplexity(model, tok, [text], stride=32)
    full = perplexity(model, tok, [text], stride=63)
    assert half.tokens == full.tokens == n
    assert half.max_length == 64
    assert math.isfinite(half.perplexity) and half.perplexity != full.perplexity


def test_eval_cli_text(tiny_lm, capsys):
    assert main(["eval", str(tiny_lm), "--data", str(HELDOUT), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)["perplexity"]
    # an untrained model is near uniform over the vocabulary
    assert out["perplexity"] == pytest.approx(300, rel=0.5)
    assert 0 < out["bits_per_byte"] < 20 and out["documents"] == 1


@pytest.mark.slow
def test_eval_offline_tasks(tiny_lm, capsys):
    import lm_eval  # noqa: F401  (make test installs the [eval] extra: a missing one must fail)

    argv = ["eval", str(tiny_lm), "--tasks", "offline", "--limit", "6", "--json"]
    assert main(argv) == 0
    tasks = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["tasks"]
    assert 0.0 <= tasks["growlm_nextline"]["acc"] <= 1.0
    assert tasks["growlm_passages"]["bits_per_byte"] > 0


def test_paper_task_names():
    from growlm.eval.harness import resolve_tasks

    assert resolve_tasks(["paper"]) == [
        "lambada_openai",
        "arc_challenge",
        "arc_easy",
        "logiqa",
        "piqa",
        "sciq",
        "winogrande",
    ]
    assert resolve_tasks(["arc-c,sciq", "offline"]) == [
        "arc_challenge",
        "sciq",
        "growlm_nextline",
        "growlm_passages",
    ]


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["eval", "/nonexistent", "--data", str(HELDOUT)], "does not exist"),
        (["eval", str(REPO)], "give --data"),
    ],
)
def test_eval_user_errors(argv, needle, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and needle in err and err.count("\n") == 1
