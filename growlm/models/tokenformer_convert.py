"""Official TokenFormer checkpoints (Haiyang-W/TokenFormer, a GPT-NeoX codebase; released on the
hub as Haiyang-W/TokenFormer-150M, -450M, -900M, -1-5B) -> a growlm TokenFormer folder
(model.safetensors + config.json), ``growlm convert tokenformer SRC OUT``.

The layouts match exactly (docs/tokenformer.md says what was checked), so this is a renaming:

    sequential.0.word_embeddings.weight                 -> model.embed_tokens.weight (tied head)
    sequential.{2+i}.attention.{query,key,value,proj}.* -> model.layers.{i}.attention.*.*
    sequential.{2+i}.mlp.{key,value}_param_tokens       -> model.layers.{i}.mlp.*
    sequential.{L+3}.norm.{weight,bias}                 -> model.norm.{weight,bias}
    sequential.{L+4}.final_linear.weight (untied only)  -> lm_head.weight

The blocks' LayerNorms have no parameters there (``layernorm_nonparam``): growlm's get weight 1
and bias 0, the same function. The release is a pickle (``pytorch_model.bin``): it is read with
``torch.load(weights_only=True)`` only, which admits tensors and plain containers, never code.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from growlm.argtypes import positive_int
from growlm.errors import ConversionError, CorruptCheckpoint, UnsupportedArchitecture

if TYPE_CHECKING:
    import torch

RECORD = "conversion.json"  # what lets --force replace a converted folder
WEIGHTS = "pytorch_model.bin"
# heads of the four releases by (hidden size, layers): the weights do not say
RELEASES = {(768, 12): 12, (1024, 24): 16, (1280, 32): 16, (1536, 40): 16}
# the GPT-NeoX options growlm's TokenFormer implements: name -> the value it must have
REQUIRED = {
    "pos_emb": "rotary",
    "norm": "layernorm_nonparam",
    "final_norm": "layernorm",
    "norm_activation_type": "l2_norm_gelu",
    "gpt_j_residual": False,
    "use_mup": False,
    "transformer_increase_dim": 0,
}
# what the four releases' configs set beyond REQUIRED (used when no --neox-config is given)
RELEASE = {"rotary_pct": 0.25, "rotary_emb_base": 10000, "seq_length": 2048}
# GPT-NeoX's defaults (megatron/neox_arguments/neox_args.py) of the options read here: what a
# --neox-config that leaves one out means
NEOX_DEFAULTS: dict[str, Any] = {
    "pos_emb": "learned",
    "norm": "layernorm",
    "final_norm": None,  # None: the blocks' norm
    "norm_activation_type": "l2_norm_gelu",
    "gpt_j_residual": False,
    "use_mup": False,
    "transformer_increase_dim": 0,
    "rotary_pct": 1.0,
    "rotary_emb_base": 10000,
    "layernorm_epsilon": 1e-5,
    "no_weight_tying": False,
}
PROJECTIONS = ("query", "key", "value", "proj")


def load_official(src: Path) -> dict[str, torch.Tensor]:
    """The state dict of ``src`` (a ``pytorch_model.bin`` or a folder holding one), unpickled
    with ``weights_only=True`` (tensors and containers only)."""
    import torch

    file = weights_file(src)
    try:
        try:
            state = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:  # mmap needs torch's zip format; older files load whole
            if "mmap" not in str(exc):
                raise
            state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for bad or unsafe pickles
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CorruptCheckpoint(
            f"{str(file)!r} cannot be read as a plain tensor state dict with "
            f"torch.load(weights_only=True) ({first}); growlm never unpickles anything else"
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CorruptCheckpoint(f"{str(file)!r} does not hold a state dict of tensors")
    return state


def weights_file(src: Path) -> Path:
    """``src`` itself, or the ``pytorch_model.bin`` in the folder ``src``."""
    file = src / WEIGHTS if src.is_dir() else src
    if not file.is_file():
        raise CorruptCheckpoint(f"SRC {str(src)!r} is not {WEIGHTS} or a folder holding one")
    return file


def read_neox_config(path: Path) -> dict[str, Any]:
    """An official YAML config (configs/tokenformer/*_eval.yml), read with yaml.safe_load."""
    import yaml

    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConversionError(f"--neox-config {str(path)!r} cannot be read: {exc}") from None
    if not isinstance(raw, dict):
        raise ConversionError(f"--neox-config {str(path)!r} is not a mapping of GPT-NeoX options")
    return {k.replace("-", "_"): v for k, v in raw.items()}


def _layers(state: dict[str, torch.Tensor]) -> int:
    found = {int(m[1]) for k in state if (m := re.match(r"sequential\.(\d+)\.attention\.", k))}
    if not found:
        raise UnsupportedArchitecture(
            "no sequential.N.attention.* tensors: not an official TokenFormer state dict "
            "(expected the names of its released pytorch_model.bin)"
        )
    if sorted(found) != list(range(2, 2 + len(found))):
        raise CorruptCheckpoint(f"layer indices {sorted(found)} are not 2..{1 + len(found)}")
    return len(found)


def _slots(state: dict[str, torch.Tensor], layers: int, parts: tuple[str, ...]) -> int:
    """The one parameter-token count of ``parts`` (e.g. q/k/v) in every layer."""
    counts = {
        state[f"sequential.{2 + i}.{part}.key_param_tokens"].shape[0]
        for i in range(layers)
        for part in parts
    }
    if len(counts) != 1:
        raise UnsupportedArchitecture(
            f"{'/'.join(parts)} have parameter-token counts {sorted(counts)}: growlm's TokenFormer "
            "has one count for q/k/v, one for the attention output and one for the FFN "
            "(a model grown unevenly cannot be converted)"
        )
    return int(counts.pop())


def _expected(layers: int, tied: bool) -> set[str]:
    names = {"sequential.0.word_embeddings.weight", *_final(layers)}
    for i in range(layers):
        for part in [*(f"attention.{p}" for p in PROJECTIONS), "mlp"]:
            for kind in ("key", "value"):
                names.add(f"sequential.{2 + i}.{part}.{kind}_param_tokens")
    if not tied:
        names.add(_head(layers))
    return names


def _final(layers: int) -> tuple[str, str]:
    return f"sequential.{layers + 3}.norm.weight", f"sequential.{layers + 3}.norm.bias"


def _head(layers: int) -> str:
    return f"sequential.{layers + 4}.final_linear.weight"


def _check_options(neox: dict[str, Any], sizes: dict[str, int]) -> None:
    """The official config's options growlm implements, and its sizes against the weights."""
    for key, want in REQUIRED.items():
        got = neox[key]
        if key == "final_norm" and got is None:
            got = neox["norm"]  # GPT-NeoX falls back to the blocks' norm
        if got != want:
            raise UnsupportedArchitecture(
                f"--neox-config: {key} is {got!r}; growlm's TokenFormer implements {want!r} only"
            )
    for key, value in sizes.items():
        if key in neox and neox[key] != value:
            raise CorruptCheckpoint(
                f"--neox-config says {key} {neox[key]} but the weights have {value}"
            )
    blocks = neox.get("attention_config")
    if blocks is not None and any(kinds != ["tokenformer"] for kinds, _ in blocks):
        raise UnsupportedArchitecture(
            f"--neox-config: attention_config {blocks!r} has layers other than tokenformer"
        )


def official_to_growlm(
    state: dict[str, torch.Tensor], heads: int | None = None, neox: dict[str, Any] | None = None
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(TokenFormerConfig keyword arguments, growlm state dict) of an official state dict."""
    import torch

    layers = _layers(state)
    tied = _head(layers) not in state
    expected = _expected(layers, tied)
    missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or extra:
        raise CorruptCheckpoint(
            f"not the official TokenFormer layout of {layers} layers: missing {missing[:3]}, "
            f"unexpected {extra[:3]}"
        )
    embed = state["sequential.0.word_embeddings.weight"]  # [V, H]
    vocab, hidden = embed.shape
    sizes = {
        "num_layers": layers,
        "hidden_size": int(hidden),
        "qkv_slot_num": _slots(state, layers, tuple(f"attention.{p}" for p in PROJECTIONS[:3])),
        "proj_slot_num": _slots(state, layers, ("attention.proj",)),
        "ffn_slot_num": _slots(state, layers, ("mlp",)),
    }
    for name, tensor in state.items():
        if name.endswith("_param_tokens") and tensor.shape[1] != hidden:
            raise CorruptCheckpoint(f"{name} is {tuple(tensor.shape)}, not [P, {hidden}]")
    if neox is None:  # the releases' options
        neox = {**NEOX_DEFAULTS, **REQUIRED, **RELEASE, "no_weight_tying": not tied}
    else:
        neox = {**NEOX_DEFAULTS, **neox}
    _check_options(neox, sizes)
    if bool(neox["no_weight_tying"]) == tied:
        raise CorruptCheckpoint(
            f"--neox-config says no_weight_tying {neox['no_weight_tying']} but the weights "
            f"{'have no' if tied else 'have an'} output layer ({_head(layers)})"
        )
    heads = heads or neox.get("num_attention_heads") or RELEASES.get((int(hidden), layers))
    if heads is None:
        raise ConversionError(
            f"the weights do not give the number of attention heads (hidden {hidden}, {layers} "
            "layers is none of the four releases): pass --heads N or --neox-config CONFIG.yml"
        )
    head_dim = hidden // heads
    rotary_pct = float(neox["rotary_pct"])
    rotary = head_dim if rotary_pct == 1 else int(head_dim * rotary_pct)
    if hidden % heads or rotary % 2 or not 0 < rotary_pct <= 1:
        raise UnsupportedArchitecture(
            f"{heads} heads on hidden {hidden} with rotary_pct {rotary_pct}: growlm needs a "
            "head size that divides the hidden size and an even number of rotary dimensions"
        )
    config = {
        "vocab_size": int(vocab),
        "hidden_size": int(hidden),
        "num_hidden_layers": layers,
        "num_attention_heads": int(heads),
        "qkv_slot_num": sizes["qkv_slot_num"],
        "proj_slot_num": sizes["proj_slot_num"],
        "ffn_slot_num": sizes["ffn_slot_num"],
        "rotary_pct": rotary_pct,
        "rope_theta": float(neox["rotary_emb_base"]),
        "max_position_embeddings": int(
            neox.get("seq_length") or neox.get("max_position_embeddings") or 2048
        ),
        "layer_norm_eps": float(neox["layernorm_epsilon"]),
        "tie_word_embeddings": tied,
        "bos_token_id": 0,  # <|endoftext|> of the GPT-NeoX-20B tokenizer the releases use
        "eos_token_id": 0,
    }
    out: dict[str, torch.Tensor] = {"model.embed_tokens.weight": embed}
    for i in range(layers):
        src, dst = f"sequential.{2 + i}", f"model.layers.{i}"
        for part in [*(f"attention.{p}" for p in PROJECTIONS), "mlp"]:
            for kind in ("key", "value"):
                name = f"{part}.{kind}_param_tokens"
                out[f"{dst}.{name}"] = state[f"{src}.{name}"]
        for norm in ("input_layernorm", "post_attention_layernorm"):  # layernorm_nonparam
            out[f"{dst}.{norm}.weight"] = torch.ones(hidden, dtype=embed.dtype)
            out[f"{dst}.{norm}.bias"] = torch.zeros(hidden, dtype=embed.dtype)
    weight, bias = _final(layers)
    out["model.norm.weight"], out["model.norm.bias"] = state[weight], state[bias]
    if not tied:
        out["lm_head.weight"] = state[_head(layers)]
    return config, out


def convert(
    src: Path,
    out: Path,
    heads: int | None = None,
    neox_config: Path | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Write the growlm TokenFormer folder ``out`` of the official checkpoint ``src``; returns
    the record written beside it (``conversion.json``)."""
    from growlm import __version__
    from growlm.grow import parse_shard_size
    from growlm.io.output import OutputSpec
    from growlm.io.safetensors_stream import write_sharded
    from growlm.models.tokenformer_config import TokenFormerConfig

    neox = read_neox_config(neox_config) if neox_config is not None else None
    output = OutputSpec(path=out, records=(RECORD,), force=force, sources=(weights_file(src),))
    output.check()
    config_kwargs, weights = official_to_growlm(load_official(src), heads, neox)
    config = TokenFormerConfig(**config_kwargs)
    params = sum(t.numel() for k, t in weights.items() if "layernorm" not in k)
    record = {
        "growlm_version": __version__,
        "converted_from": "Haiyang-W/TokenFormer (GPT-NeoX layout)",
        "source": str(src),
        "neox_config": None if neox_config is None else str(neox_config),
        "parameters": params,
        "config": config_kwargs,
    }
    with output.staged() as tmp:
        config.save_pretrained(tmp)
        # streamed tensor by tensor (the release's tensors may be views of one flat buffer)
        items = [(k, tuple(v.shape), v.dtype) for k, v in weights.items()]
        write_sharded(tmp, items, iter(weights.items()), parse_shard_size("2GB"))
        (tmp / RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return record


def add_parsers(sub: Any) -> None:
    """Register ``convert tokenformer``."""
    conv = sub.add_parser("convert", help="convert a model of another codebase to a growlm folder")
    kinds = conv.add_subparsers(dest="convert_command", required=True)
    p = kinds.add_parser(
        "tokenformer",
        help="an official TokenFormer checkpoint (Haiyang-W/TokenFormer-150M, ...): "
        "pytorch_model.bin -> model.safetensors + config.json",
    )
    p.add_argument("src", type=Path, help="pytorch_model.bin or the folder holding it")
    p.add_argument("out", type=Path, help="output folder")
    p.add_argument("--neox-config", type=Path, help="the official YAML (150M_eval.yml, ...)")
    p.add_argument("--heads", type=positive_int, help="attention heads (default: see docs)")
    p.add_argument("--force", action="store_true", help="replace an OUT growlm wrote")
    p.set_defaults(func=_cmd)


def _cmd(args: argparse.Namespace) -> int:
    record = convert(args.src, args.out, args.heads, args.neox_config, args.force)
    cfg = record["config"]
    print(
        f"wrote {args.out}: {cfg['num_hidden_layers']} layers, hidden {cfg['hidden_size']}, "
        f"{cfg['num_attention_heads']} heads, parameter tokens q/k/v {cfg['qkv_slot_num']}, "
        f"output {cfg['proj_slot_num']}, FFN {cfg['ffn_slot_num']}, "
        f"{record['parameters'] / 1e6:.1f}M parameters"
    )
    return 0
