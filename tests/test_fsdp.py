"""FSDP2 (train.parallel=fsdp) on CPU with 2 gloo processes: same weights as one process / DDP, sharded
checkpoints that resume exactly (also on another number of processes), one-line refusals."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

import test_train
from t2v_turbo.errors import CheckpointError, ConfigError
from t2v_turbo.train import train
from test_train import RUNNER, _env, _free_port, steps_of, tiny

STEPS, LR = 3, 1e-3
videos = test_train.videos  # the clips fixture


def _batch():
    """A fixed global batch of 2 (latents, t, text conditioning, w embedding, regression target)."""
    from t2v_turbo.models.tiny import tiny_modelscope

    teacher = tiny_modelscope(seed=0)
    g = torch.Generator().manual_seed(1)
    z = torch.randn(teacher.latent_shape(2), generator=g)
    t = torch.tensor([100, 700])
    cond = teacher.encode_prompt(["a red square", "a blue sky"])
    target = torch.randn(z.shape, generator=g)
    return teacher, z, t, cond, target


def _train_steps(student, rows, z, t, cond, target, world, steps=STEPS):
    """`steps` AdamW steps of mean-squared error on the given rows of the global batch (clip 1.0)."""
    params = [p for p in student.unet.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=LR)
    for _ in range(steps):
        w_emb = student.w_embedding(torch.tensor([7.5, 3.0])[rows])
        out = student.model_output(z[rows], t[rows], cond[rows], w_emb)
        loss = (out.float() - target[rows]).pow(2).mean()
        loss.backward()
        if world > 1 and not any(type(p).__name__ == "DTensor" for p in params):  # DDP by hand: average
            for p in params:
                torch.distributed.all_reduce(p.grad)
                p.grad /= world
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad()


def _student(teacher, lora: bool, checkpointing: bool = False):
    student = teacher.make_student(32, seed=0)
    student.unet.requires_grad_(True)
    for m in student.unet.modules():  # no dropout: the same samples in 1 or 2 processes draw no masks
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    if lora:
        torch.manual_seed(0)  # LoRA A's init draws from the global generator
        student.add_lora(rank=4)
    student.enable_gradient_checkpointing(checkpointing)
    student.unet.train()
    return student


VARIANTS = {  # name: (lora, fsdp kwargs or None for DDP by hand, gradient checkpointing)
    "ddp": (False, None, False),
    "fsdp": (False, {}, False),
    "fsdp_lora": (True, {}, False),
    "fsdp_ckpt_offload_zero2": (False, {"cpu_offload": True, "reshard_after_forward": False}, True),
    "fsdp_bf16": (False, {"mixed_precision": "bf16"}, False),
}


def _worker(rank: int, world: int, port: int, out: str, names: list[str], steps: int) -> None:
    from t2v_turbo.training.distributed import full_trainable, shard

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    teacher, z, t, cond, target = _batch()
    results = {}
    for name in names:
        lora, fsdp, ckpt = VARIANTS[name]
        t0 = time.perf_counter()
        student = _student(teacher, lora, ckpt)
        if fsdp is not None:
            shard(student.unet, torch.device("cpu"), **fsdp)
        with torch.autocast("cpu", torch.bfloat16, enabled=name.endswith("bf16")):
            _train_steps(student, [rank], z, t, cond, target, world, steps)
        results[name] = full_trainable(student.unet)
        print(f"rank {rank} {name}: {time.perf_counter() - t0:.1f}s", flush=True)
    if rank == 0:
        torch.save(results, out)
    torch.distributed.destroy_process_group()


def _spawn_and_compare(tmp_path, names: list[str], steps: int) -> None:
    """Run `names` on 2 gloo processes (one sample each) and compare with one process (both samples).

    Tolerances (AdamW, lr 1e-3, weights of size ~1): fp32 sharded / DDP runs within atol 5e-5 of the
    one-process run (measured 2.4e-5: batch-2 vs batch-1 kernels and the gradient average differ in
    the last bits, and Adam's normalisation amplifies that for near-zero gradients); LoRA measured
    2.4e-6; the bf16 FSDP run (bf16 weights in compute, fp32 reduction and master weights) within
    atol 1.5e-2 of the one-process bf16-autocast run (measured 6e-3).
    """
    torch.set_num_threads(1)
    out = tmp_path / "ranks.pt"
    torch.multiprocessing.spawn(_worker, args=(2, _free_port(), str(out), names, steps), nprocs=2, join=True)
    got = torch.load(out, weights_only=True)
    teacher, z, t, cond, target = _batch()
    ref = {}
    for lora, bf16 in {(VARIANTS[n][0], n.endswith("bf16")) for n in names}:
        student = _student(teacher, lora)
        with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            _train_steps(student, [0, 1], z, t, cond, target, 1, steps)
        ref[(lora, bf16)] = {n: p.detach() for n, p in student.unet.named_parameters() if p.requires_grad}
    for name in names:
        key = (VARIANTS[name][0], name.endswith("bf16"))
        init = {n: p.detach() for n, p in _student(teacher, key[0]).unet.named_parameters() if p.requires_grad}
        assert max(float((ref[key][n] - init[n]).abs().max()) for n in init) > 5e-4  # it trains
        assert got[name].keys() == ref[key].keys(), name
        atol = 1.5e-2 if key[1] else 5e-5
        for n in ref[key]:
            torch.testing.assert_close(got[name][n], ref[key][n], rtol=0, atol=atol, msg=f"{name} {n}")


@pytest.mark.slow  # 2 spawned processes: ~40 s here when the machine is idle, 120 s under load
def test_fsdp_on_two_processes_matches_one_process_with_the_same_global_batch(tmp_path):
    _spawn_and_compare(tmp_path, ["fsdp"], steps=2)


@pytest.mark.slow  # 5 variants on 2 processes: ~90 s on 2 shared cores
def test_ddp_lora_checkpointing_offload_zero2_and_bf16_variants_match_one_process(tmp_path):
    _spawn_and_compare(tmp_path, list(VARIANTS), steps=STEPS)


def test_one_process_fsdp_format_checkpoints_resume_exactly(tmp_path, videos):
    """train.parallel=fsdp on one process writes sharded (DCP) checkpoints; stop + resume == one run."""
    base = tiny(tmp_path, videos, train__max_steps=2, checkpoint__every=1, checkpoint__limit=5,
                train__parallel="fsdp", distill__target="ema")  # fmt: skip
    full = train(base | {"output_dir": str(tmp_path / "full")})
    ck = tmp_path / "full" / "checkpoints" / "step-00000001"
    assert (ck / "sharded" / ".metadata").is_file() and not (ck / "trainable.safetensors").exists()
    assert json.loads((ck / "state.json").read_text())["format"] == "sharded"
    part = base | {"output_dir": str(tmp_path / "part")}
    train(part | {"train": base["train"] | {"max_steps": 1}})
    resumed = train(part | {"train": base["train"] | {"resume": "latest"}})
    assert resumed.step == full.step == 2
    keys = ["loss", "loss_cd", "reward/test-red", "w", "t"]
    a, b = steps_of(tmp_path / "full"), steps_of(tmp_path / "part")
    assert [[r[k] for k in keys] for r in a] == [[r[k] for k in keys] for r in b]
    sa, sb = _dcp(full.last_checkpoint), _dcp(resumed.last_checkpoint)
    for part_name in ("trainable", "ema"):
        assert sa[part_name].keys() == sb[part_name].keys() and sa[part_name]
        assert all(torch.equal(sa[part_name][k], sb[part_name][k]) for k in sa[part_name])
    # a DDP run resumes the sharded checkpoint too; a corrupt one is a one-line CheckpointError
    ddp = train(base | {"output_dir": str(tmp_path / "ddp"),
                        "train": base["train"] | {"parallel": "ddp", "resume": str(ck), "max_steps": 1}})  # fmt: skip
    w, sharded = load_file(str(ddp.last_checkpoint / "trainable.safetensors")), _dcp(ck)["trainable"]
    assert w.keys() == sharded.keys() and all(torch.equal(w[k], sharded[k]) for k in w)
    (ck / "sharded" / "__0_0.distcp").write_bytes(b"broken")
    with pytest.raises(CheckpointError, match="sharded state unreadable") as e:
        train(base | {"output_dir": str(tmp_path / "x"), "train": base["train"] | {"resume": str(ck)}})
    assert "\n" not in str(e.value)


def _dcp(ckpt: Path) -> dict:
    """A sharded checkpoint's tensors as one plain dict (torch.distributed.checkpoint's own converter)."""
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    out = ckpt.parent / f"{ckpt.name}.pt"
    dcp_to_torch_save(str(ckpt / "sharded"), str(out))
    sd = torch.load(out, weights_only=False)
    out.unlink()
    return sd


def test_fsdp_refusals_are_one_line(tmp_path, videos):
    from t2v_turbo.config import load_config
    from t2v_turbo.training.distributed import check, check_launch

    with pytest.raises(ConfigError, match="DeepSpeed is not supported: launch with") as e:
        check_launch("DEEPSPEED")
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="set train.parallel=fsdp"):
        check_launch("FSDP")
    cfg = load_config(tiny(tmp_path, videos, train__parallel="fsdp", train__placement="released"))
    with pytest.raises(ConfigError, match=r"consistency term on every rank \(it runs on \[0\] of 2\)"):
        check(cfg, 2, [0])
    with pytest.raises(ConfigError, match="fsdp_cpu_offload=true needs train.parallel=fsdp"):
        train(tiny(tmp_path, videos, train__fsdp_cpu_offload=True))


def _launch(cfg_path: Path, *extra: str, wait: bool = True, nproc: int = 2):
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(nproc),
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(_free_port()), str(cfg_path.parent / "runner.py"), "distill",
           str(cfg_path), *extra]  # fmt: skip
    if not wait:
        return subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)


def _descendants(pid: int) -> list[int]:
    """Process ids below `pid` (from /proc), deepest first."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out[::-1]


