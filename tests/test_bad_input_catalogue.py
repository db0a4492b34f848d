"""The bad-input catalogue: for every command (grow, train, data prepare, plan, compare, eval) the
configs, recipes, checkpoints, tokenizers, data files and arguments a user can get wrong.

Each case runs the CLI in-process (``growlm.cli.main``) and asserts: the exact error class, a
one-line message naming the problem (and, where the value alone does not say it, the fix), exit
code 2, no traceback, and that nothing under the test's folder was created, changed or deleted.
tests/test_bad_input.py holds ~38 more ``grow`` cases (operator parameters, weights, pickles).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

import growlm.cli as cli
from growlm.analysis.errors import (
    AnalysisError,
    InvalidGuideline,
    NoValidationLoss,
    RunNotFound,
)
from growlm.errors import (
    CorruptCheckpoint,
    DiskFull,
    GrowlmError,
    InvalidData,
    InvalidGrowth,
    InvalidRecipe,
    NotACausalLM,
    OutputBusy,
    OutputExists,
    OutputNotWritable,
)
from growlm.eval.errors import EvalError

REPO = Path(__file__).parents[1]
TINY = REPO / "recipes" / "tiny.yaml"
SMALL = [  # the tiny recipe, small enough that a case that trains would finish quickly
    "stages.base.tokens=256",
    "stages.grown.tokens=256",
    "data.seq_len=32",
    "optim.micro_batch_size=4",
    "run.precision=fp32",
    "run.eval_sequences=2",
]
USAGE = argparse.ArgumentError  # stands for argparse's own one-line usage errors


@dataclass
class Ctx:
    """What a case builds its bad input from; every path lies under ``tmp``."""

    tmp: Path
    llama_src: Path
    model_src: Path

    def path(self, name: str) -> Path:
        return self.tmp / name

    def write(self, name: str, text: str | bytes) -> str:
        p = self.tmp / name
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            p.write_bytes(text)
        else:
            p.write_text(text)
        return str(p)

    def llama(self, name: str = "src") -> Path:
        """A fresh copy of a tiny Llama checkpoint (no tokenizer)."""
        dst = self.tmp / name
        shutil.copytree(self.llama_src, dst)
        return dst

    def model(self, name: str = "model") -> Path:
        """A fresh copy of a tiny Llama with its tokenizer (vocabularies agree): eval-able."""
        dst = self.tmp / name
        shutil.copytree(self.model_src, dst)
        return dst

    def edit_json(self, file: Path, **changes) -> None:
        data = json.loads(file.read_text())
        for key, value in changes.items():
            if value is None:
                data.pop(key, None)
            else:
                data[key] = value
        file.write_text(json.dumps(data))

    def run_dir(self, name: str, rows: list) -> str:
        text = "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)
        self.write(f"{name}/metrics.jsonl", text)
        return str(self.tmp / name)


def train(c: Ctx, *sets: str, out: str = "run", extra: tuple[str, ...] = ()) -> list[str]:
    argv = ["train", str(TINY), "--out", str(c.path(out)), *extra]
    for item in [*SMALL, *sets]:
        argv += ["--set", item]
    return argv


def grow(c: Ctx, src: Path, *args: str) -> list[str]:
    return ["grow", str(src), str(c.path("out")), "--op", "stack", "--factor", "2", *args]


def prepare(c: Ctx, *sources: str, args: tuple[str, ...] = ()) -> list[str]:
    return ["data", "prepare", *sources, "--out", str(c.path("prepared")), *args]


def evaluate(c: Ctx, model: Path | str, *args: str) -> list[str]:
    return ["eval", str(model), *args]


TEXT = "To be, or not to be, that is the question. " * 40


def _val(step: int, loss: float) -> dict:
    return {"step": step, "stage": "a", "tokens": step, "flops": step, "elapsed": step,
            "loss": loss, "val_loss": loss}  # fmt: skip


RUN_OK = [_val(1, 3.0), _val(2, 2.5)]


# ---- the cases: (id, expected class, argv builder, fragments of the one-line message) --------
Builder = Callable[[Ctx], list[str]]
CASES: list[tuple[str, type[Exception], Builder, tuple[str, ...]]] = []


def case(name: str, cls: type[Exception], *needles: str):
    def register(build: Builder) -> Builder:
        CASES.append((name, cls, build, needles))
        return build

    return register


# ---- grow (more in tests/test_bad_input.py) ---------------------------------------------------
@case("grow: shard size unreadable", InvalidGrowth, "--shard-size must look like 2GB or 500MB")
def _(c):
    return grow(c, c.llama(), "--shard-size", "2XB")


@case("grow: shard size zero", InvalidGrowth, "--shard-size must be positive", "got '0'")
def _(c):
    return grow(c, c.llama(), "--shard-size", "0")


@case("grow: no OUT", InvalidGrowth, "give an output folder OUT (or --dry-run)")
def _(c):
    return ["grow", str(c.llama()), "--op", "stack", "--factor", "2"]


def upcycle(c: Ctx, src: Path, *args: str) -> list[str]:
    return ["grow", str(src), str(c.path("out")), "--op", "upcycle", *args]


@case("grow: upcycle with one expert", InvalidGrowth, "--experts 1: an MoE needs at least 2")
def _(c):
    return upcycle(c, c.llama(), "--experts", "1", "--top-k", "1")


@case("grow: upcycle top-k 0", InvalidGrowth, "--top-k 0 must be between 1 and --experts 4")
def _(c):
    return upcycle(c, c.llama(), "--experts", "4", "--top-k", "0")


@case("grow: upcycle top-k above experts", InvalidGrowth, "--top-k 5 must be between 1 and")
def _(c):
    return upcycle(c, c.llama(), "--experts", "4", "--top-k", "5")


@case("grow: upcycle an MoE source", InvalidGrowth, "already a Mixture of Experts", "dense")
def _(c):
    src = c.llama()
    c.edit_json(src / "config.json", model_type="mixtral", num_local_experts=4)
    return upcycle(c, src, "--experts", "4", "--top-k", "2")


@case("grow: upcycle a family without MoE", InvalidGrowth, "no MoE counterpart for phi3", "->")
def _(c):
    from tiny_models import save_model

    return upcycle(c, save_model("phi3", c.path("phi3")), "--experts", "4", "--top-k", "2")


@case("grow: upcycle granularity not dividing the FFN", InvalidGrowth, "--granularity 5 does not")
def _(c):
    return upcycle(c, c.llama(), "--experts", "4", "--top-k", "2", "--granularity", "5")


@case("grow: upcycle hidden router without text", InvalidGrowth, "needs --router-data FILE")
def _(c):
    return upcycle(c, c.llama(), "--experts", "4", "--top-k", "2", "--router-init", "hidden")


@case("grow: upcycle drop ratio above 1", InvalidGrowth, "--drop-ratio must be a number in [0, 1]")
def _(c):
    return upcycle(c, c.llama(), "--experts", "4", "--top-k", "2", "--drop-ratio", "1.5")


@case("grow: config.json not JSON", CorruptCheckpoint, "config.json is not valid JSON")
def _(c):
    src = c.llama()
    (src / "config.json").write_text("{bad")
    return grow(c, src)


@case("grow: config.json a list", CorruptCheckpoint, "config.json does not hold a JSON object")
def _(c):
    src = c.llama()
    (src / "config.json").write_text("[1, 2]")
    return grow(c, src)


@case("grow: config value of the wrong type", CorruptCheckpoint, "no valid 'hidden_size'")
def _(c):
    src = c.llama()
    c.edit_json(src / "config.json", hidden_size="wide")
    return grow(c, src)


@case(
    "grow: corrupt tokenizer.json",
    CorruptCheckpoint,
    "tokenizer.json is not valid JSON",
    "restore it from the original model or delete it",
)
def _(c):
    src = c.llama()
    (src / "tokenizer.json").write_text('{"model": ')
    return grow(c, src)


@case("grow: tokenizer.json not a tokenizer", CorruptCheckpoint, "is not a valid tokenizer")
def _(c):
    src = c.llama()
    (src / "tokenizer.json").write_text('{"version": "1.0"}')
    return grow(c, src)


@case("grow: corrupt generation_config.json", CorruptCheckpoint, "generation_config.json is not")
def _(c):
    src = c.llama()
    (src / "generation_config.json").write_text("{")
    return grow(c, src)


@case("grow: index names a file outside", CorruptCheckpoint, "names a file outside the folder")
def _(c):
    src = c.llama()
    index = {"weight_map": {"model.norm.weight": "../../etc/passwd"}}
    (src / "model.safetensors.index.json").write_text(json.dumps(index))
    return grow(c, src)


@case("grow: index lists a missing shard", CorruptCheckpoint, "listed in the index is missing")
def _(c):
    src = c.llama()
    index = {"weight_map": {"model.norm.weight": "model-00002-of-00002.safetensors"}}
    (src / "model.safetensors.index.json").write_text(json.dumps(index))
    return grow(c, src)


@case("grow: OUT is a file", OutputNotWritable, "is a file, not a folder: choose another OUT")
def _(c):
    return [
        "grow",
        str(c.llama()),
        c.write("out", "x"),
        "--op",
        "stack",
        "--factor",
        "2",
        "--force",
    ]


@case("grow: SRC is a file", NotACausalLM, "is not a folder: give a checkpoint folder")
def _(c):
    return ["grow", c.write("model.bin", b"\x00"), str(c.path("out")), "--op", "stack"]


@case("grow: --num-heads not a number", USAGE, "--num-heads: expected an integer, got 'many'")
def _(c):
    return grow(c, c.llama(), "--num-heads", "many")


@case("grow: OUT is the source, with --force", OutputNotWritable, "is the source", "outside")
def _(c):
    src = c.llama()
    return ["grow", str(src), str(src), "--op", "stack", "--factor", "2", "--force"]


@case("grow: OUT contains the source, with --force", OutputNotWritable, "contains the source")
def _(c):
    src = c.llama("parent/src")
    return ["grow", str(src), str(c.path("parent")), "--op", "stack", "--factor", "2", "--force"]


@case("grow: --force onto a folder of other files", OutputExists, "did not write", "--force")
def _(c):
    c.write("out/notes.txt", "mine")
    return grow(c, c.llama(), "--force")


@case("grow: OUT under a regular file", OutputNotWritable, "afile' is a file, not a folder")
def _(c):
    c.write("afile", "x")
    return ["grow", str(c.llama()), str(c.path("afile/out")), "--op", "stack", "--factor", "2"]


@case("grow: OUT being written by another growlm", OutputBusy, "another growlm process")
def _(c):
    lock = c.path(".out.growlm-lock")
    lock.write_text("4242")
    _HELD.append(open(lock))  # noqa: SIM115 - held until the case ends
    fcntl.flock(_HELD[-1].fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    return grow(c, c.llama())


@case("grow: width not a multiple of the heads", InvalidGrowth, "not a multiple", "(4)")
def _(c):
    return [
        "grow", str(c.llama()), str(c.path("out")), "--op", "direct-width",
        "--hidden-size", "42", "--intermediate-size", "96",
    ]  # fmt: skip


@case("grow: config.json disagrees with the weights", CorruptCheckpoint, "disagrees with the")
def _(c):
    src = c.llama()
    c.edit_json(src / "config.json", intermediate_size=64)
    return grow(c, src)


@case("grow: absurd depth", InvalidGrowth, "would have 3000000000 layers", "at most 4096")
def _(c):
    return ["grow", str(c.llama()), "--op", "stack", "--factor", "1000000000", "--dry-run"]


@case("grow: absurd width", InvalidGrowth, "--hidden-size 100000000000 is beyond")
def _(c):
    return ["grow", str(c.llama()), "--op", "zero-width", "--hidden-size", "100000000000",
            "--dry-run"]  # fmt: skip


@case("grow: output larger than the disk", DiskFull, "estimated from the source")
def _(c):
    return ["grow", str(c.llama()), str(c.path("out")), "--op", "zero-width",
            "--hidden-size", "1000000"]  # fmt: skip


@case("grow: tokenizer with more ids than the model", InvalidData, "ids but", "128 embedding rows")
def _(c):
    src = c.llama()
    shutil.copyfile(c.model_src / "tokenizer.json", src / "tokenizer.json")
    return grow(c, src)


_HELD: list = []  # lock files a case holds (closed when the module's tests end)


# clone-width (HyperCloning)
def clone(c: Ctx, *args: str) -> list[str]:
    return ["grow", str(c.llama()), str(c.path("out")), "--op", "clone-width", *args]


@case("grow: clone-width factor 1", InvalidGrowth, "clone-width needs --factor N, an integer >= 2")
def _(c):
    return clone(c, "--factor", "1")


@case(
    "grow: clone-width without factor",
    InvalidGrowth,
    "clone-width needs --factor N (an integer >= 2: every width times N)",
)
def _(c):
    return clone(c)


@case("grow: clone-width + a depth factor", InvalidGrowth, "would set both direct-depth")
def _(c):
    return ["grow", str(c.llama()), str(c.path("out")), "--op", "stack+clone-width",
            "--factor", "2"]  # fmt: skip


@case("grow: clone-width snr not a number", InvalidGrowth, "--snr-db must be a number in dB")
def _(c):
    return clone(c, "--factor", "2", "--snr-db", "nan")


# param-tokens (TokenFormer)
@case("grow: param-tokens on a family without Pattention", InvalidGrowth,
      "param-tokens grows Pattention layers and llama has none")  # fmt: skip
def _(c):
    return ["grow", str(c.llama()), str(c.path("out")), "--op", "param-tokens",
            "--new-tokens", "4"]  # fmt: skip


@case("grow: param-tokens without a count", InvalidGrowth, "param-tokens needs --new-tokens N")
def _(c):
    from tiny_models import save_model

    src = save_model("tokenformer", c.path("tf"))
    return ["grow", str(src), str(c.path("out")), "--op", "param-tokens"]


# mixture-growth (MixtureGrowth): a checkpoint folder holds no templates
@case("grow: mixture-growth on a checkpoint folder", InvalidGrowth,
      "mixture-growth grows a template model", "grow: {op: mixture-growth, factor: 2}")  # fmt: skip
def _(c):
    return ["grow", str(c.llama()), str(c.path("out")), "--op", "mixture-growth", "--factor", "2"]


@case(
    "grow: hub id not in the cache, offline",
    NotACausalLM,
    "growlm-test/absent is not a local folder and not in the hub cache",
    "HF_HUB_OFFLINE=1",
)
def _(c):
    return grow(c, Path("growlm-test/absent"))


@case("grow: .gguf file missing", NotACausalLM, "does not exist: give a .gguf file")
def _(c):
    return grow(c, c.path("model.gguf"))


@case(
    "grow: .gguf file that is not GGUF",
    CorruptCheckpoint,
    "transformers cannot read",
    "it reads GGUF files of tensor types",
)
def _(c):
    return grow(c, Path(c.write("model.gguf", b"not a gguf file")))


@case(
    "grow: Trainer checkpoint with a custom optimizer",
    InvalidGrowth,
    "default AdamW groups (decay / no decay)",
    "delete optimizer.pt to grow the weights alone",
)
def _(c):
    import torch

    src = c.llama("checkpoint-2")
    (src / "trainer_state.json").write_text("{}")
    state = {"state": {}, "param_groups": [{"params": [0, 1], "lr": 1e-3}]}
    torch.save(state, src / "optimizer.pt")
    return grow(c, src)


# ---- train --------------------------------------------------------------------------------
@case("train: recipe missing", InvalidRecipe, "does not exist")
def _(c):
    return ["train", str(c.path("nope.yaml")), "--out", str(c.path("run"))]


@case("train: recipe is a folder", InvalidRecipe, "is a folder, not a YAML file")
def _(c):
    c.path("recipes").mkdir()
    return ["train", str(c.path("recipes")), "--out", str(c.path("run"))]


@case("train: negative learning rate", InvalidRecipe, "error: optim.lr must be > 0, got -1.0")
def _(c):
    return train(c, "optim.lr=-1")


@case("train: recipe not YAML", InvalidRecipe, "is not valid YAML: ", "at line 2, column 5")
def _(c):
    return ["train", c.write("bad.yaml", "a: [1,\n b: }"), "--out", str(c.path("run"))]


@case("train: recipe empty", InvalidRecipe, "recipe: expected a mapping at the top level")
def _(c):
    return ["train", c.write("empty.yaml", ""), "--out", str(c.path("run"))]


@case("train: unknown key", InvalidRecipe, "optim.lrr: unknown key (allowed: betas, eps,")
def _(c):
    return train(c, "optim.lrr=1e-3")


@case("train: value of the wrong type", InvalidRecipe, "optim.lr: expected a number, got 'fast'")
def _(c):
    return train(c, "optim.lr=fast")


@case("train: infinite learning rate", InvalidRecipe, "optim.lr: expected a number, got inf")
def _(c):
    return train(c, "optim.lr=.inf")


@case("train: token budget overflows", InvalidRecipe, "stages.0.tokens: expected an integer")
def _(c):
    return train(c, "stages.base.tokens=1e400")


@case("train: --set without =", InvalidRecipe, "--set 'optim.lr': expected key=value")
def _(c):
    return train(c, "optim.lr")


@case("train: --set unknown stage", InvalidRecipe, "no entry named 'middle' at stages.middle")
def _(c):
    return train(c, "stages.middle.tokens=5")


@case("train: --set into a scalar", InvalidRecipe, "--set 'seed.x=1': seed is not a section")
def _(c):
    return train(c, "seed.x=1")


@case("train: stage name climbs out", InvalidRecipe, "stages.0.name: '../x' is not a valid folder")
def _(c):
    return train(c, "stages.base.name=../x")


@case("train: stage name with a slash", InvalidRecipe, "stages.0.name: 'a/b' is not a valid")
def _(c):
    return train(c, "stages.base.name=a/b")


@case("train: stage name hidden", InvalidRecipe, "stages.1.name: '.cache' is not a valid folder")
def _(c):
    return train(c, "stages.grown.name=.cache")


@case("train: stage name reserved", InvalidRecipe, "stages.0.name: 'final' is reserved")
def _(c):
    return train(c, "stages.base.name=final")


@case("train: duplicate stage names", InvalidRecipe, "duplicate stage name 'base'")
def _(c):
    return train(c, "stages.grown.name=base")


@case("train: no stages", InvalidRecipe, "stages: at least one stage is required")
def _(c):
    return train(c, "stages=[]")


@case("train: vocab_size in model.config", InvalidRecipe, "set by the tokenizer; remove it")
def _(c):
    return train(c, "model.config.vocab_size=100")


@case("train: misspelt config key", InvalidRecipe, "model.config.hiden_size: not a llama config")
def _(c):
    return train(c, "model.config.hiden_size=64")


@case("train: inconsistent config", InvalidRecipe, "not a multiple of the number of attention")
def _(c):
    return train(c, "model.config.num_attention_heads=3")


@case("train: unknown model type", InvalidRecipe, "unknown Hugging Face model type 'nosuch'")
def _(c):
    return train(c, "model.type=nosuch")


@case("train: unknown attention", InvalidRecipe, "cannot build the llama model", "nope")
def _(c):
    return train(c, "model.attn_implementation=nope")


@case("train: unknown operator", InvalidRecipe, "stages.1.grow: unknown operator 'stretch'")
def _(c):
    return train(c, "stages.grown.grow.op=stretch")


@case("train: growth factor 1", InvalidRecipe, "stages.1.grow: --factor must be an integer >= 2")
def _(c):
    return train(c, "stages.grown.grow.factor=1")


@case("train: carry without growth", InvalidRecipe, "'carry' needs a grow step")
def _(c):
    return train(c, "stages.base.optimizer_state=carry")


@case("train: sequence too long", InvalidRecipe, "data.seq_len 1000 exceeds model max_position")
def _(c):
    return train(c, "data.seq_len=1000")


@case("train: precision unknown", InvalidRecipe, "run.precision: 'fp16' is not one of")
def _(c):
    return train(c, "run.precision=fp16")


@case("train: betas of the wrong length", InvalidRecipe, "optim.betas: expected 2 values")
def _(c):
    return train(c, "optim.betas=[0.9]")


@case("train: zero micro batch", InvalidRecipe, "error: optim.micro_batch_size must be >= 1")
def _(c):
    return train(c, "optim.micro_batch_size=0")


@case("train: negative threads", InvalidRecipe, "run.threads must be >= 1")
def _(c):
    return train(c, "run.threads=-1")


@case("train: vocabulary too small", InvalidRecipe, "data.vocab_size must be >= 257")
def _(c):
    return train(c, "data.vocab_size=100")


@case("train: data source missing", InvalidData, "data source '/nonexistent/corpus' does not")
def _(c):
    return train(c, "data.sources=[/nonexistent/corpus]")


@case("train: prepared folder is not one", InvalidData, "is not a prepared data folder")
def _(c):
    c.path("notprepared").mkdir()
    return train(c, f"data.prepared={c.path('notprepared')}")


@case("train: corrupt tokenizer", InvalidData, "tokenizer.json' cannot be read", "restore it")
def _(c):
    c.write("tok/tokenizer.json", "{not json")
    return train(c, f"data.tokenizer={c.path('tok')}")


@case("train: model.init config corrupt", InvalidRecipe, "model.init: ", "is not valid JSON")
def _(c):
    src = c.llama("init")
    (src / "config.json").write_text("{")
    return train(c, f"model.init={src}")


@case("train: model.init weights truncated", InvalidRecipe, "is truncated or not a safetensors")
def _(c):
    src = c.model("init")
    data = (src / "model.safetensors").read_bytes()
    (src / "model.safetensors").write_bytes(data[:1000])
    return train(c, f"model.init={src}", f"data.tokenizer={src}")


@case("train: --out is a file", OutputNotWritable, "--out", "is a file, not a folder")
def _(c):
    c.write("run", "notes")
    return train(c)


@case("train: --out holds a run", OutputExists, "already holds a run; pass --resume")
def _(c):
    c.write("run/metrics.jsonl", json.dumps({"step": 1}) + "\n")
    return train(c)


@case(
    "train: resume a corrupt checkpoint",
    CorruptCheckpoint,
    "step-00000002' cannot be read (checkpoint: ",
    "config.json' is not valid JSON); move it out of checkpoints/ to resume from the one before",
)
def _(c):
    for name in ("config.json", "model.safetensors", "state.json"):
        c.write(f"run/checkpoints/step-00000002/{name}", "garbage")
    return train(c, extra=("--resume",))


@case("train: --out missing", USAGE, "the following arguments are required: --out")
def _(c):
    return ["train", str(TINY)]


@case("train: --out holds other files", OutputExists, "not a growlm run", "new or empty")
def _(c):
    c.write("run/notes.txt", "mine")
    return train(c)


@case("train: data tokenizer larger than model.init", InvalidData, "embedding rows", "--tokenizer")
def _(c):
    return train(c, f"model.init={c.llama()}")


# ---- data prepare -------------------------------------------------------------------------
@case("prepare: source missing", InvalidData, "data source '/nonexistent/text' does not exist")
def _(c):
    return prepare(c, "/nonexistent/text")


@case("prepare: unsupported file type", InvalidData, "unsupported file type '.csv' (use .txt")
def _(c):
    return prepare(c, c.write("table.csv", "a,b\n1,2\n"))


@case("prepare: folder without text", InvalidData, "holds no .txt, .md, .text, .jsonl")
def _(c):
    c.path("empty").mkdir()
    return prepare(c, str(c.path("empty")))


@case("prepare: JSONL line not JSON", InvalidData, "rows.jsonl:2: not valid JSON")
def _(c):
    return prepare(c, c.write("rows.jsonl", '{"text": "a"}\n{bad\n'))


@case("prepare: JSONL row without field", InvalidData, "row has no field 'text'; set data.text")
def _(c):
    return prepare(c, c.write("rows.jsonl", '{"body": "a"}\n'))


@case("prepare: JSONL not UTF-8", InvalidData, "rows.jsonl:1: not UTF-8 text; convert")
def _(c):
    return prepare(c, c.write("rows.jsonl", b'\xff\xfe{"text": "x"}\n'))


@case("prepare: parquet corrupt", InvalidData, "table.parquet: not a readable parquet file")
def _(c):
    return prepare(c, c.write("table.parquet", "PAR1 this is not parquet"))


@case("prepare: validation share too big", InvalidData, "val_fraction must be in [0, 0.5)")
def _(c):
    return prepare(c, c.write("a.txt", TEXT), args=("--val-fraction", "0.9"))


@case("prepare: vocabulary too small", InvalidData, "vocab_size must be in [257, 1048576], got 1")
def _(c):
    return prepare(c, c.write("a.txt", TEXT), args=("--vocab-size", "100"))


@case("prepare: vocabulary absurd", InvalidData, "must be in [257, 1048576], got 100000000000")
def _(c):
    return prepare(c, c.write("a.txt", TEXT), args=("--vocab-size", "100000000000"))


@case("prepare: zero block tokens", InvalidData, "block_tokens and shard_tokens must be positive")
def _(c):
    return prepare(c, c.write("a.txt", TEXT), args=("--block-tokens", "0"))


@case("prepare: hub dataset offline", InvalidData, "'hf:org/corpus' streams", "HF_HUB_OFFLINE")
def _(c):
    return prepare(c, "hf:org/corpus")  # the tests run with HF_HUB_OFFLINE=1


@case("prepare: OUT exists", OutputExists, "already exists", "pass --force to replace it")
def _(c):
    c.write("prepared/keep.txt", "mine")
    return prepare(c, c.write("a.txt", TEXT))


@case("prepare: OUT is a file", OutputNotWritable, "is a file, not a folder: choose another --out")
def _(c):
    c.write("prepared", "mine")
    return prepare(c, c.write("a.txt", TEXT), args=("--force",))


@case("prepare: no text at all", InvalidData, "the data sources hold no text")
def _(c):
    return prepare(c, c.write("blank.txt", "  \n\n"))


@case("prepare: corpus too small to validate", InvalidData, "corpus too small for a validation")
def _(c):
    return prepare(c, c.write("a.txt", "a few words"), args=("--vocab-size", "300"))


@case("prepare: tokenizer folder without tokenizer.json", InvalidData, "has no tokenizer.json")
def _(c):
    c.path("tok").mkdir()
    return prepare(c, c.write("a.txt", TEXT), args=("--tokenizer", str(c.path("tok"))))


@case("prepare: tokenizer.json corrupt", InvalidData, "tokenizer.json' cannot be read")
def _(c):
    c.write("tok/tokenizer.json", "[")
    return prepare(c, c.write("a.txt", TEXT), args=("--tokenizer", str(c.path("tok"))))


@case("prepare: tokenizer_config.json corrupt", InvalidData, "tokenizer_config.json: not valid")
def _(c):
    c.path("tok").mkdir()
    shutil.copy(c.model_src / "tokenizer.json", c.path("tok/tokenizer.json"))
    c.write("tok/tokenizer_config.json", "{eos")
    return prepare(c, c.write("a.txt", TEXT), args=("--tokenizer", str(c.path("tok"))))


@case("prepare: held-out sources without text", InvalidData, "validation sources (--val-source)")
def _(c):
    return prepare(c, c.write("a.txt", TEXT), args=("--val-source", c.write("v/blank.txt", " \n")))


@case("prepare: fetch-corpus unknown source", InvalidData, "unknown corpus source 'wiki'; choose")
def _(c):
    return ["data", "fetch-corpus", "--out", str(c.path("mix")), "--sources", "brown,wiki"]


@case("prepare: fetch-corpus OUT exists", OutputExists, "already exists", "pass --force")
def _(c):
    c.write("mix/keep.txt", "mine")
    return ["data", "fetch-corpus", "--out", str(c.path("mix")), "--sources", "brown"]


@case("prepare: hub source without a name", InvalidData, "expected hf:<dataset>[:<config>]")
def _(c):
    return prepare(c, "hf:")


@case("prepare: --vocab-size not a number", USAGE, "--vocab-size: invalid int value: 'big'")
def _(c):
    return prepare(c, "default", args=("--vocab-size", "big"))


@case("prepare: --force onto a folder of other files", OutputExists, "did not write")
def _(c):
    c.write("prepared/notes.txt", "mine")
    return prepare(c, c.write("a.txt", TEXT), args=("--force",))


@case("prepare: --out is the source folder", OutputNotWritable, "is the source")
def _(c):
    c.write("texts/a.txt", TEXT)
    return ["data", "prepare", str(c.path("texts")), "--out", str(c.path("texts")), "--force"]


# ---- plan ---------------------------------------------------------------------------------
@case("plan: --model hub id not cached, offline", NotACausalLM, "not in the hub cache")
def _(c):
    return ["plan", "--model", "growlm-test/absent", "--tokens", "1e9"]


@case("plan: no target", AnalysisError, "give the target size: --params N or --model CONFIG")
def _(c):
    return ["plan", "--tokens", "1e9"]


@case("plan: --params not a number", USAGE, "expected a number like 7e9 or 7B, got 'lots'")
def _(c):
    return ["plan", "--params", "lots", "--tokens", "1e9"]


@case("plan: negative size", AnalysisError, "--params must be a positive number")
def _(c):
    return ["plan", "--params", "-5", "--tokens", "1e9"]


@case("plan: two budgets", AnalysisError, "give exactly one budget: --tokens D or --compute C")
def _(c):
    return ["plan", "--params", "1e9", "--tokens", "1e9", "--compute", "1e20"]


@case("plan: missing --scaling file", AnalysisError, "no such file (use chinchilla, 20tpp")
def _(c):
    return ["plan", "--params", "1e9", "--tokens", "1e9", "--scaling", str(c.path("nope.json"))]


@case("plan: --scaling without a fit", AnalysisError, "needs numeric E, A, B, alpha, beta or")
def _(c):
    return ["plan", "--params", "1e9", "--tokens", "1e9", "--scaling", c.write("s.json", "{}")]


@case("plan: compute below one token", AnalysisError, "--compute must exceed 6 N")
def _(c):
    return ["plan", "--params", "1e9", "--compute", "10"]


@case("plan: growth factor 1", AnalysisError, "growth factor must be >= 2, got 1")
def _(c):
    return ["plan", "--params", "1e9", "--tokens", "1e11", "--growth-factor", "1"]


@case("plan: guideline missing", InvalidGuideline, "guideline file", "does not exist")
def _(c):
    return ["plan", "--params", "1e9", "--tokens", "1e11", "--guideline", str(c.path("g.json"))]


@case("plan: guideline not JSON", InvalidGuideline, "is not valid JSON")
def _(c):
    return ["plan", "--params", "1e9", "--tokens", "1e11", "--guideline", c.write("g.json", "{")]


@case("plan: guideline incomplete", InvalidGuideline, "missing numeric key(s) beta, gamma")
def _(c):
    g = c.write("g.json", '{"alpha": 0.88}')
    return ["plan", "--params", "1e9", "--tokens", "1e11", "--guideline", g]


@case("plan: --model missing", AnalysisError, "no such config.json, folder or recipe")
def _(c):
    return ["plan", "--model", str(c.path("nope")), "--tokens", "1e9"]


@case("plan: --model without model_type", AnalysisError, "config.json has no model_type")
def _(c):
    return ["plan", "--model", c.write("m/config.json", '{"hidden_size": 8}'), "--tokens", "1e9"]


@case("plan: --model recipe not YAML", AnalysisError, "is not valid YAML: ", "line 2, column 5")
def _(c):
    return ["plan", "--model", c.write("m.yaml", "a: [1,\n b: }"), "--tokens", "1e9"]


@case("plan: --model recipe a list", AnalysisError, "is not a valid recipe: recipe: expected")
def _(c):
    return ["plan", "--model", c.write("m.yaml", "[1, 2]"), "--tokens", "1e9"]


@case("plan: --model recipe factor not a number", AnalysisError, "grow factor must be an integ")
def _(c):
    text = TINY.read_text().replace("factor: 2", "factor: two")
    return ["plan", "--model", c.write("recipes/m.yaml", text), "--tokens", "1e9"]


@case("plan: --write-recipe without --model", AnalysisError, "--write-recipe needs --model")
def _(c):
    return ["plan", "--params", "1e9", "--tokens", "1e11", "--write-recipe", str(c.path("r.y"))]


# ---- compare ------------------------------------------------------------------------------
@case("compare: one run", AnalysisError, "compare needs a reference run and at least one other")
def _(c):
    return ["compare", c.run_dir("a", RUN_OK), "--out", str(c.path("cmp"))]


@case("compare: run missing", RunNotFound, "does not exist (expected a `growlm train --out`")
def _(c):
    return ["compare", str(c.path("a")), str(c.path("b")), "--out", str(c.path("cmp"))]


@case("compare: run without metrics", RunNotFound, "has no metrics.jsonl")
def _(c):
    c.path("a").mkdir()
    return ["compare", str(c.path("a")), c.run_dir("b", RUN_OK), "--out", str(c.path("cmp"))]


@case("compare: run without validation", NoValidationLoss, "logged no val_loss (set run.eval")
def _(c):
    rows = [{"step": 1, "loss": 3.0, "flops": 1, "tokens": 1}]
    return ["compare", c.run_dir("a", rows), c.run_dir("b", RUN_OK), "--out", str(c.path("cmp"))]


@case("compare: corrupt line", RunNotFound, "metrics.jsonl: line 1 is not JSON")
def _(c):
    a = c.run_dir("a", ["{torn", *RUN_OK])
    return ["compare", a, c.run_dir("b", RUN_OK), "--out", str(c.path("cmp"))]


@case("compare: a row that is not an object", RunNotFound, "line 2 is not a JSON object")
def _(c):
    a = c.run_dir("a", [RUN_OK[0], "[1, 2]", RUN_OK[1]])
    return ["compare", a, c.run_dir("b", RUN_OK), "--out", str(c.path("cmp"))]


@case("compare: loss not a number", RunNotFound, "line 1: 'val_loss' is missing or not a number")
def _(c):
    a = c.run_dir("a", [{**RUN_OK[0], "val_loss": "low"}, RUN_OK[1]])
    return ["compare", a, c.run_dir("b", RUN_OK), "--out", str(c.path("cmp"))]


@case("compare: FLOPs missing", RunNotFound, "line 1: 'flops' is missing or not a number")
def _(c):
    a = c.run_dir("a", [{"step": 1, "val_loss": 3.0, "tokens": 1}])
    return ["compare", a, c.run_dir("b", RUN_OK), "--out", str(c.path("cmp"))]


@case("compare: zero levels", AnalysisError, "--levels must be >= 1, got 0")
def _(c):
    a, b = c.run_dir("a", RUN_OK), c.run_dir("b", RUN_OK)
    return ["compare", a, b, "--out", str(c.path("cmp")), "--levels", "0"]


@case("compare: --out is a file", AnalysisError, "is a file, not a folder: choose another --out")
def _(c):
    a, b = c.run_dir("a", RUN_OK), c.run_dir("b", RUN_OK)
    return ["compare", a, b, "--out", c.write("cmp", "x"), "--no-plots"]


# ---- eval ---------------------------------------------------------------------------------
@case("eval: hub id not cached, offline", NotACausalLM, "model growlm-test/absent is not a local")
def _(c):
    return evaluate(c, "growlm-test/absent", "--data", c.write("t.txt", TEXT))


@case("eval: nothing to do", EvalError, "give --data (perplexity) and/or --tasks (lm-eval)")
def _(c):
    return evaluate(c, c.model_src)


@case("eval: stride zero", EvalError, "--stride must be at least 1 token, got 0")
def _(c):
    return evaluate(c, c.model_src, "--data", c.write("t.txt", TEXT), "--stride", "0")


@case("eval: max length zero", EvalError, "--max-length must be at least 2 tokens, got 0")
def _(c):
    return evaluate(c, c.model_src, "--data", c.write("t.txt", TEXT), "--max-length", "0")


@case("eval: model folder missing", EvalError, "model folder", "does not exist")
def _(c):
    return evaluate(c, c.path("nope"), "--data", c.write("t.txt", TEXT))


@case("eval: no config.json", EvalError, "is not a model folder (no config.json)")
def _(c):
    c.path("m").mkdir()
    return evaluate(c, c.path("m"), "--data", c.write("t.txt", TEXT))


@case("eval: config.json not JSON", EvalError, "config.json' is not valid JSON", "restore it")
def _(c):
    m = c.model()
    (m / "config.json").write_text("{bad")
    return evaluate(c, m, "--data", c.write("t.txt", TEXT))


@case("eval: config.json a list", EvalError, "config.json' does not hold a JSON object")
def _(c):
    m = c.model()
    (m / "config.json").write_text("[]")
    return evaluate(c, m, "--data", c.write("t.txt", TEXT))


@case("eval: unknown model type", EvalError, "model_type 'nosuch' is not one transformers knows")
def _(c):
    m = c.model()
    c.edit_json(m / "config.json", model_type="nosuch")
    return evaluate(c, m, "--data", c.write("t.txt", TEXT))


@case("eval: tokenizer.json not JSON", EvalError, "tokenizer.json' is not valid JSON")
def _(c):
    m = c.model()
    (m / "tokenizer.json").write_text('{"added_tokens": [')
    return evaluate(c, m, "--data", c.write("t.txt", TEXT))


@case("eval: tokenizer.json not a tokenizer", EvalError, "tokenizer.json' is not a valid tok")
def _(c):
    m = c.model()
    (m / "tokenizer.json").write_text('{"version": "1.0"}')
    return evaluate(c, m, "--data", c.write("t.txt", TEXT))


@case("eval: tokenizer_config.json corrupt", EvalError, "tokenizer_config.json' is not valid")
def _(c):
    m = c.model()
    (m / "tokenizer_config.json").write_text("{")
    return evaluate(c, m, "--data", c.write("t.txt", TEXT))


@case("eval: no tokenizer", EvalError, "has no tokenizer (tokenizer.json): copy the tokenizer")
def _(c):
    return evaluate(c, c.llama(), "--data", c.write("t.txt", TEXT))


@case("eval: no weights", EvalError, "cannot be loaded as a causal LM", "are complete")
def _(c):
    m = c.model()
    (m / "model.safetensors").unlink()
    return evaluate(c, m, "--data", c.write("t.txt", TEXT))


@case("eval: truncated weights", EvalError, "cannot be loaded as a causal LM: Error while deser")
def _(c):
    m = c.model()
    data = (m / "model.safetensors").read_bytes()
    (m / "model.safetensors").write_bytes(data[: len(data) // 2])
    return evaluate(c, m, "--data", c.write("t.txt", TEXT))


@case("eval: weights and config disagree", EvalError, "weight shapes differ from the shapes")
def _(c):
    m = c.model()
    c.edit_json(m / "config.json", intermediate_size=64)
    return evaluate(c, m, "--data", c.write("t.txt", TEXT))


@case("eval: shipped code without the flag", EvalError, "pass --trust-remote-code to run it")
def _(c):
    m = c.model()
    c.edit_json(m / "config.json", auto_map={"AutoModelForCausalLM": "evil.Model"})
    (m / "evil.py").write_text(f"open({str(c.path('pwned'))!r}, 'w').write('x')\n")
    return evaluate(c, m, "--data", c.write("t.txt", TEXT))


@case("eval: tokenizer larger than the model", EvalError, "ids but the model only 128 embeddings")
def _(c):
    m = c.model()
    shutil.copy(c.llama_src / "config.json", m / "config.json")  # a 128-id model
    shutil.copy(c.llama_src / "model.safetensors", m / "model.safetensors")
    return evaluate(c, m, "--data", c.write("t.txt", TEXT))


@case("eval: --data missing", EvalError, "--data", "does not exist")
def _(c):
    return evaluate(c, c.model_src, "--data", str(c.path("nope.txt")))


@case("eval: --data folder without text", EvalError, "holds no text files (.txt, .md, .text)")
def _(c):
    c.path("d").mkdir()
    return evaluate(c, c.model_src, "--data", str(c.path("d")))


@case("eval: stride beyond the window", EvalError, "--stride must be in [1, 127]")
def _(c):
    return evaluate(c, c.model_src, "--data", c.write("t.txt", TEXT), "--stride", "500")


@case("eval: window of one token", EvalError, "--max-length must be at least 2 tokens, got 1")
def _(c):
    return evaluate(c, c.model_src, "--data", c.write("t.txt", TEXT), "--max-length", "1")


# ---- the runner ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sources(tmp_path_factory, tiny_dir):
    """A tiny Llama without tokenizer, and one with a 300-id tokenizer of its own."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    from growlm.data.tokenizer import train_tokenizer

    root = tmp_path_factory.mktemp("sources")
    model = root / "model"
    tok = train_tokenizer([TEXT, "the quick brown fox " * 50], 300, model)
    config = LlamaConfig(
        vocab_size=tok.vocab_size,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        eos_token_id=tok.eos_id,
        bos_token_id=tok.eos_id,
    )
    AutoModelForCausalLM.from_config(config).save_pretrained(str(model))
    return tiny_dir("llama"), model


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(root)): (p.stat().st_size if p.is_file() else -1, p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
    }


