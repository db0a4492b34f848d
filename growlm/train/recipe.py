"""The training recipe: one config tree (data, model, optimisation, runtime, stages), loaded from
YAML, overridable with ``--set key=value`` and checked before any work starts.

Every field is documented where it is declared; ``growlm.train.schema.describe(Recipe)`` lists
them (docs/train.md carries the table).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from growlm.errors import GrowlmError, InvalidRecipe
from growlm.train.schema import build, doc, yaml_problem

RESERVED_STAGE_NAMES = ("final", "checkpoints", "tensorboard", "metrics.jsonl", "recipe.yaml")


@dataclass
class DataConfig:
    """Where training tokens come from."""

    sources: list[str] = field(
        default_factory=list,
        metadata=doc(
            "text sources: files, folders, .jsonl/.parquet, hf:<dataset>[:<config>][@<split>], or "
            "'default' (embedded Shakespeare corpus); relative paths are relative to the recipe"
        ),
    )
    prepared: str | None = field(
        default=None,
        metadata=doc("a folder written by `growlm data prepare`; used instead of sources"),
    )
    tokenizer: str | None = field(
        default=None,
        metadata=doc("HF tokenizer folder; null trains a byte-level BPE on the corpus"),
    )
    vocab_size: int = field(
        default=8192, metadata=doc("vocabulary of the trained tokenizer (EOS included)")
    )
    val_fraction: float = field(
        default=0.01, metadata=doc("share of tokens held out for validation")
    )
    block_tokens: int = field(
        default=2048, metadata=doc("granularity of the train/validation split, in tokens")
    )
    text_field: str = field(
        default="text", metadata=doc("text field of .jsonl/.parquet rows and hub datasets")
    )
    seq_len: int = field(default=256, metadata=doc("tokens per training sequence"))


@dataclass
class TemplatesConfig:
    """MixtureGrowth's parameterisation (growlm/models/templates.py)."""

    count: int = field(
        metadata=doc(
            "templates per projection type (q, k, v, o, gate, up, down), shared by every "
            "decoder layer; each layer mixes them with its own coefficients"
        )
    )


@dataclass
class ModelConfig:
    """The model: any Hugging Face causal-LM family, built with ``from_config``."""

    type: str = field(
        default="llama", metadata=doc("HF model_type (llama, qwen2, mistral, gpt2, ...)")
    )
    config: dict[str, Any] = field(
        default_factory=dict,
        metadata=doc(
            "keyword arguments of the HF config (hidden_size, num_hidden_layers, ...); vocab_size "
            "comes from the tokenizer"
        ),
    )
    init: str | None = field(
        default=None,
        metadata=doc(
            "checkpoint whose weights start the first stage: a folder, a hub id "
            "org/name[@revision] or a .gguf file (null: random init)"
        ),
    )
    attn_implementation: str = field(
        default="auto",
        metadata=doc(
            "HF attention implementation (sdpa, eager, ...); auto: growlm_cpu (flash forward, "
            "recomputing backward) for compiled CPU runs with seq_len <= 512, sdpa otherwise"
        ),
    )
    templates: TemplatesConfig | None = field(
        default=None,
        metadata=doc(
            "llama only: {count: T} builds every decoder projection from T templates shared "
            "across layers (MixtureGrowth); grow it with op mixture-growth; checkpoints keep the "
            "templates, stage exports are plain llama weights (materialised)"
        ),
    )


@dataclass
class OptimConfig:
    """AdamW with linear warm-up then cosine decay; every stage may override any field."""

    lr: float = field(default=1e-3, metadata=doc("peak learning rate"))
    min_lr_ratio: float = field(default=0.1, metadata=doc("cosine floor as a fraction of the peak"))
    warmup_steps: int = field(
        default=100, metadata=doc("linear warm-up steps (restarted at every stage)")
    )
    betas: tuple[float, float] = field(default=(0.9, 0.95), metadata=doc("AdamW betas"))
    eps: float = field(default=1e-8, metadata=doc("AdamW epsilon"))
    weight_decay: float = field(
        default=0.1, metadata=doc("decoupled weight decay, on matrices only")
    )
    grad_clip: float = field(
        default=1.0, metadata=doc("clip the global gradient norm to this (0 disables)")
    )
    micro_batch_size: int = field(default=8, metadata=doc("sequences per forward pass and process"))
    grad_accum: int = field(default=1, metadata=doc("micro-batches accumulated per optimizer step"))
    moe_aux_loss_coef: float | None = field(
        default=None,
        metadata=doc(
            "MoE models: load-balancing loss coefficient (None: the model config's "
            "router_aux_loss_coef)"
        ),
    )
    moe_z_loss_coef: float = field(
        default=0.0, metadata=doc("MoE models: router z-loss coefficient")
    )