def _write(tmp_path: Path, name: str, cfg: dict) -> Path:
    (tmp_path / "runner.py").write_text(RUNNER)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.slow  # two 2-process launches: ~90 s on 2 shared cores
def test_fsdp_run_matches_the_ddp_run_and_exports_the_consolidated_student(tmp_path, videos):
    """Same config, seeds and data on 2 processes: FSDP and DDP differ only in reduction order.

    Tolerance: per-step losses within rel 1e-6; LoRA and EMA weights after 4 AdamW steps (lr 1e-3)
    within atol 1e-4 (measured 3.7e-5: Adam's normalisation amplifies ulp-level gradient differences
    of near-zero gradients).
    """
    runs = {}
    for par in ("ddp", "fsdp"):
        cfg = tiny(tmp_path, videos, train__max_steps=4, checkpoint__every=2, checkpoint__limit=5,
                   train__parallel=par, distill__target="ema", checkpoint__export=True,
                   output_dir=str(tmp_path / par))  # fmt: skip
        out = _launch(_write(tmp_path, par, cfg))
        assert out.returncode == 0, out.stderr[-3000:]
        runs[par] = tmp_path / par
    summary = json.loads((runs["fsdp"] / "summary.json").read_text())
    assert summary["world_size"] == 2 and len(set(summary["rank_weights_sha256"])) == 1
    la, lb = steps_of(runs["ddp"]), steps_of(runs["fsdp"])
    assert [r["step"] for r in lb] == [1, 2, 3, 4]
    for ra, rb in zip(la, lb):
        assert rb["loss"] == pytest.approx(ra["loss"], rel=1e-6)
    a, b = load_file(str(runs["ddp"] / "lora.safetensors")), load_file(str(runs["fsdp"] / "lora.safetensors"))
    assert a.keys() == b.keys() and len(a) > 100
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-4
    ck = _dcp(runs["fsdp"] / "checkpoints" / "step-00000004")
    ddp_ema = load_file(str(runs["ddp"] / "checkpoints" / "step-00000004" / "ema.safetensors"))
    assert ck["ema"].keys() == ddp_ema.keys()
    assert max(float((ck["ema"][k] - ddp_ema[k]).abs().max()) for k in ddp_ema) < 1e-4
    # the consolidated export holds exactly the sharded checkpoint's weights (peft keys in the LoRA file)
    from t2v_turbo.models.lora import lora_state_dict
    from t2v_turbo.pipeline import load_backbone

    assert (runs["fsdp"] / "student" ).is_dir() and load_backbone(runs["fsdp"] / "student").w_embedding_dim == 32
    assert len(b) == len([k for k in ck["trainable"] if "lora_" in k]) and lora_state_dict is not None


