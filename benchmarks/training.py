"""Training cost: a T2V-Turbo step (consistency distillation + single-step image and video rewards) vs the
DRaFT-K chain-reward baseline (backprop through the last K of 4 sampling steps), K = 1, 2, 4, at equal batch.

    python benchmarks/training.py [--quick] [--batch 4] [--rounds 8] [--threads N] [--decode-checkpointing]
    python benchmarks/training.py --family fm [--quick]   # flow matching: the tiny Wan2.1, LoRA, Euler solver

--family fm: the same five configurations on the tiny Wan (the wan-lora recipe's shape: LoRA rank 8 +
the zero-initialised guidance embedding, `EulerSolver` on 50 shifted sigmas, w in [2, 6]), toy
differentiable rewards on PIXEL frames (an image conv net on 5 random frames, a video conv net on 8
strided frames of the 4k + 1 decoded ones), so the causal VAE decodes the latent prefix up to the last
reward frame. Writes training_fm.json.

Time: one subprocess loads the models and one batch, then runs full training steps (forward, backward,
clip, AdamW) of every configuration interleaved round by round (so background load hits all alike);
the table reports the median. Memory: each configuration runs in a fresh subprocess (so the peak is its
own): warm-up steps, freed memory returned to the OS, then the peak above that steady state over the
measured steps. CPU: the peak resident set (VmHWM after resetting it through /proc/self/clear_refs,
with glibc's mmap threshold lowered so freed tensors leave the RSS; ru_maxrss where that is
unavailable). GPU: torch.cuda.max_memory_allocated.
Writes benchmarks/results/training.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

CONFIGS = ("t2v-turbo", "vcm", "chain-k1", "chain-k2", "chain-k4")
CHAIN_STEPS = 4


# ------------------------------------------------------------------------------------------ memory
def _status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _trim() -> None:
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:  # not glibc
        pass


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


# ------------------------------------------------------------------------------------------ worker
def build_rewards(shipped: bool):
    from t2v_turbo.rewards.base import RewardTerm, build_rewards

    if shipped:
        specs = [
            {"name": "md-image", "weight": 1.0, "frames": 5},
            {"name": "md-video", "weight": 2.0, "frames": 8},
        ]
        return build_rewards(specs), "shipped md-image (w 1, 5 frames) + md-video (w 2, 8 frames)"
    from t2v_turbo.worlds.moving_digits.rewards import build_image_reward, build_video_reward

    img, vid = build_image_reward(seed=0).eval(), build_video_reward(seed=0).eval()
    img.num_frames, vid.num_frames = 5, 8
    img.requires_grad_(False)
    vid.requires_grad_(False)
    note = "world-sized random md-image (w 1, 5 frames) + md-video (w 2, 8 frames)"
    return [RewardTerm("md-image", img, 1.0), RewardTerm("md-video", vid, 2.0)], note


def fm_rewards():
    """Toy differentiable rewards for the FM benchmark (seeded conv nets; scores are meaningless, the
    cost is a reward model's): image kind on 5 frames, video kind on 8 strided frames."""
    import torch
    from torch import nn

    from t2v_turbo.rewards.base import RewardModel, RewardTerm

    class ConvReward(RewardModel):
        def __init__(self, kind: str, num_frames: int, seed: int):
            super().__init__()
            self.kind, self.num_frames = kind, num_frames
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                conv = nn.Conv2d(3, 16, 3, padding=1) if kind == "image" else nn.Conv3d(3, 16, 3, padding=1)
                self.net = nn.Sequential(conv, nn.SiLU(), nn.AdaptiveAvgPool3d(1) if kind == "video" else nn.Identity())

        def score(self, video, prompts):
            if self.kind == "image":  # frames scored independently: (B, 3, T, H, W) -> (B T, 3, H, W)
                b, c, t, h, w = video.shape
                x = self.net(video.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w))
                return x.reshape(b, -1).mean(1)
            return self.net(video).reshape(video.shape[0], -1).mean(1)

    img, vid = ConvReward("image", 5, 0).eval(), ConvReward("video", 8, 1).eval()
    img.requires_grad_(False)
    vid.requires_grad_(False)
    note = "toy conv-net rewards: image (w 1, 5 pixel frames) + video (w 2, 8 strided pixel frames)"
    return [RewardTerm("toy-image", img, 1.0), RewardTerm("toy-video", vid, 2.0)], note


