"""Benchmark: G_stack (g=2) of a ~2 GB Llama checkpoint, growlm vs mergekit passthrough vs cp.

Three arms run one after the other (never in parallel), each as its own subprocess:

* growlm:   ``growlm grow SRC OUT --op stack --factor 2 --json`` (the report gives its own timer)
* mergekit: ``mergekit-yaml`` with ``merge_method: passthrough`` and two slices [0, L) of SRC,
            in its own venv (its pins conflict with ours), ``--out-shard-size`` set so its shards
            hold about as many bytes as growlm's default 2 GB
* cp:       ``cp -r`` of growlm's output folder (the cost of just moving the output's bytes)

For each arm: wall time of the command, wall time of the ``sync`` that follows it (growlm
fsyncs its shards, the others leave dirty pages: "wall + sync" compares durable writes), and
peak RSS from GNU time (the largest resident set of the arm's process and its reaped
children). Before each arm dirty pages are synced and the input checkpoint is
evicted from the page cache (only the checkpoint files; --drop-caches drops everything), so
every arm reads its input from disk. Three rounds; medians are reported.

Afterwards growlm's and mergekit's outputs are compared tensor by tensor (all of them, by name),
and results go to bench/results/grow_vs_mergekit.json.

    .venv/bin/python bench/grow_vs_mergekit.py            # everything (needs ~13 GB of disk)
    .venv/bin/python bench/grow_vs_mergekit.py --setup-mergekit   # create its venv first

The source checkpoint (random bfloat16 weights, written shard by shard) and all outputs live in
bench/work/ (git-ignored).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "bench" / "work"
RESULTS = ROOT / "bench" / "results" / "grow_vs_mergekit.json"
MERGEKIT_VERSION = "0.1.5"
TIME = "/usr/bin/time"  # GNU time, for peak RSS
TORCH_SPEC = "torch==2.13.0"  # the CPU build on local disk; a bare torch pulls a CUDA build

# Llama-shaped, ~0.95 B parameters: 1.9 GB in bfloat16.
CONFIG: dict[str, Any] = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 2048,
    "intermediate_size": 5632,
    "num_hidden_layers": 16,
    "num_attention_heads": 16,
    "num_key_value_heads": 16,
    "head_dim": 128,
    "vocab_size": 32000,
    "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-5,
    "hidden_act": "silu",
    "tie_word_embeddings": False,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "dtype": "bfloat16",
}
SRC_SHARD_BYTES = 500 * 10**6


# -- source checkpoint ---------------------------------------------------------------------------
def _llama_shapes(cfg: dict[str, Any]) -> list[tuple[str, tuple[int, ...]]]:
    h, i, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    hd = cfg["head_dim"]
    q, kv = cfg["num_attention_heads"] * hd, cfg["num_key_value_heads"] * hd
    out: list[tuple[str, tuple[int, ...]]] = [("model.embed_tokens.weight", (v, h))]
    for layer in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        out += [
            (p + "input_layernorm.weight", (h,)),
            (p + "self_attn.q_proj.weight", (q, h)),
            (p + "self_attn.k_proj.weight", (kv, h)),
            (p + "self_attn.v_proj.weight", (kv, h)),
            (p + "self_attn.o_proj.weight", (h, q)),
            (p + "post_attention_layernorm.weight", (h,)),
            (p + "mlp.gate_proj.weight", (i, h)),
            (p + "mlp.up_proj.weight", (i, h)),
            (p + "mlp.down_proj.weight", (h, i)),
        ]
    out += [("model.norm.weight", (h,)), ("lm_head.weight", (v, h))]
    return out


def make_source(path: Path, cfg: dict[str, Any]) -> dict[str, Any]:
    """Random bfloat16 Llama checkpoint in shards of <= SRC_SHARD_BYTES (reused if present)."""
    import torch
    from safetensors.torch import save_file

    stamp = path / ".bench-source.json"
    if stamp.is_file() and json.loads(stamp.read_text()).get("config") == cfg:
        return json.loads(stamp.read_text())
    shutil.rmtree(path, ignore_errors=True)
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    gen = torch.Generator().manual_seed(0)
    groups: list[list[tuple[str, tuple[int, ...]]]] = [[]]
    size = 0
    for name, shape in _llama_shapes(cfg):
        n = 2 * _prod(shape)
        if groups[-1] and size + n > SRC_SHARD_BYTES:
            groups.append([])
            size = 0
        groups[-1].append((name, shape))
        size += n
    weight_map, total, params = {}, 0, 0
    for k, group in enumerate(groups):
        fname = f"model-{k + 1:05d}-of-{len(groups):05d}.safetensors"
        tensors = {}
        for name, shape in group:
            if len(shape) == 1:
                t = 1.0 + 0.1 * torch.randn(shape, generator=gen)
            else:
                t = 0.02 * torch.randn(shape, generator=gen)
            tensors[name] = t.to(torch.bfloat16)
            weight_map[name] = fname
            total += 2 * _prod(shape)
            params += _prod(shape)
        save_file(tensors, str(tmp / fname), metadata={"format": "pt"})
        del tensors
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (tmp / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    (tmp / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    info = {"config": cfg, "params": params, "bytes": total, "shards": len(groups)}
    (tmp / ".bench-source.json").write_text(json.dumps(info, indent=2) + "\n")
    os.replace(tmp, path)
    return info


def _prod(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


# -- running arms --------------------------------------------------------------------------------
def _evict(folders: list[Path], drop_all: bool) -> str:
    """sync, then push the checkpoints' files out of the page cache.

    By default only the checkpoint files are evicted (posix_fadvise DONTNEED): every arm reads
    its input from disk while the tools' own code (torch, transformers) stays warm, as after any
    earlier run. ``drop_all`` drops the whole page cache instead (cold start of everything).
    """
    subprocess.run(["sync"], check=True)
    if drop_all:
        try:
            Path("/proc/sys/vm/drop_caches").write_text("3\n")
            return "dropped whole page cache"
        except OSError:
            pass
    for folder in folders:
        for f in folder.rglob("*"):
            if f.is_file():
                fd = os.open(f, os.O_RDONLY)
                try:
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                finally:
                    os.close(fd)
    return "evicted checkpoint files"


def run_arm(
    name: str, cmd: list[str], log: Path, env: dict[str, str], cold: list[Path], drop_all: bool
) -> dict:
    """Run one arm under GNU time: wall (measured here), then the time of a following sync.

    Peak RSS comes from GNU time (its wait4 of the command), not from our own wait4: a child
    forked from this process starts with this process's high-water RSS (Linux carries it across
    fork and exec), which would inflate small arms; time's own footprint is ~2 MB.
    """
    if not Path(TIME).exists():
        raise SystemExit(f"{TIME} is missing: apt-get install time")
    cache = _evict(cold, drop_all)
    stats = log.with_suffix(".time")
    print(f"[{name}] {' '.join(cmd)}", flush=True)
    with open(log, "wb") as out:
        t0 = time.perf_counter()
        proc = subprocess.run(
            [TIME, "-f", "%e %M %U %S", "-o", str(stats), *cmd],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
        wall = time.perf_counter() - t0
    t1 = time.perf_counter()
    subprocess.run(["sync"], check=True)
    sync = time.perf_counter() - t1
    _, max_kb, user, system = stats.read_text().split("\n")[-2].split()
    rss_mb = int(max_kb) / 1024
    res = {
        "command": cmd,
        "exit_code": proc.returncode,
        "wall_s": round(wall, 2),
        "sync_after_s": round(sync, 2),
        "wall_plus_sync_s": round(wall + sync, 2),
        "peak_rss_mb": round(rss_mb, 1),
        "user_cpu_s": float(user),
        "sys_cpu_s": float(system),
        "page_cache_before": cache,
        "log": str(log.relative_to(ROOT)),
    }
    print(
        f"[{name}] exit {proc.returncode}  wall {wall:.1f}s  (+sync {sync:.1f}s)  "
        f"peak RSS {rss_mb:.0f} MB",
        flush=True,
    )
    if proc.returncode != 0:
        print(log.read_text(errors="replace")[-3000:], file=sys.stderr)
    return res


def _summary(runs: list[dict]) -> dict[str, Any]:
    """Median wall times and the largest peak RSS over the rounds; every run kept."""
    ok = [r for r in runs if r["exit_code"] == 0]
    out: dict[str, Any] = {
        "command": runs[0]["command"],
        "exit_code": max(r["exit_code"] for r in runs),
        "rounds": len(runs),
    }
    if ok:
        keys = ["wall_s", "wall_plus_sync_s", "sync_after_s", "user_cpu_s", "sys_cpu_s"]
        keys += ["growlm_report_seconds"] if "growlm_report_seconds" in ok[0] else []
        for key in keys:
            out[key] = round(statistics.median(r[key] for r in ok), 2)
        out["peak_rss_mb"] = max(r["peak_rss_mb"] for r in ok)
    out["runs"] = [{k: v for k, v in r.items() if k != "command"} for r in runs]
    return out


def setup_mergekit(venv: Path) -> None:
    if not (venv / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, TORCH_SPEC], check=True)
    subprocess.run([*pip, f"mergekit=={MERGEKIT_VERSION}"], check=True)


def mergekit_config(src: Path, layers: int) -> str:
    lines = ["slices:"]
    for _ in range(2):
        lines += [
            "  - sources:",
            f"      - model: {src}",
            f"        layer_range: [0, {layers}]",
        ]
    lines += ["merge_method: passthrough", "dtype: bfloat16", ""]
    return "\n".join(lines)


# -- verification --------------------------------------------------------------------------------
def _tensor_files(folder: Path) -> dict[str, Path]:
    from safetensors import safe_open

    out: dict[str, Path] = {}
    for f in sorted(folder.glob("*.safetensors")):
        with safe_open(str(f), "pt") as h:
            for n in h.keys():  # noqa: SIM118
                out[n] = f
    return out


def compare_outputs(a: Path, b: Path, src: Path, layers: int) -> dict[str, Any]:
    """All tensors of a and b equal by name; a's second stack copy equals the source layers."""
    import torch
    from safetensors import safe_open

    ta, tb, ts = _tensor_files(a), _tensor_files(b), _tensor_files(src)
    only_a, only_b = sorted(set(ta) - set(tb)), sorted(set(tb) - set(ta))
    mismatched, compared, nbytes = [], 0, 0
    for name in sorted(set(ta) & set(tb)):
        with safe_open(str(ta[name]), "pt") as fa, safe_open(str(tb[name]), "pt") as fb:
            x, y = fa.get_tensor(name), fb.get_tensor(name)
        if x.dtype != y.dtype or x.shape != y.shape or not torch.equal(x, y):
            mismatched.append(name)
        compared += 1
        nbytes += x.numel() * x.element_size()
    # G_stack semantics, checked against the source for a sample of tensors
    bad_src = []
    for i in (0, layers - 1):
        for t in ("self_attn.q_proj.weight", "mlp.down_proj.weight", "input_layernorm.weight"):
            sname = f"model.layers.{i}.{t}"
            with safe_open(str(ts[sname]), "pt") as fs:
                want = fs.get_tensor(sname)
            for j in (i, i + layers):
                oname = f"model.layers.{j}.{t}"
                with safe_open(str(ta[oname]), "pt") as fo:
                    if not torch.equal(fo.get_tensor(oname), want):
                        bad_src.append(oname)
    cfg_a = json.loads((a / "config.json").read_text())
    cfg_b = json.loads((b / "config.json").read_text())
    return {
        "tensors_compared": compared,
        "bytes_compared": nbytes,
        "only_in_growlm": only_a,
        "only_in_mergekit": only_b,
        "mismatched": mismatched,
        "stack_copies_equal_source": not bad_src,
        "num_hidden_layers": [cfg_a.get("num_hidden_layers"), cfg_b.get("num_hidden_layers")],
        "identical": not (only_a or only_b or mismatched),
    }