@dataclass
class GrowConfig:
    """A growth operator applied when a stage starts."""

    op: str = field(
        metadata=doc("growth operator name from the registry (stack, interleave, zero-depth, ...)")
    )
    params: dict[str, Any] = field(
        default_factory=dict, metadata=doc("operator parameters, e.g. {factor: 4}")
    )
    fade_steps: int | None = field(
        default=None,
        metadata=doc(
            "random-depth / random-width only: MSG masks ramp the new structure in from 0 to 1 "
            "over this many steps (exactly function-preserving at growth)"
        ),
    )


@dataclass
class StageConfig:
    """A span of training with its own token budget, optional growth and optimiser overrides."""

    name: str = field(metadata=doc("stage name: the stage's checkpoint folder is OUT/<name>/"))
    tokens: int = field(
        metadata=doc("training tokens of this stage (rounded up to whole optimizer steps)")
    )
    grow: GrowConfig | None = field(
        default=None,
        metadata=doc(
            "grow the model before this stage: {op: stack, factor: 4} (keys besides op are params)"
        ),
    )
    optim: dict[str, Any] = field(
        default_factory=dict, metadata=doc("overrides of the optim section for this stage")
    )
    optimizer_state: Literal["fresh", "carry"] = field(
        default="fresh",
        metadata=doc("after growth: fresh AdamW (paper) or carry the moments through the operator"),
    )
    trainable: Literal["all", "new"] = field(
        default="all",
        metadata=doc(
            "new: train only the layers this stage's depth growth added on top, the final norm "
            "and the head; everything else frozen (MSLT). all: train every parameter"
        ),
    )


@dataclass
class RunConfig:
    """How the run executes: precision, devices, logging and checkpoint cadence."""

    precision: Literal["bf16", "fp32", "auto"] = field(
        default="bf16",
        metadata=doc(
            "bf16 autocast (fp32 master weights), fp32, or auto: per stage, fp32 on CPU below "
            "the measured crossover width (growlm/train/precision.py), bf16 otherwise; bfloat16 "
            "and float32 are read as bf16 and fp32",
            aliases={"bfloat16": "bf16", "float32": "fp32"},
        ),
    )
    device: Literal["auto", "cpu", "cuda"] = field(
        default="auto", metadata=doc("auto: CUDA when available")
    )
    compile: bool = field(default=False, metadata=doc("torch.compile the model"))
    parallel: Literal["ddp", "fsdp"] = field(
        default="ddp",
        metadata=doc("under torchrun: DDP or FSDP2 (fully_shard; also with one process)"),
    )
    threads: int | None = field(
        default=None, metadata=doc("torch intra-op threads per process (null: torch default)")
    )
    eval_every: int = field(
        default=100, metadata=doc("evaluate every k steps (0: only at stage ends)")
    )
    eval_sequences: int = field(
        default=64, metadata=doc("validation sequences per evaluation (the same ones every time)")
    )
    checkpoint_every: int = field(
        default=0, metadata=doc("resumable checkpoint every k steps (0: only at stage ends)")
    )
    keep_checkpoints: int = field(
        default=2, metadata=doc("resumable checkpoints kept (oldest deleted)")
    )
    checkpoint_format: Literal["full", "sharded"] = field(
        default="full",
        metadata=doc(
            "full: weights and AdamW state gathered and written by rank 0; sharded (FSDP): each "
            "rank writes its own shards, no gather (resume with the same number of processes)"
        ),
    )
    peak_flops: float | None = field(
        default=None,
        metadata=doc(
            "peak FLOP/s for MFU (null: no MFU; see bench/train_throughput.py to measure)"
        ),
    )
    progress: bool = field(default=True, metadata=doc("progress bar with ETA on stderr"))
    on_nonfinite: Literal["stop", "skip"] = field(
        default="stop",
        metadata=doc(
            "a non-finite loss or gradient: stop (the step is not applied), or skip the batch "
            "and multiply the lr by skip_lr_factor for the rest of the run"
        ),
    )
    max_skipped_steps: int = field(
        default=10, metadata=doc("with on_nonfinite: skip, stop after this many skipped steps")
    )
    skip_lr_factor: float = field(
        default=0.5, metadata=doc("lr multiplier applied at every skipped step (0 < f <= 1)")
    )
    spike_factor: float = field(
        default=0.0,
        metadata=doc(
            "log an event when a step's loss exceeds this multiple of its recent average (0: off)"
        ),
    )
    tensorboard: bool = field(
        default=False, metadata=doc("also log to OUT/tensorboard (needs tensorboard)")
    )
    wandb_project: str | None = field(
        default=None, metadata=doc("also log to this W&B project (needs wandb)")
    )