class Setup:
    """Models, one batch and an optimizer; `step(config)` runs one full training step of a configuration."""

    def __init__(self, batch: int, decode_ckpt: bool, family: str = "md", fm_frames: int = 17, fm_size: int = 64,
                 fm_layers: int = 0, fm_heads: int = 2):  # fmt: skip
        if family == "fm":
            self._init_fm(batch, decode_ckpt, fm_frames, fm_size, fm_layers, fm_heads)
            return
        import numpy as np
        import torch

        from t2v_turbo.distill import DistillConfig
        from t2v_turbo.solvers import DDIMSolver
        from t2v_turbo.worlds.moving_digits.dataset import sample_batch

        self.cuda = torch.cuda.is_available()
        dev = "cuda" if self.cuda else "cpu"
        teacher, _, self.note = C.load_models("turbo")
        self.teacher = teacher.to(dev).freeze()
        # the world recipe (configs/moving-digits.yaml): full fine-tuning of a zero-initialised student
        self.student = self.teacher.make_student(256, init="zero").train()
        self.student.unet.requires_grad_(True)
        self.rewards, self.reward_note = build_rewards(C.shipped_available("reward_image", "reward_video"))
        for r in self.rewards:
            r.model.to(dev)
        self.params = self.student.trainable_parameters()
        self.opt = torch.optim.AdamW(self.params, lr=1e-4)
        self.solver = DDIMSolver(self.teacher.schedule, 50)
        videos, self.captions, _ = sample_batch(np.random.default_rng(0), batch)
        self.g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            self.z0 = self.teacher.encode_video(videos.to(dev), self.g)
            self.cond = self.teacher.encode_prompt(self.captions)
            self.uncond = self.teacher.encode_prompt([""])
        self.decode_ckpt = decode_ckpt
        self.cfg = DistillConfig(decode_checkpointing=decode_ckpt)

    def _init_fm(self, batch: int, decode_ckpt: bool, frames: int, size: int, layers: int = 0, heads: int = 2) -> None:
        import torch

        from t2v_turbo.distill import DistillConfig
        from t2v_turbo.flow import EulerSolver
        from t2v_turbo.models.tiny import tiny_wan_teacher

        self.cuda = torch.cuda.is_available()
        dev = "cuda" if self.cuda else "cpu"
        self.teacher = tiny_wan_teacher(seed=0, frames=frames, height=size)
        arch = "2-layer WanTransformer3DModel 2x12 heads"
        if layers:  # a wider transformer (heads x 32, FFN 4x) on the same tiny VAE and text encoder
            from diffusers import WanTransformer3DModel

            from t2v_turbo.models.wan import WanBackbone

            torch.manual_seed(0)
            tr = WanTransformer3DModel(
                patch_size=(1, 2, 2), num_attention_heads=heads, attention_head_dim=32, in_channels=16,
                out_channels=16, text_dim=32, freq_dim=256, ffn_dim=4 * 32 * heads, num_layers=layers,
                cross_attn_norm=True, qk_norm="rms_norm_across_heads", rope_max_seq_len=32,
            ).eval()  # fmt: skip
            t = self.teacher
            self.teacher = WanBackbone(tr, t.vae, t.text_encoder, t.tokenizer, t.schedule,
                                       resolution=t.resolution, max_sequence_length=16)  # fmt: skip
            arch = f"{layers}-layer WanTransformer3DModel {heads}x32 heads"
        self.teacher = self.teacher.to(dev).freeze()
        self.note = (
            f"tiny Wan2.1 ({arch}, AutoencoderKLWan base_dim 3, 2-layer UMT5), {frames} "
            f"frames at {size}x{size}, latents {tuple(self.teacher.latent_shape(1)[1:])}; LoRA rank 8 + guidance embedding"
        )
        self.student = self.teacher.make_student(256, init="zero")
        self.student.add_lora(rank=8)
        self.student.unet.train()
        self.rewards, self.reward_note = fm_rewards()
        for r in self.rewards:
            r.model.to(dev)
        self.params = self.student.trainable_parameters()
        self.opt = torch.optim.AdamW(self.params, lr=1e-4)
        self.solver = EulerSolver(self.teacher.schedule, 50)
        self.captions = C.md_prompts(batch)
        self.g = torch.Generator().manual_seed(0)
        videos = torch.rand((batch, 3, frames, size, size), generator=self.g) * 2 - 1
        with torch.no_grad():
            self.z0 = self.teacher.encode_video(videos.to(dev), self.g)
            self.cond = self.teacher.encode_prompt(self.captions)
            self.uncond = self.teacher.encode_prompt([""])
        self.decode_ckpt = decode_ckpt
        self.cfg = DistillConfig(w_min=2.0, w_max=6.0, decode_checkpointing=decode_ckpt)

    def step(self, config: str) -> dict:
        import torch

        from t2v_turbo.baselines.chain import chain_reward_step
        from t2v_turbo.distill import distill_step

        if config in ("t2v-turbo", "vcm"):
            rewards = self.rewards if config == "t2v-turbo" else ()
            terms = distill_step(
                self.student,
                self.teacher,
                self.solver,
                self.z0,
                self.captions,
                self.cond,
                self.uncond,
                rewards,
                self.cfg,
                generator=self.g,
            )
        else:
            k = int(config.removeprefix("chain-k"))
            terms = chain_reward_step(
                self.student,
                self.captions,
                self.rewards,
                CHAIN_STEPS,
                k,
                7.5,
                self.g,
                decode_checkpointing=self.decode_ckpt,
                cond=self.cond,
            )
        terms["loss"].backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        if self.cuda:
            torch.cuda.synchronize()
        return {k: float(v) for k, v in terms.items() if v.numel() == 1}


