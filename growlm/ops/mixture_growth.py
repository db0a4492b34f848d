"""MixtureGrowth (Pham et al. 2024, WACV, arXiv 2311.04251): widen a template model
(growlm.models.templates) by new coefficient combinations of its already-trained templates.

Width x k (k >= 2, an integer): hidden size, FFN size, attention heads and KV heads all x k,
head_dim kept, so every projection's R x C block grid becomes kR x kC with blocks of the
templates' own shape. Block (r, c) of the grown grid lies in tile (r // R, c // C):

- a tile on the diagonal holds the trained combination: block (r, c) copies the coefficients of
  old block (r mod R, c mod C). The paper's grown layer keeps its trained seed networks on the
  diagonal (two of them, each with its own template set); growlm trains one model, so each
  diagonal tile is that model.
- an off-diagonal tile is new: each block's coefficient vector is, in turn, the direction its
  layer's existing vectors span least (the last right-singular vector of their stack: exactly
  orthogonal to all of them while fewer than T exist), with the old vectors' mean norm times
  ``coef_scale``: the official code's default ``coefs_growing: orthogonal`` (unit norm there;
  norm-matched here, since trained coefficients are not unit vectors). No random noise, no
  data: the same weights give the same growth.

Templates are kept as they are, and everything (templates and all coefficients) trains after
growth, as in the paper. Outside the banks the residual stream is copied k times: embedding
columns and norm weights tiled, the head's columns tiled and divided by k. So with
``coef_scale: 0`` (the official code's ``coefs_growing: zero``) the grown model computes exactly
the old function (k identical copies; with a tied head the logits are k times larger), but the
copies then stay identical in training; the paper's orthogonal coefficients break that symmetry
at the price of a changed function (the off-diagonal blocks mix the copies; measured in
tests/test_mixture_growth.py and docs/grow.md).

A plain checkpoint has no templates: this operator grows the trainer's template state (a recipe
stage after training with ``model.templates``); ``growlm grow`` on a folder refuses it.
"""

from __future__ import annotations

from typing import Any

import torch

from growlm.errors import InvalidGrowth
from growlm.io.hf_config import config_object
from growlm.models.templates import KEY, PREFIX, settings
from growlm.ops.params import MAX_WIDTH

NAME = "mixture-growth"
GROWN_KEYS = ("hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads")
CHECKPOINT_REFUSAL = (
    "mixture-growth grows a template model, which a checkpoint folder does not hold: train with "
    "model.templates in a growlm train recipe and grow in a later stage "
    "(grow: {op: mixture-growth, factor: 2}); see docs/grow.md"
)


def is_mixture_growth(op: str) -> bool:
    from growlm.ops.registry import get_operator_entry

    entries = [get_operator_entry(part) for part in op.split("+")]
    return any(e is not None and e.name == NAME for e in entries)


def applies(config: Any, op: str) -> bool:
    """Whether a growth goes through this module: a template model, or this operator named."""
    return settings(config) is not None or is_mixture_growth(op)


def check_params(params: dict[str, Any]) -> tuple[int, float]:
    """(factor, coef_scale) of a stage's parameters, checked against the registry's
    declarations (one line naming the bad one)."""
    from growlm.ops.params import check_params as check_declared
    from growlm.ops.params import with_defaults
    from growlm.ops.registry import get_operator

    op = get_operator(NAME)
    full = with_defaults(op, check_declared([op], params))
    return int(full["factor"]), float(full["coef_scale"])