@pytest.mark.slow  # three 2-process launches and a 1-process resume: ~150 s on 2 shared cores
def test_fsdp_kill_and_resume_is_exact_and_a_two_process_checkpoint_resumes_on_one(tmp_path, videos, capsys):
    base = tiny(tmp_path, videos, train__max_steps=6, checkpoint__every=2, checkpoint__limit=10,
                train__parallel="fsdp", distill__target="ema")  # fmt: skip
    full = _launch(_write(tmp_path, "full", base | {"output_dir": str(tmp_path / "full")}))
    assert full.returncode == 0, full.stderr[-3000:]
    killed_cfg = _write(tmp_path, "killed", base | {"output_dir": str(tmp_path / "killed")})
    proc = _launch(killed_cfg, wait=False)
    first = tmp_path / "killed" / "checkpoints" / "step-00000002" / "state.json"
    deadline = time.time() + 300
    while not first.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    workers = _descendants(proc.pid)  # torch's launcher starts its workers in their own sessions
    for pid in [*workers, proc.pid]:
        os.kill(pid, signal.SIGKILL)
    proc.wait()
    while any(Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2] for pid in workers):
        time.sleep(0.05)
    done = sorted(p.name for p in (tmp_path / "killed" / "checkpoints").glob("step-*"))
    assert done and "step-00000006" not in done
    out = _launch(killed_cfg, "train.resume=latest")
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"resumed from {tmp_path / 'killed' / 'checkpoints' / done[-1]}" in out.stdout
    keys = ["loss", "loss_cd", "reward/test-red", "w", "t"]
    a, b = steps_of(tmp_path / "full"), steps_of(tmp_path / "killed")
    assert [r["step"] for r in b] == list(range(1, 7))
    assert [[r[k] for k in keys] for r in a] == [[r[k] for k in keys] for r in b]
    sa = _dcp(tmp_path / "full" / "checkpoints" / "step-00000006")
    sb = _dcp(tmp_path / "killed" / "checkpoints" / "step-00000006")
    for part in ("trainable", "ema"):
        assert sa[part].keys() == sb[part].keys() and all(torch.equal(sa[part][k], sb[part][k]) for k in sa[part])
    # 2 -> 1 process: weights, EMA and optimizer reshard exactly; data streams restart (said so)
    ck = tmp_path / "full" / "checkpoints" / "step-00000004"
    capsys.readouterr()
    one = train(base | {"output_dir": str(tmp_path / "one"),
                        "train": base["train"] | {"resume": str(ck), "max_steps": 4}})  # fmt: skip
    assert "checkpoint of 2 process(es) resumed on 1: data restarts" in capsys.readouterr().out
    s2, s1 = _dcp(ck), _dcp(one.last_checkpoint)
    for part in ("trainable", "ema"):
        assert all(torch.equal(s2[part][k], s1[part][k]) for k in s2[part])
    opt2, opt1 = s2["optimizer"]["state"], s1["optimizer"]["state"]
    assert opt2.keys() == opt1.keys() and all(
        torch.equal(torch.as_tensor(opt2[k][x]), torch.as_tensor(opt1[k][x])) for k in opt2 for x in opt2[k]
    )