def _dir_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def machine() -> dict[str, Any]:
    cpu = ""
    mem_kb = 0
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_kb = int(line.split()[1])
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "ram_gib": round(mem_kb / 2**20, 1),
        "cpu": cpu,
        "os": platform.platform(),
        "python": platform.python_version(),
    }


def _version(python: Path, module: str) -> str | None:
    r = subprocess.run(
        [str(python), "-c", f"import importlib.metadata as m; print(m.version({module!r}))"],
        capture_output=True,
        text=True,
    )
    return r.stdout.strip() or None


# -- main ----------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=WORK)
    ap.add_argument("--mergekit-venv", type=Path, default=WORK / "mergekit-venv")
    ap.add_argument("--setup-mergekit", action="store_true", help="create the mergekit venv")
    ap.add_argument("--skip-mergekit", action="store_true")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--keep", action="store_true", help="keep the grown outputs")
    ap.add_argument("--repeat", type=int, default=3, help="rounds of all arms (median kept)")
    ap.add_argument(
        "--drop-caches", action="store_true", help="drop the whole page cache before each arm"
    )
    args = ap.parse_args(argv)

    work: Path = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    venv: Path = args.mergekit_venv.resolve()
    if args.setup_mergekit:
        setup_mergekit(venv)

    src = work / "src-llama-2g"
    t0 = time.perf_counter()
    info = make_source(src, CONFIG)
    print(f"source: {src} ({info['bytes'] / 1e9:.2f} GB, {info['shards']} shards)", flush=True)
    gen_s = time.perf_counter() - t0
    layers = CONFIG["num_hidden_layers"]

    out_g, out_m, out_c = work / "out-growlm", work / "out-mergekit", work / "out-cp"
    for p in (out_g, out_m, out_c):
        shutil.rmtree(p, ignore_errors=True)
    growlm_bin = Path(sys.executable).parent / "growlm"
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    arms: dict[str, Any] = {}

    mk_bin = venv / "bin" / "mergekit-yaml"
    grow_cmd = [str(growlm_bin), "grow", str(src), str(out_g), "--op", "stack", "--factor", "2"]
    cmds: dict[str, list[str]] = {"growlm": [*grow_cmd, "--json"]}
    arms: dict[str, Any] = {}

    if args.skip_mergekit:
        arms["mergekit"] = {"skipped": "--skip-mergekit"}
    elif not mk_bin.exists():
        arms["mergekit"] = {"skipped": f"{mk_bin} missing: run with --setup-mergekit"}
    else:
        yml = work / "mergekit-stack.yml"
        yml.write_text(mergekit_config(src, layers))
        # growlm's default shards are 2 GiB; mergekit 0.1.5's 1B gave ~1 GB shards, so 2B ~2 GB.
        cmds["mergekit"] = [str(mk_bin), str(yml), str(out_m), "--out-shard-size", "2B",
                            "--quiet", "--no-copy-tokenizer"]  # fmt: skip
    cmds["cp"] = ["cp", "-r", str(out_g), str(out_c)]
    # Unmeasured warm-up: the tools' code is read from disk once, as in any repeated use.
    subprocess.run([str(growlm_bin), "--help"], capture_output=True, env=env)
    if "mergekit" in cmds:
        subprocess.run([str(mk_bin), "--help"], capture_output=True, env=env)

    runs: dict[str, list[dict]] = {name: [] for name in cmds}
    for _ in range(args.repeat):
        for p in (out_g, out_m, out_c):
            shutil.rmtree(p, ignore_errors=True)
        for name, cmd in cmds.items():
            cold = [out_g] if name == "cp" else [src]
            log = work / f"{name}.log"
            run = run_arm(name, cmd, log, env, cold, args.drop_caches)
            if name == "growlm" and run["exit_code"] == 0:
                # growlm's own timer: the grow itself, without interpreter and import start-up
                report = json.loads(log.read_text().strip().splitlines()[-1])
                run["growlm_report_seconds"] = report["seconds"]
            runs[name].append(run)
    for name, rs in runs.items():
        arms[name] = _summary(rs)

    equal: dict[str, Any] = {"skipped": "mergekit did not produce an output"}
    if out_m.is_dir() and arms["mergekit"].get("exit_code") == 0:
        print("comparing growlm and mergekit outputs ...", flush=True)
        equal = compare_outputs(out_g, out_m, src, layers)
        print(f"identical: {equal['identical']} ({equal['tensors_compared']} tensors)")

    g = arms["growlm"]
    m = arms["mergekit"]
    c = arms["cp"]
    if "wall_s" not in g or "wall_s" not in c:
        raise SystemExit(f"growlm or cp failed: see {work}/growlm.log and {work}/cp.log")
    ratios: dict[str, Any] = {
        "growlm_vs_cp_wall": round(g["wall_s"] / c["wall_s"], 2),
        "growlm_vs_cp_wall_plus_sync": round(g["wall_plus_sync_s"] / c["wall_plus_sync_s"], 2),
    }
    targets: dict[str, Any] = {
        "growlm_wall_le_1.5x_cp": g["wall_plus_sync_s"] <= 1.5 * c["wall_plus_sync_s"],
        "growlm_rss_lt_1GB": g["peak_rss_mb"] < 1024,
    }
    if "wall_s" in m and m.get("exit_code") == 0:
        ratios["growlm_vs_mergekit_wall"] = round(g["wall_s"] / m["wall_s"], 2)
        ratios["growlm_vs_mergekit_wall_plus_sync"] = round(
            g["wall_plus_sync_s"] / m["wall_plus_sync_s"], 2
        )
        ratios["growlm_vs_mergekit_rss"] = round(g["peak_rss_mb"] / m["peak_rss_mb"], 2)
        targets["growlm_wall_le_mergekit"] = g["wall_plus_sync_s"] <= m["wall_plus_sync_s"]
        targets["growlm_rss_le_mergekit"] = g["peak_rss_mb"] <= m["peak_rss_mb"]

    result = {
        "benchmark": "grow_vs_mergekit",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": machine(),
        "versions": {
            "growlm": _version(Path(sys.executable), "growlm"),
            "torch": _version(Path(sys.executable), "torch"),
            "transformers": _version(Path(sys.executable), "transformers"),
            "mergekit": _version(venv / "bin" / "python", "mergekit")
            if (venv / "bin" / "python").exists()
            else None,
            "mergekit_torch": _version(venv / "bin" / "python", "torch")
            if (venv / "bin" / "python").exists()
            else None,
        },
        "operation": f"stack g=2: {layers} -> {2 * layers} layers",
        "source": {
            "config": {
                k: CONFIG[k]
                for k in (
                    "hidden_size",
                    "intermediate_size",
                    "num_hidden_layers",
                    "vocab_size",
                    "dtype",
                )
            },
            "params": info["params"],
            "bytes": info["bytes"],
            "shards": info["shards"],
            "generate_s": round(gen_s, 1),
        },
        "output_bytes": {
            "growlm": _dir_bytes(out_g) if out_g.exists() else None,
            "mergekit": _dir_bytes(out_m) if out_m.exists() else None,
        },
        "output_shards": {
            "growlm": len(list(out_g.glob("*.safetensors"))) if out_g.exists() else None,
            "mergekit": len(list(out_m.glob("*.safetensors"))) if out_m.exists() else None,
        },
        "arms": arms,
        "outputs_equal": equal,
        "ratios": ratios,
        "targets_met": targets,
        "notes": [
            "arms run sequentially, never in parallel; rounds of growlm, mergekit, cp; medians",
            "before each arm: sync, then the arm's input checkpoint evicted from the page cache "
            "(posix_fadvise DONTNEED; --drop-caches drops everything); tools' code warmed once",
            "wall_plus_sync_s is the compared time: growlm fsyncs its shards, mergekit and cp "
            "leave dirty pages that the following sync writes",
            "peak_rss_mb from GNU time -f %M: max RSS of the arm's process and its reaped children",
        ],
        "bench_process_maxrss_mb": round(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1
        ),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({"arms": arms, "ratios": ratios, "targets_met": targets}, indent=2))
    print(f"wrote {args.out}")
    if not args.keep:
        for p in (out_g, out_m, out_c):
            shutil.rmtree(p, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