@dataclass
class Recipe:
    """A whole training run."""

    name: str = field(default="run", metadata=doc("run name (for logs)"))
    seed: int = field(default=0, metadata=doc("seeds model init, data order and every RNG"))
    data: DataConfig = field(default_factory=DataConfig, metadata=doc("training data (required)"))
    model: ModelConfig = field(default_factory=ModelConfig, metadata=doc("model"))
    optim: OptimConfig = field(
        default_factory=OptimConfig, metadata=doc("optimisation (stages override fields)")
    )
    run: RunConfig = field(default_factory=RunConfig, metadata=doc("runtime settings"))
    stages: list[StageConfig] = field(
        default_factory=list, metadata=doc("training stages, in order")
    )

    def stage_optim(self, index: int) -> OptimConfig:
        """The effective optimisation settings of stage ``index``."""
        merged = {**dataclasses.asdict(self.optim), **self.stages[index].optim}
        return build(OptimConfig, merged, f"stages.{index}.optim")


def load_recipe(path: Path | str, overrides: list[str] | None = None) -> Recipe:
    """Read a YAML recipe, apply ``key=value`` overrides, resolve paths and validate."""
    file = Path(path)
    if file.is_dir():
        raise InvalidRecipe(
            f"recipe {str(file)!r} is a folder, not a YAML file: give the recipe file itself "
            "(e.g. recipes/tiny.yaml)"
        )
    if not file.is_file():
        raise InvalidRecipe(f"recipe {str(file)!r} does not exist")
    try:
        raw = yaml.safe_load(file.read_text())
    except yaml.YAMLError as exc:
        raise InvalidRecipe(
            f"recipe {str(file)!r} is not valid YAML: {yaml_problem(exc)}"
        ) from None
    return recipe_from_dict(raw, overrides or [], base_dir=file.resolve().parent)


def recipe_from_dict(raw: Any, overrides: list[str], base_dir: Path | None = None) -> Recipe:
    """Validate a parsed recipe (after overrides); relative data paths resolve from base_dir."""
    if not isinstance(raw, dict):
        raise InvalidRecipe("recipe: expected a mapping at the top level")
    for item in overrides:
        apply_override(raw, item)
    if "data" not in raw:
        raise InvalidRecipe(
            "data: required section is missing (give data.sources or data.prepared)"
        )
    stages = raw.get("stages")
    for stage in stages if isinstance(stages, list) else []:  # else build() names the type
        if isinstance(stage, dict) and isinstance(stage.get("grow"), dict):
            stage["grow"] = _split_grow(stage["grow"])
    recipe = build(Recipe, raw, "")
    if base_dir is not None:
        _resolve_paths(recipe, base_dir)
    validate(recipe)
    return recipe