def test_full_size_benchmark_runs_its_tiny_mode(tmp_path, capsys):
    """benchmarks/full_size.py --tiny: the same code as the full-size run, smallest settings."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import full_size

    out = tmp_path / "fs.json"
    configs = ["turbo-lora", "vcm-lora-gc", "chain-k1", "infer-student-1", "infer-teacher-50-cfg"]
    assert full_size.main(["--tiny", "--backbones", "wan-33", "--configs", ",".join(configs), "--steps", "1",
                           "--warmup", "0", "--out", str(out)]) == 0  # fmt: skip
    res = json.loads(out.read_text())
    assert res["tiny"] and res["device"] == "cpu-tiny" and res["results"]["wan-33"]["size"] == [5, 16, 16]
    got = res["results"]["wan-33"]["configs"]
    assert list(got) == configs and all(got[c]["seconds"] > 0 and got[c]["peak_mb"] > 0 for c in configs)
    assert got["turbo-lora"]["trainable"] > 0 and got["infer-student-1"]["trainable"] == 0
    table = capsys.readouterr().out
    assert "| wan-33 | 5x16x16 | infer-teacher-50-cfg |" in table and "| 1 |" in table  # its own ratio
    # the static-memory estimate: bf16 frozen weights, 16 bytes per trainable parameter, FSDP / GPUs
    counts = {"vc2_unet": 1000, "vc2_vae": 100, "vc2_text": 50, "hpsv2.1": 20, "internvideo2": 30,
              "lora_vc2_unet_64": 10}  # fmt: skip
    e = full_size.static_estimate(counts, 4, "vc2-lora", fsdp=True)
    assert e["teacher_vae_text_rewards_gb"] * 1e9 == pytest.approx(2 * 1200)
    assert e["per_gpu_gb"] * 1e9 == pytest.approx(2 * 1200 + (4 * 1000 + 16 * 10) / 4)  # fp32 frozen shards
    full = full_size.static_estimate(counts, 1, "vc2-full (v2 recipe)", fsdp=False)
    assert full["student_gb"] * 1e9 == pytest.approx(16 * 1000) and full["trainable_params"] == 1000