COMMANDS = {"grow", "train", "prepare", "plan", "compare", "eval"}


def test_catalogue_spans_every_command():
    counts: dict[str, int] = {}
    for name, *_ in CASES:
        command = name.split(":")[0]
        counts[command] = counts.get(command, 0) + 1
    assert set(counts) == COMMANDS and min(counts.values()) >= 8, counts
    assert len(CASES) >= 80 and len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize(("name", "cls", "build", "needles"), CASES, ids=[c[0] for c in CASES])
def test_bad_input(name, cls, build, needles, sources, cache, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GROWLM_CACHE", str(cache))
    ctx = Ctx(tmp_path / "case", *sources)
    ctx.tmp.mkdir()
    argv = build(ctx)
    before = _snapshot(ctx.tmp)
    raised: list[GrowlmError] = []

    def record(exc: GrowlmError) -> int:
        raised.append(exc)
        return real(exc)

    real = cli._user_error
    monkeypatch.setattr(cli, "_user_error", record)
    if cls is USAGE:
        with pytest.raises(SystemExit) as exit_info:
            cli.main(argv)
        code = exit_info.value.code
    else:
        code = cli.main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, (code, err)
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    if cls is USAGE:
        assert err.startswith(f"error: growlm {argv[0]}") and raised == [], err
    else:
        assert len(raised) == 1 and type(raised[0]) is cls, (raised, err)
        assert err == f"error: {raised[0]}"
    for needle in needles:
        assert needle in err, (needle, err)
    assert _snapshot(ctx.tmp) == before, "the failed command created, changed or deleted files"