def grow_state(
    config: Any,
    tensors: dict[str, torch.Tensor],
    op: str,
    params: dict[str, Any],
    fill: str = "weights",
) -> tuple[Any, dict[str, torch.Tensor], dict[str, Any]]:
    """(grown config, grown tensors, report) of a template model's state dict; ``fill``
    ``exp_avg`` / ``exp_avg_sq`` grow AdamW moments keyed the same way (copied with copied
    values, zero for new coefficients, the head's divided by k / k^2). Meta tensors give
    meta tensors of the grown shapes (planning)."""
    cfg = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    found = settings(cfg)
    if found is None:
        raise InvalidGrowth(
            f"{NAME} grows a template model: set model.templates in the recipe (llama family)"
        )
    from growlm.ops.registry import get_operator_entry

    entry = get_operator_entry(op)
    if entry is None or entry.name != NAME:
        raise InvalidGrowth(
            f"a template model (model.templates) grows only with {NAME}, not {op!r}"
        )
    if cfg.get("model_type") != "llama":
        raise InvalidGrowth(f"{NAME} grows the llama family, not {cfg.get('model_type')!r}")
    factor, scale = check_params(dict(params))
    count, grid = found
    hidden = int(cfg["hidden_size"])
    if hidden * factor > MAX_WIDTH:
        raise InvalidGrowth(f"{NAME} factor {factor}: the hidden size would pass {MAX_WIDTH}")
    tied = bool(cfg.get("tie_word_embeddings", False))

    new_cfg = dict(cfg)
    new_cfg["head_dim"] = int(cfg.get("head_dim") or hidden // int(cfg["num_attention_heads"]))
    for key in GROWN_KEYS:
        new_cfg[key] = int(cfg[key]) * factor
    new_cfg[KEY] = {"count": count, "grid": grid * factor}

    out: dict[str, torch.Tensor] = {}
    for name, t in tensors.items():
        if name.startswith(PREFIX) and name.endswith(".templates"):
            out[name] = t.clone()
        elif name.startswith(PREFIX) and name.endswith(".coefs"):
            out[name] = _grow_coefs(t, factor, scale, fill)
        elif name == "lm_head.weight" and not tied:
            divisor = float(factor**2 if fill == "exp_avg_sq" else factor)
            out[name] = torch.cat([t] * factor, dim=1) / divisor
        elif t.dim() == 2 and t.shape[1] == hidden:  # the embedding (and a tied head)
            out[name] = torch.cat([t] * factor, dim=1)
        elif t.dim() == 1 and t.shape[0] == hidden:  # RMSNorm weights
            out[name] = torch.cat([t] * factor)
        else:
            raise InvalidGrowth(f"{NAME}: no rule for tensor {name!r} {tuple(t.shape)}")
    layers = int(cfg["num_hidden_layers"])
    report = {
        "op": NAME,
        "params": {"factor": factor, "coef_scale": scale},
        "layer_map": [{"out": i, "src": i, "kind": "copy"} for i in range(layers)],
        "src_layers": layers,
        "out_layers": layers,
        "function_preserving": scale == 0 and not tied,
    }
    return config_object(new_cfg, error=InvalidGrowth), out, report


def _grow_coefs(old: torch.Tensor, factor: int, scale: float, fill: str) -> torch.Tensor:
    """[L, R, R, T] -> [L, kR, kR, T]: diagonal tiles copy the old grid, off-diagonal blocks
    get new coefficients (weights) or zero moments."""
    layers, grid, _, count = old.shape
    size = grid * factor
    if old.is_meta:
        return torch.empty(layers, size, size, count, device="meta", dtype=old.dtype)
    new = torch.zeros(layers, size, size, count, dtype=old.dtype, device=old.device)
    fresh = [
        (r, c) for r in range(size) for c in range(size) if r // grid != c // grid
    ]  # off-diagonal tiles, row by row
    for a in range(factor):  # diagonal tiles: the trained grid
        new[:, a * grid : (a + 1) * grid, a * grid : (a + 1) * grid] = old
    if fill == "weights":
        for layer in range(layers):
            vectors = new_coefficients(old[layer].reshape(-1, count), len(fresh), scale)
            for (r, c), vector in zip(fresh, vectors, strict=True):
                new[layer, r, c] = vector
    return new


def new_coefficients(existing: torch.Tensor, n: int, scale: float) -> torch.Tensor:
    """``n`` coefficient vectors [n, T], each in turn the direction the vectors so far
    (``existing`` [m, T], then the new ones) span least, with the existing vectors' mean norm
    times ``scale``; the sign makes the largest entry positive (deterministic)."""
    norm = existing.double().norm(dim=1).mean()
    rows = list(existing.double())
    out = []
    for _ in range(n):
        direction = torch.linalg.svd(torch.stack(rows)).Vh[-1]  # [T], unit
        direction = direction * direction[direction.abs().argmax()].sign()
        rows.append(direction * norm)
        out.append(direction * norm * scale)
    return torch.stack(out).to(existing.dtype)