def _split_grow(grow: dict[str, Any]) -> dict[str, Any]:
    """``{op: stack, factor: 4}`` -> ``{op: stack, params: {factor: 4}}``."""
    if "params" in grow:
        return grow
    params = {k: v for k, v in grow.items() if k not in ("op", "fade_steps")}
    if "op" not in grow:
        return grow
    out = {"op": grow.get("op"), "params": params}
    if "fade_steps" in grow:
        out["fade_steps"] = grow["fade_steps"]
    return out


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Set a dotted key (``optim.lr=3e-4``, ``stages.1.tokens=1e6``, ``stages.grown.optim.lr``)."""
    key, sep, text = item.partition("=")
    if not sep or not key:
        raise InvalidRecipe(f"--set {item!r}: expected key=value")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = text
    parts = key.split(".")
    node: Any = raw
    for depth, part in enumerate(parts[:-1]):
        node = _child(node, part, ".".join(parts[: depth + 1]), item)
    last = parts[-1]
    if not isinstance(node, (dict, list)):
        raise InvalidRecipe(f"--set {item!r}: {'.'.join(parts[:-1])} is not a section")
    if isinstance(node, list):
        node[_list_index(node, last, key, item)] = value
    else:
        node[last] = value


def _child(node: Any, part: str, where: str, item: str) -> Any:
    if isinstance(node, list):
        return node[_list_index(node, part, where, item)]
    if not isinstance(node, dict):
        raise InvalidRecipe(f"--set {item!r}: {where} is not a section")
    if node.get(part) is None:
        node[part] = {}
    return node[part]


def _list_index(node: list[Any], part: str, where: str, item: str) -> int:
    if re.fullmatch(r"-?\d+", part):
        index = int(part)
        if -len(node) <= index < len(node):
            return index
        raise InvalidRecipe(f"--set {item!r}: {where} is out of range ({len(node)} entries)")
    for index, entry in enumerate(node):
        if isinstance(entry, dict) and entry.get("name") == part:
            return index
    raise InvalidRecipe(f"--set {item!r}: no entry named {part!r} at {where}")


def _resolve_paths(recipe: Recipe, base: Path) -> None:
    from growlm.io.resolve import hub_id

    def resolve(p: str) -> str:
        if p == "default" or p.startswith("hf:"):
            return p
        path = Path(p).expanduser()
        return str(path if path.is_absolute() else (base / path).resolve())

    data = recipe.data
    data.sources = [resolve(s) for s in data.sources]
    if data.prepared:
        data.prepared = resolve(data.prepared)
    if data.tokenizer:
        data.tokenizer = resolve(data.tokenizer)
    if recipe.model.init:
        init = recipe.model.init
        local = resolve(init)
        # a hub id stays as written unless a folder of that name lies beside the recipe
        recipe.model.init = init if hub_id(init) and not Path(local).exists() else local


def validate(recipe: Recipe) -> None:
    """Checks that need no model or data: each failure is one line naming the key."""
    data = recipe.data
    if not data.sources and not data.prepared:
        raise InvalidRecipe("data: give data.sources or data.prepared")
    _check(recipe.seed >= 0, "seed must be >= 0")
    _check(data.seq_len >= 1, "data.seq_len must be >= 1")
    _check(0 <= data.val_fraction < 0.5, "data.val_fraction must be in [0, 0.5)")
    _check(data.vocab_size >= 257, "data.vocab_size must be >= 257")
    if "vocab_size" in recipe.model.config:
        raise InvalidRecipe("model.config.vocab_size: set by the tokenizer; remove it")
    run = recipe.run
    _check(
        run.eval_every >= 0 and run.checkpoint_every >= 0,
        "run.eval_every and run.checkpoint_every must be >= 0",
    )
    _check(run.eval_sequences >= 1, "run.eval_sequences must be >= 1")
    _check(run.max_skipped_steps >= 0, "run.max_skipped_steps must be >= 0")
    _check(0 < run.skip_lr_factor <= 1, "run.skip_lr_factor must be in (0, 1]")
    _check(run.spike_factor == 0 or run.spike_factor > 1, "run.spike_factor must be 0 or > 1")
    _check(run.keep_checkpoints >= 1, "run.keep_checkpoints must be >= 1")
    _check(
        run.checkpoint_format == "full" or run.parallel == "fsdp",
        "run.checkpoint_format: sharded needs run.parallel fsdp (DDP ranks hold full copies)",
    )
    _check(run.peak_flops is None or run.peak_flops > 0, "run.peak_flops must be > 0")
    _check(run.threads is None or run.threads >= 1, "run.threads must be >= 1 (or null)")
    _check(data.vocab_size <= 1 << 20, "data.vocab_size must be <= 1048576")
    if not recipe.stages:
        raise InvalidRecipe("stages: at least one stage is required")
    _validate_templates(recipe)
    _validate_optim(recipe.optim, "optim")  # first, so a bad top-level value is named as such
    names: set[str] = set()
    for index, stage in enumerate(recipe.stages):
        where = f"stages.{index}"
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", stage.name):
            raise InvalidRecipe(f"{where}.name: {stage.name!r} is not a valid folder name")
        _check(stage.name not in RESERVED_STAGE_NAMES, f"{where}.name: {stage.name!r} is reserved")
        _check(stage.name not in names, f"{where}.name: duplicate stage name {stage.name!r}")
        names.add(stage.name)
        _check(stage.tokens > 0, f"{where}.tokens must be > 0")
        if stage.grow is not None and index == 0 and recipe.model.init is None:
            raise InvalidRecipe(
                f"{where}.grow: the first stage can only grow a model.init checkpoint"
            )
        if stage.optimizer_state == "carry" and stage.grow is None:
            raise InvalidRecipe(f"{where}.optimizer_state: 'carry' needs a grow step")
        _validate_stage_growth(recipe, index)
        _validate_optim(recipe.stage_optim(index), f"{where}.optim")


def _validate_templates(recipe: Recipe) -> None:
    """A template model (MixtureGrowth) is a freshly trained llama without biases, grown only
    by mixture-growth; mixture-growth needs one."""
    from growlm.ops.mixture_growth import is_mixture_growth

    model, templates = recipe.model, recipe.model.templates
    if templates is not None:
        _check(templates.count >= 1, f"model.templates.count must be >= 1, got {templates.count}")
        _check(
            model.type == "llama",
            f"model.templates: template-mixed projections are built for the llama family, "
            f"not {model.type!r}",
        )
        _check(
            model.init is None,
            "model.templates: a model.init checkpoint has no templates; train from scratch",
        )
        for key in ("attention_bias", "mlp_bias"):
            _check(not model.config.get(key), f"model.templates: needs {key} false")
        _check(
            recipe.run.parallel != "fsdp",
            "model.templates: shared templates are not sharded by run.parallel fsdp; use ddp",
        )
    for index, stage in enumerate(recipe.stages):
        if stage.grow is None:
            continue
        mixture = is_mixture_growth(stage.grow.op)
        if mixture and templates is None:
            raise InvalidRecipe(
                f"stages.{index}.grow: {stage.grow.op} grows a template model: set "
                "model.templates: {count: T} (llama)"
            )
        if templates is not None and (not mixture or "+" in stage.grow.op):
            raise InvalidRecipe(
                f"stages.{index}.grow: a template model (model.templates) grows only with "
                f"mixture-growth, not {stage.grow.op!r}"
            )


def _validate_stage_growth(recipe: Recipe, index: int) -> None:
    """Masks (MSG) and MSLT need the right kind of growth; the rest is planned on meta tensors
    when training starts (``growth.check_growth``)."""
    from growlm.ops.registry import get_operator_entry, parse_op_names
    from growlm.train.masks import FADE_OPS

    stage = recipe.stages[index]
    where = f"stages.{index}"
    grow = stage.grow
    ops = parse_op_names(grow.op) if grow is not None else []
    if grow is not None and grow.fade_steps is not None:
        if isinstance(grow.fade_steps, bool) or grow.fade_steps <= 0:
            raise InvalidRecipe(f"{where}.grow.fade_steps must be an integer > 0")
        if not ops or any(o not in FADE_OPS for o in ops):
            raise InvalidRecipe(
                f"{where}.grow.fade_steps: masks apply to random-depth / random-width (MSG), "
                f"not {grow.op!r}; remove fade_steps or grow with a random operator"
            )
        if recipe.run.compile:
            raise InvalidRecipe(
                f"{where}.grow.fade_steps: the masks live in forward hooks that a compiled model "
                "would not follow; set run.compile false for this run"
            )
    if stage.trainable == "new":
        if grow is None:
            raise InvalidRecipe(
                f"{where}.trainable: 'new' (MSLT) needs a depth growth in this stage"
            )
        entries = [get_operator_entry(o) for o in ops]
        if any(e is not None and e.width_fill is not None for e in entries):
            raise InvalidRecipe(
                f"{where}.trainable: 'new' (MSLT) trains the layers a depth growth adds on top; "
                f"{grow.op!r} grows width, which changes every layer: use trainable: all"
            )
        if any(e is not None and e.kind == "trains" for e in entries):
            raise InvalidRecipe(
                f"{where}.trainable: 'new' (MSLT) keeps the old layers frozen, but {grow.op!r} "
                "learns a map that rewrites them: use stack or top with trainable: new"
            )
        if recipe.run.parallel == "fsdp":
            raise InvalidRecipe(
                f"{where}.trainable: 'new' (MSLT) is not supported with run.parallel fsdp; use ddp"
            )


def _validate_optim(o: OptimConfig, where: str) -> None:
    _check(o.lr > 0, f"{where}.lr must be > 0, got {o.lr}")
    _check(0 <= o.min_lr_ratio <= 1, f"{where}.min_lr_ratio must be in [0, 1]")
    _check(o.warmup_steps >= 0, f"{where}.warmup_steps must be >= 0")
    _check(all(0 <= b < 1 for b in o.betas), f"{where}.betas must be in [0, 1)")
    _check(o.eps > 0, f"{where}.eps must be > 0")
    _check(o.weight_decay >= 0, f"{where}.weight_decay must be >= 0")
    _check(o.grad_clip >= 0, f"{where}.grad_clip must be >= 0")
    _check(o.micro_batch_size >= 1, f"{where}.micro_batch_size must be >= 1")
    _check(o.grad_accum >= 1, f"{where}.grad_accum must be >= 1")


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise InvalidRecipe(message)


def recipe_to_dict(recipe: Recipe) -> dict[str, Any]:
    """Plain data (for saving next to the run and in checkpoints): tuples become lists, so the
    result is YAML/JSON friendly and equals itself after a round trip."""
    return _plain(dataclasses.asdict(recipe))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def check_resumable(
    recipe: Recipe, saved: dict[str, Any], stage: int, stage_done: bool, out: str
) -> None:
    """Refuse to resume the run in ``out`` under a recipe that differs from the one it was
    trained with (``saved``, from its checkpoint, which is in stage ``stage``, finished or not):
    seed, data, model and the stages already trained, with their optimisation, must be the
    same; the stage in progress may change only its optim (e.g. a lower lr after a numerical
    fault). The saved recipe is read through today's schema first, so a field added since it
    was written (at its default) is no difference."""
    current = recipe_to_dict(recipe)
    with contextlib.suppress(GrowlmError):  # if no longer valid: compared as written (refused)
        saved = recipe_to_dict(recipe_from_dict(copy.deepcopy(saved), []))
    for key in ("seed", "data", "model"):
        if saved.get(key) != current.get(key):
            raise InvalidRecipe(
                f"{key}: differs from the recipe of the run being resumed in {out!r}"
            )
    before_stages = saved.get("stages", [])
    if len(before_stages) <= stage or len(current["stages"]) <= stage:
        raise InvalidRecipe("stages: the stages already trained differ from the resumed run's")
    for i in range(stage + 1):
        a, b = dict(before_stages[i]), dict(current["stages"][i])
        if i == stage and not stage_done:
            a.pop("optim", None), b.pop("optim", None)
            if a != b:
                raise InvalidRecipe(
                    f"stages: stage {b.get('name')!r} in progress differs from the resumed "
                    "run's (only its optim may change)"
                )
            continue
        if a != b:
            raise InvalidRecipe("stages: the stages already trained differ from the resumed run's")
        if {**saved.get("optim", {}), **a.get("optim", {})} != {
            **current["optim"],
            **b.get("optim", {}),
        }:
            raise InvalidRecipe(
                f"optim: differs for stage {b.get('name')!r}, already trained in {out!r}; "
                "change optimisation only for stages not finished"
            )


__all__ = [
    "DataConfig",
    "GrowConfig",
    "ModelConfig",
    "OptimConfig",
    "Recipe",
    "RunConfig",
    "StageConfig",
    "TemplatesConfig",
    "check_resumable",
    "load_recipe",
    "recipe_from_dict",
    "recipe_to_dict",
]
