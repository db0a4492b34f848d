"""Template-mixed projections for the llama family: the parameterisation MixtureGrowth grows
(Pham et al. 2024, "MixtureGrowth: Growing Neural Networks by Recombining Learned Parameters",
WACV 2024, arXiv 2311.04251; the official code, chaudatascience/mixturegrowth, read as
reference).

Every decoder projection p (q, k, v, o, gate, up, down) of layer l is a grid of R x C blocks,
each a linear combination of T templates of projection p, shared by every layer:

    W_p[l] = [ sum_t C_p[l, r, c, t] * T_p[t] ]_{r < R, c < C}     # T_p [T, o, i]; C_p [L, R, C, T]

Before any growth the grid is 1 x 1 (W_p[l] = sum_t C_p[l, t] T_p[t]); each MixtureGrowth step
(growlm.ops.mixture_growth) multiplies the grid, keeps the templates and adds coefficients.

The model stays transformers' LlamaForCausalLM: the banks live at ``model.templates.<p>``
(state-dict names ``model.templates.<p>.templates`` and ``.coefs``), the decoder's projections
become weightless modules that mix their layer's weight on every forward. The HF config carries
``growlm_templates: {count, grid}`` so that ``build_model`` rebuilds the same structure (resume,
growth planning). A template model is not a plain HF checkpoint: ``materialise`` turns it into
one (every projection's weight computed, the config key dropped) for the trainer's exports.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

KEY = "growlm_templates"  # HF config attribute: {"count": T, "grid": R (= C)}
PREFIX = "model.templates."
PROJECTIONS: tuple[tuple[str, str], ...] = (
    ("self_attn", "q_proj"),
    ("self_attn", "k_proj"),
    ("self_attn", "v_proj"),
    ("self_attn", "o_proj"),
    ("mlp", "gate_proj"),
    ("mlp", "up_proj"),
    ("mlp", "down_proj"),
)


def settings(config: Any) -> tuple[int, int] | None:
    """(template count, grid) of a template model's config (a PretrainedConfig or its dict),
    None for a plain model."""
    value = config.get(KEY) if isinstance(config, dict) else getattr(config, KEY, None)
    if value is None:
        return None
    return int(value["count"]), int(value["grid"])


def mix(coefs: torch.Tensor, templates: torch.Tensor) -> torch.Tensor:
    """One layer's weight: [R, C, T] coefficients x [T, o, i] templates -> [R*o, C*i]."""
    r, c, _ = coefs.shape
    _, o, i = templates.shape
    blocks = torch.einsum("rct,toi->roci", coefs, templates)  # [R, o, C, i]
    return blocks.reshape(r * o, c * i)


class TemplateBank(nn.Module):
    """The templates of one projection type and every layer's coefficients."""

    def __init__(self, count: int, layers: int, grid: int, out_features: int, in_features: int):
        super().__init__()
        assert out_features % grid == 0 and in_features % grid == 0, (out_features, grid)
        self.templates = nn.Parameter(torch.empty(count, out_features // grid, in_features // grid))
        self.coefs = nn.Parameter(torch.empty(layers, grid, grid, count))

    def weight(self, layer: int) -> torch.Tensor:
        return mix(self.coefs[layer], self.templates)

    @torch.no_grad()
    def reset(self, std: float) -> None:
        """Templates ~ N(0, std^2); every block's coefficient vector of unit norm, the vectors
        as orthogonal as T dimensions allow (the official code's orthogonal init), so each mixed
        weight starts with the family's init scale: std^2 * ||c||^2 = std^2."""
        self.templates.normal_(0.0, std)
        rows = self.coefs.view(-1, self.coefs.shape[-1])  # [L*R*C, T]
        nn.init.orthogonal_(rows)
        rows /= rows.norm(dim=1, keepdim=True).clamp(min=1e-12)


class TemplateLinear(nn.Module):
    """A bias-free projection whose weight is layer ``layer``'s mix of a shared bank."""

    def __init__(self, bank: TemplateBank, layer: int):
        super().__init__()
        self.layer = layer
        self._bank = [bank]  # a list: the bank is registered once, at the model's root

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self._bank[0].weight(self.layer))


def templatize(model: nn.Module, config: Any) -> None:
    """Replace the decoder projections of a freshly built llama model with template mixes
    (freshly initialised; a checkpoint's state dict is loaded afterwards)."""
    found = settings(config)
    assert found is not None and config.model_type == "llama", config.model_type
    count, grid = found
    layers: nn.ModuleList = model.model.layers  # type: ignore[union-attr,assignment]
    banks = nn.ModuleDict()
    std = float(getattr(config, "initializer_range", 0.02))
    for group, name in PROJECTIONS:
        linear = getattr(getattr(layers[0], group), name)
        assert linear.bias is None, f"{name} has a bias"  # refused by the recipe's validation
        bank = TemplateBank(count, len(layers), grid, linear.out_features, linear.in_features)
        bank.reset(std)
        banks[name] = bank
        for index, layer in enumerate(layers):
            setattr(getattr(layer, group), name, TemplateLinear(bank, index))
    model.model.templates = banks  # type: ignore[union-attr]


def materialise(config: Any, weights: dict[str, torch.Tensor]) -> tuple[Any, dict[str, Any]]:
    """A template model's (config, state dict) as a plain llama checkpoint's: every
    projection's weight mixed, the banks and the config key dropped. Plain models pass."""
    if settings(config) is None:
        return config, weights
    out = {name: t for name, t in weights.items() if not name.startswith(PREFIX)}
    for group, name in PROJECTIONS:
        templates = weights[f"{PREFIX}{name}.templates"]
        coefs = weights[f"{PREFIX}{name}.coefs"]
        for layer in range(coefs.shape[0]):
            out[f"model.layers.{layer}.{group}.{name}.weight"] = mix(coefs[layer], templates)
    plain = copy.deepcopy(config)
    delattr(plain, KEY)
    return plain, out


def dense_params(model: nn.Module, n_params: int) -> int:
    """``n_params`` with every bank counted as the projection weights it mixes: the matmul
    parameters of a forward pass (N in 6 N D), larger than the stored count when T < layers."""
    banks = getattr(getattr(model, "model", None), "templates", None)
    if not isinstance(banks, nn.ModuleDict):
        return n_params
    for bank in banks.values():
        assert isinstance(bank, TemplateBank)
        layers, r, c, _ = bank.coefs.shape
        _, o, i = bank.templates.shape
        n_params += layers * r * o * c * i - bank.coefs.numel() - bank.templates.numel()
    return n_params