def memory_worker(config: str, batch: int, steps: int, warmup: int, decode_ckpt: bool, family: str = "md",
                  fm: tuple = ()) -> dict:  # fmt: skip
    """Peak memory of `steps` training steps of one configuration above the steady state after warm-up."""
    import torch

    s = Setup(batch, decode_ckpt, family, *fm)
    for _ in range(warmup):
        s.step(config)
    _trim()
    if s.cuda:
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    base_rss = _status_kb("VmRSS")
    peak_reset = _reset_peak()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        s.step(config)
        times.append(time.perf_counter() - t0)
    if s.cuda:
        peak_mb = (torch.cuda.max_memory_allocated() - base) / 2**20
        how = "torch.cuda.max_memory_allocated - allocated at steady state"
    elif peak_reset and base_rss is not None:
        peak_mb, how = (_status_kb("VmHWM") - base_rss) / 1024, "VmHWM (reset) - VmRSS at steady state"
    else:
        import resource

        peak_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - (base_rss or 0)) / 1024
        how = "ru_maxrss - VmRSS at steady state"
    return {
        "config": config,
        "peak_step_memory_mb": peak_mb,
        "steady_rss_mb": (base_rss or 0) / 1024,
        "memory_method": how,
        "seconds_per_step_alone": sorted(times)[len(times) // 2],
        "models": s.note,
        "rewards": s.reward_note,
        "trainable_params": sum(p.numel() for p in s.params),
    }


def timing_worker(batch: int, rounds: int, decode_ckpt: bool, family: str = "md", fm: tuple = ()) -> dict:
    """Seconds per step of every configuration, in one process, interleaved round by round."""
    s = Setup(batch, decode_ckpt, family, *fm)
    fns = {c: (lambda c=c: s.step(c)) for c in CONFIGS}
    times = C.interleaved_timings(fns, rounds, warmup=1)
    return {"times": times}


# ------------------------------------------------------------------------------------------ driver
def run_worker(args: list[str], a) -> dict:
    env = dict(os.environ)
    # freed tensors go back to the OS at once, so the resident set tracks live memory
    env.setdefault("MALLOC_MMAP_THRESHOLD_", "65536")
    env.setdefault("GLIBC_TUNABLES", "glibc.malloc.mmap_threshold=65536")
    cmd = [sys.executable, __file__, *args, "--batch", str(a.batch), "--steps", str(a.steps)]
    cmd += ["--warmup", str(a.warmup), "--rounds", str(a.rounds)]
    if a.threads:
        cmd += ["--threads", str(a.threads)]
    if a.decode_checkpointing:
        cmd.append("--decode-checkpointing")
    cmd += ["--family", a.family, "--fm-frames", str(a.fm_frames), "--fm-size", str(a.fm_size)]
    cmd += ["--fm-layers", str(a.fm_layers), "--fm-heads", str(a.fm_heads)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{args} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--batch", type=int, default=4, help="videos per step (the world preset's 4)")
    p.add_argument("--steps", type=int, default=3, help="steps measured for peak memory per config")
    p.add_argument("--warmup", type=int, default=2, help="steps before the memory baseline")
    p.add_argument("--rounds", type=int, default=None, help="interleaved timing rounds (default 8; quick 3)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--decode-checkpointing", action="store_true", help="recompute VAE decoder activations")
    p.add_argument("--worker", choices=(*CONFIGS, "timing"), help=argparse.SUPPRESS)
    p.add_argument("--family", choices=["md", "fm"], default="md",
                   help="md: the MovingDigits (DDPM) models; fm: flow matching on the tiny Wan2.1 (LoRA)")  # fmt: skip
    p.add_argument("--fm-frames", type=int, default=17, help="--family fm: frames (4k + 1)")
    p.add_argument("--fm-size", type=int, default=64, help="--family fm: height = width (multiple of 16)")
    p.add_argument("--fm-layers", type=int, default=0,
                   help="--family fm: a wider transformer with this many layers (0: the tiny 2-layer one)")  # fmt: skip
    p.add_argument("--fm-heads", type=int, default=2, help="--family fm with --fm-layers: heads of 32 dims")
    a = p.parse_args(argv)
    a.rounds = a.rounds or (3 if a.quick else 8)
    if a.worker:
        threads = C.set_threads(a.threads)
        fm = (a.fm_frames, a.fm_size, a.fm_layers, a.fm_heads)
        if a.worker == "timing":
            res = timing_worker(a.batch, a.rounds, a.decode_checkpointing, a.family, fm)
        else:
            res = memory_worker(a.worker, a.batch, a.steps, a.warmup, a.decode_checkpointing, a.family, fm)
        print(json.dumps(res | {"threads": threads}))
        return 0
    from tqdm.auto import tqdm

    info = C.machine()
    if a.threads:
        info["torch_threads"] = a.threads
    mem = {}
    with tqdm(total=len(CONFIGS) + 1, desc="training benchmark (subprocesses)") as bar:
        timing = run_worker(["--worker", "timing"], a)["times"]
        bar.update(1)
        for c in CONFIGS:
            mem[c] = run_worker(["--worker", c], a)
            bar.update(1)
    sec = {c: C.median(v) for c, v in timing.items()}
    ref_s, ref_m = sec["t2v-turbo"], mem["t2v-turbo"]["peak_step_memory_mb"]
    rows = []
    for c in CONFIGS:
        if c.startswith("chain"):
            k = int(c.removeprefix("chain-k"))
            unet = f"{k} with grad + {CHAIN_STEPS - k} no-grad"
        else:
            unet = "1 with grad + 3 no-grad (teacher cond+uncond, target)"
        m = mem[c]["peak_step_memory_mb"]
        rows.append([c, a.batch, unet, sec[c], sec[c] / ref_s, m, m / ref_m])
    headers = [
        "config",
        "batch",
        "UNet passes",
        "s/step (median)",
        "time vs T2V-Turbo",
        "peak step memory (MB)",
        "memory vs T2V-Turbo",
    ]
    table = C.markdown(headers, rows)
    mem_ratio = ref_m / mem["chain-k4"]["peak_step_memory_mb"]
    vcm_ratio = ref_m / mem["vcm"]["peak_step_memory_mb"]
    targets = {"turbo_over_chain_k4_memory": mem_ratio, "target": 0.5, "met": mem_ratio <= 0.5,
               "turbo_over_vcm_memory": vcm_ratio}  # fmt: skip
    ref = mem["t2v-turbo"]
    print(
        f"\n## Training step cost: batch {a.batch}, {a.rounds} interleaved timing rounds, memory per subprocess\n"
    )
    print(
        f"Machine: {C.machine_line(info)}. Models: {ref['models']}; rewards: {ref['rewards']}; "
        f"{ref['trainable_params'] / 1e6:.2f} M trainable parameters "
        f"({'LoRA + guidance embedding' if a.family == 'fm' else 'full fine-tuning'}, AdamW); "
        f"decode checkpointing {'on' if a.decode_checkpointing else 'off'}. Memory: {ref['memory_method']}, "
        f"one fresh process per configuration ({a.warmup} warm-up + {a.steps} measured steps).\n"
    )
    print(table)
    print(
        f"\nTarget: T2V-Turbo peak step memory / chain K=4 = {mem_ratio:.2f} (target <= 0.5: "
        f"{'met' if targets['met'] else 'MISSED'}); T2V-Turbo / VCM (no rewards) = {vcm_ratio:.2f}."
    )
    payload = {
        "benchmark": "training" + ("_fm" if a.family == "fm" else ""),
        "family": a.family,
        "machine": info,
        "batch": a.batch,
        "rounds": a.rounds,
        "decode_checkpointing": a.decode_checkpointing,
        "seconds_per_step": sec,
        "raw_seconds": timing,
        "memory": mem,
        "targets": targets,
        "table": table,
    }
    name = "training" + ("_fm" if a.family == "fm" else "") + (f"_l{a.fm_layers}" if a.fm_layers else "")
    name += "_decode_ckpt" if a.decode_checkpointing else ""
    print(f"\nwrote {C.write_json(name, payload)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
