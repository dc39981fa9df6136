"""Full-size cost on the machine it runs on: the real backbones and reward models (random weights).

    python benchmarks/full_size.py                    # on a GPU: VC2 320x512x16, Wan2.1-1.3B 81 and 33 frames
    python benchmarks/full_size.py --backbones vc2    # one backbone
    python benchmarks/full_size.py --tiny             # the same code at toy sizes (CPU, seconds; tested)
    python benchmarks/full_size.py --estimate         # parameter counts (meta device, no memory) and the
                                                      # static-memory estimate per preset and GPU count

Backbones (random weights; timings and memory do not depend on the weights):
  vc2      VideoCrafter2 (models/videocrafter2.py, the full `VC2Config.official()`: 1.4B UNet, the 8x VAE,
           the OpenCLIP ViT-H-14 text tower), 16 frames of 320x512.
  wan-81   Wan2.1-T2V-1.3B (models/wan.py; the transformer of docs/flow_matching.md: 30 layers, 12 x 128 heads,
           FFN 8960, text_dim 4096; diffusers' AutoencoderKLWan at its default = Wan2.1 size), 81 frames of
           480x832. The 5.7B UMT5-XXL text encoder is NOT built: training reads precomputed prompt
           embeddings (the wan-lora preset's advice), so a 1-layer stand-in with the real 4096-d output
           encodes prompts (its cost is excluded from every figure).
  wan-33   the same at 33 frames of 480x832 (a shorter clip).
Rewards at full size: HPSv2.1 (OpenCLIP ViT-H-14, 5 frames, weight 1) + InternVideo2-S2 1B (4 frames,
weight 2) on every backbone; ViCLIP-L/14 (8 frames) in the `turbo-lora-viclip` row (ms-lora's video reward).

Measured per backbone, each configuration `--steps` times after `--warmup` (median s/step; peak memory =
torch.cuda.max_memory_allocated over the configuration's steps, everything resident included; on a CPU the
peak resident set, VmHWM after a reset):
  turbo-{lora,full}[-gc]  one T2V-Turbo training step (CD + rewards, AdamW, clip), LoRA (the preset's rank)
                          or full fine-tuning, gradient checkpointing of the UNet / transformer blocks off/on
  turbo-lora-viclip       the LoRA step with ViCLIP as the video reward
  vcm-lora-gc             the VCM step (consistency loss only)
  chain-k{1,2,4}          the DRaFT-K chain baseline: reward backpropagated through the last K of 4 steps
  infer-student-{1,2,4,8} one video with the student's consistency sampler, VAE decode included
  infer-teacher-50-cfg    one video with the 50-step DDIM/Euler + CFG teacher, VAE decode included
Mixed precision: bf16 on a GPU (frozen weights in bf16, autocast, trainable weights fp32) unless --fp32;
fp32 on a CPU (CPU autocast does not convert GroupNorm's bf16 weights).
Writes benchmarks/results/full_size_<device>.json (device: the GPU's name, or "cpu-tiny").
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

TRAIN = ["turbo-lora", "turbo-lora-gc", "turbo-full", "turbo-full-gc", "turbo-lora-viclip", "vcm-lora-gc",
         "chain-k1", "chain-k2", "chain-k4"]  # fmt: skip
INFER = ["infer-student-1", "infer-student-2", "infer-student-4", "infer-student-8", "infer-teacher-50-cfg"]
BACKBONES = {"vc2": (16, 320, 512), "wan-81": (81, 480, 832), "wan-33": (33, 480, 832)}
TINY_SIZES = {"vc2": (4, 16, 16), "wan-81": (9, 16, 16), "wan-33": (5, 16, 16)}
LORA_RANK = {"vc2": 64, "wan-81": 64, "wan-33": 64}  # the vc2-lora / wan-lora presets
CHAIN_STEPS = 4


# ------------------------------------------------------------------------------------------ models
def wan_transformer_config() -> dict:
    """Wan2.1-T2V-1.3B's transformer (docs/flow_matching.md)."""
    return dict(patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128, in_channels=16,
                out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=30, cross_attn_norm=True,
                qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024)  # fmt: skip


def umt5_xxl_config():
    """The umt5-xxl encoder (Wan's text encoder; counted in --estimate, never built with weights)."""
    from transformers import UMT5Config

    return UMT5Config(vocab_size=256384, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
                      feed_forward_proj="gated-gelu", relative_attention_num_buckets=32)  # fmt: skip


def build_backbone(name: str, tiny: bool, device: str | torch.device = "cpu"):
    """A random-weight teacher backbone at full size (or toy size with `tiny`)."""
    if name == "vc2":
        from t2v_turbo.models.videocrafter2 import VC2Config, VideoCrafter2

        cfg = VC2Config.tiny() if tiny else VC2Config.official()
        return VideoCrafter2(cfg, device=device)
    frames = (TINY_SIZES if tiny else BACKBONES)[name][0]
    if tiny:
        from t2v_turbo.models.tiny import tiny_wan

        return tiny_wan(seed=0, frames=frames, size=16).to(device)
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    from t2v_turbo.flow import FlowSchedule
    from t2v_turbo.models.tiny import _tiny_tokenizer
    from t2v_turbo.models.wan import WanBackbone

    tok = _tiny_tokenizer(512)
    with torch.device(device):
        transformer = WanTransformer3DModel(**wan_transformer_config())
        vae = AutoencoderKLWan()  # diffusers' defaults are the Wan2.1 VAE (base_dim 96, z_dim 16)
        stand_in = UMT5EncoderModel(UMT5Config(vocab_size=len(tok), d_model=4096, d_kv=8, d_ff=64, num_layers=1,
                                               num_heads=4, relative_attention_num_buckets=8, pad_token_id=0,
                                               eos_token_id=1, decoder_start_token_id=0))  # fmt: skip
    return WanBackbone(transformer.eval(), vae.eval(), stand_in.eval(), tok, FlowSchedule(shift=3.0),
                       resolution=BACKBONES[name], max_sequence_length=512)  # fmt: skip


def build_rewards(tiny: bool, device, dtype, viclip: bool = False):
    """[RewardTerm]: HPSv2.1 (5 frames, w 1) + InternVideo2-S2 1B (4 frames, w 2), or ViCLIP (8 frames)."""
    from transformers import CLIPModel

    from t2v_turbo.rewards.base import RewardTerm
    from t2v_turbo.rewards.image import CLIPReward, clip_config
    from t2v_turbo.rewards.video import VideoTextReward

    size = "tiny" if tiny else None
    hps = CLIPReward(CLIPModel(clip_config(size)), geometry="longest_pad", scale=1.0, num_frames=5, dtype=dtype,
                     text_clean="open_clip")  # fmt: skip
    if viclip:
        from t2v_turbo.rewards.viclip import ViCLIP

        video = RewardTerm("viclip", VideoTextReward(ViCLIP(size), 8, dtype=dtype), 2.0)
    else:
        from t2v_turbo.rewards.internvideo2 import InternVideo2

        video = RewardTerm("internvideo2", VideoTextReward(InternVideo2(size), 4, dtype=dtype), 2.0)
    terms = [RewardTerm("hpsv2.1", hps, 1.0), video]
    for t in terms:
        t.model.to(device).requires_grad_(False).eval()
    return terms


def count(module) -> int:
    return sum(p.numel() for p in module.parameters())


# ------------------------------------------------------------------------------------------ memory
def _peak_reset(cuda: bool) -> None:
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    else:
        from training import _reset_peak, _trim

        _trim()
        _reset_peak()


def _peak_mb(cuda: bool) -> float | None:
    if cuda:
        return torch.cuda.max_memory_allocated() / 2**20
    from training import _status_kb

    hwm = _status_kb("VmHWM")
    return hwm / 1024 if hwm is not None else None


# ------------------------------------------------------------------------------------------ one backbone
class Bench:
    """Teacher, rewards, one latent batch; `run(config)` times one configuration."""

    def __init__(self, name: str, tiny: bool, bf16: bool, batch: int):
        from t2v_turbo.distill import DistillConfig
        from t2v_turbo.flow import is_flow, teacher_solver

        self.name, self.tiny, self.batch = name, tiny, batch
        self.cuda = torch.cuda.is_available() and not tiny
        self.dev = torch.device("cuda" if self.cuda else "cpu")
        self.low = torch.bfloat16 if bf16 else torch.float32
        torch.manual_seed(0)
        self.teacher = build_backbone(name, tiny).to(self.dev).freeze()
        self.params = {"network": count(self.teacher.unet), "vae": count(self.teacher.vae)}
        self.teacher.to(dtype=self.low)
        if hasattr(self.teacher, "vae") and name.startswith("wan"):
            self.teacher.vae.float()  # diffusers recommends decoding Wan latents in float32
        self.flow = is_flow(self.teacher.schedule)
        self.solver = teacher_solver(self.teacher.schedule, 50)
        self.cfg = DistillConfig(w_min=2.0, w_max=6.0) if self.flow else DistillConfig()
        self.prompts = ["a red panda eating bamboo in the snow"] * batch
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            self.z0 = torch.randn(self.teacher.latent_shape(batch), generator=g).to(self.dev)
            self.cond = self.teacher.encode_prompt(self.prompts)
            self.uncond = self.teacher.encode_prompt([""])
        self.rewards = {v: build_rewards(tiny, self.dev, self.low, viclip=v) for v in (False, True)}
        self.params |= {t.name: count(t.model) for v in self.rewards.values() for t in v}
        self.g = g

    def student(self, lora: bool, gc_on: bool):
        s = self.teacher.make_student(256, init="zero")
        s.unet.requires_grad_(True)
        if lora:
            s.add_lora(rank=LORA_RANK[self.name])
        for p in s.trainable_parameters():
            p.data = p.data.float()
        s.enable_gradient_checkpointing(gc_on)
        s.unet.train()
        return s

    def train_step(self, config: str, s, opt, params) -> None:
        from t2v_turbo.baselines.chain import chain_reward_step
        from t2v_turbo.distill import distill_step

        with torch.autocast(self.dev.type, self.low, enabled=self.low != torch.float32):
            if config.startswith("chain"):
                terms = chain_reward_step(s, self.prompts, self.rewards[False], CHAIN_STEPS,
                                          int(config.removeprefix("chain-k")), 7.5, self.g, cond=self.cond)  # fmt: skip
            else:
                rewards = () if config.startswith("vcm") else self.rewards[config.endswith("viclip")]
                terms = distill_step(s, self.teacher, self.solver, self.z0, self.prompts, self.cond, self.uncond,
                                     rewards, self.cfg, generator=self.g)  # fmt: skip
        terms["loss"].backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    def run(self, config: str, steps: int, warmup: int) -> dict:
        from t2v_turbo.pipeline import generate

        s = opt = None
        try:
            if config.startswith("infer"):
                n = int(config.split("-")[2])
                if config.startswith("infer-student"):
                    s = self.student(lora=True, gc_on=False).eval()
                    s.merge_lora()
                    s.to(dtype=self.low)
                    fn = lambda: generate(s, self.prompts[:1], num_steps=n, w=4.0 if self.flow else 7.5, seed=0)  # noqa: E731
                else:
                    fn = lambda: generate(self.teacher, self.prompts[:1], num_steps=n, cfg_scale=5.0 if self.flow else 7.5, seed=0)  # noqa: E731
                ctx = torch.no_grad
            else:
                s = self.student(lora="lora" in config or config.startswith("chain"), gc_on=config.endswith("gc") or config.startswith("chain"))
                params = s.trainable_parameters()
                opt = torch.optim.AdamW(params, lr=1e-5)
                fn = lambda: self.train_step(config, s, opt, params)  # noqa: E731
                ctx = torch.enable_grad
            with ctx(), torch.autocast(self.dev.type, self.low, enabled=self.low != torch.float32):
                for _ in range(warmup):
                    fn()
                _peak_reset(self.cuda)
                times = []
                for _ in range(steps):
                    t0 = time.perf_counter()
                    fn()
                    if self.cuda:
                        torch.cuda.synchronize()
                    times.append(time.perf_counter() - t0)
            return {"seconds": sorted(times)[len(times) // 2], "peak_mb": _peak_mb(self.cuda),
                    "trainable": sum(p.numel() for p in opt.param_groups[0]["params"]) if opt else 0}  # fmt: skip
        except torch.OutOfMemoryError:
            return {"seconds": None, "peak_mb": None, "error": "out of memory"}
        finally:
            s = opt = fn = None  # noqa: F841 (free the student and its optimizer state before the next config)
            gc.collect()
            if self.cuda:
                torch.cuda.empty_cache()


# ------------------------------------------------------------------------------------------ estimate
def parameter_counts() -> dict:
    """Parameters of every full-size component, built on the meta device (no memory, seconds)."""
    from transformers import CLIPModel, UMT5EncoderModel

    from t2v_turbo.models.videocrafter2 import VC2Config, VideoCrafter2
    from t2v_turbo.rewards.image import clip_config
    from t2v_turbo.rewards.internvideo2 import InternVideo2
    from t2v_turbo.rewards.viclip import ViCLIP

    vc2 = VideoCrafter2(VC2Config.official(), device="meta")
    with torch.device("meta"):
        from diffusers import AutoencoderKLWan, WanTransformer3DModel

        out = {
            "vc2_unet": count(vc2.unet), "vc2_vae": count(vc2.vae), "vc2_text": count(vc2.text_encoder),
            "wan_transformer": count(WanTransformer3DModel(**wan_transformer_config())),
            "wan_vae": count(AutoencoderKLWan()), "wan_umt5_xxl": count(UMT5EncoderModel(umt5_xxl_config())),
            "hpsv2.1": count(CLIPModel(clip_config(None))), "internvideo2": count(InternVideo2(None)),
            "viclip": count(ViCLIP(None)),
        }  # fmt: skip
    return out


def lora_params(name: str, rank: int) -> int:
    """LoRA A+B parameters for rank `rank` on every Linear / Conv of the network (meta device)."""
    from t2v_turbo.models.lora import add_lora

    with torch.device("meta"):
        if name == "vc2":
            from t2v_turbo.models.videocrafter2 import VC2Config, VC2UNet

            net = VC2UNet(VC2Config.official().unet)
        else:
            from diffusers import WanTransformer3DModel

            net = WanTransformer3DModel(**wan_transformer_config())
        net = add_lora(net, rank=rank)
    return sum(p.numel() for n, p in net.named_parameters() if "lora_" in n)


PRESETS = {  # preset: (network, VAE, text encoder resident in training, rewards, lora rank or 0 = full)
    "vc2-lora": ("vc2_unet", "vc2_vae", "vc2_text", ["hpsv2.1", "internvideo2"], 64),
    "vc2-full (v2 recipe)": ("vc2_unet", "vc2_vae", "vc2_text", ["hpsv2.1", "internvideo2"], 0),
    "wan-lora": ("wan_transformer", "wan_vae", None, ["hpsv2.1", "internvideo2"], 64),
    "wan-full": ("wan_transformer", "wan_vae", None, ["hpsv2.1", "internvideo2"], 0),
}


def static_estimate(counts: dict, gpus: int, preset: str, fsdp: bool) -> dict:
    """GB per GPU of weights, gradients and AdamW state (no activations). bf16 frozen weights (teacher,
    VAE, text tower, rewards: 2 bytes/param), the student's frozen copy 2 bytes/param, trainable params
    16 bytes (fp32 weight + grad + 2 AdamW moments); FSDP divides the student's part by the GPU count
    (this trainer shards the student and its EMA target, not the teacher or the rewards) and keeps the
    student's frozen weights in fp32 (4 bytes: one original dtype per FSDP unit; bf16 in compute)."""
    net, vae, text, rewards, rank = PRESETS[preset]
    p_net = counts[net]
    trainable = counts[f"lora_{net}_{rank}"] if rank else p_net
    shared = 2 * (p_net + counts[vae] + (counts[text] if text else 0) + sum(counts[r] for r in rewards))
    student = ((4 if fsdp else 2) * p_net if rank else 0) + 16 * trainable
    per_gpu = shared + (student / gpus if fsdp else student)
    return {"teacher_vae_text_rewards_gb": shared / 1e9, "student_gb": student / 1e9, "per_gpu_gb": per_gpu / 1e9,
            "trainable_params": trainable}  # fmt: skip


def estimate() -> dict:
    counts = parameter_counts()
    counts["lora_vc2_unet_64"] = lora_params("vc2", 64)
    counts["lora_wan_transformer_64"] = lora_params("wan", 64)
    print("\n## Parameter counts (full size, meta device)\n")
    print(C.markdown(["component", "parameters (M)"], [[k, v / 1e6] for k, v in counts.items()]))
    rows, table = [], {}
    for preset in PRESETS:
        for gpus, fsdp in [(1, False), (8, False), (2, True), (4, True), (8, True)]:
            e = static_estimate(counts, gpus, preset, fsdp)
            table[f"{preset}|{gpus}|{'fsdp' if fsdp else 'ddp'}"] = e
            rows.append([preset, gpus, "fsdp" if fsdp else "ddp", e["teacher_vae_text_rewards_gb"], e["student_gb"],
                         e["per_gpu_gb"]])  # fmt: skip
    print("\n## Static memory per GPU (weights + grads + AdamW; activations NOT included)\n")
    print(C.markdown(["preset", "GPUs", "parallel", "teacher+VAE+text+rewards GB", "student GB", "per GPU GB"], rows))
    return {"parameter_counts": counts, "static_memory": table}


# ------------------------------------------------------------------------------------------ driver
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tiny", action="store_true", help="toy sizes on the CPU (the same code)")
    p.add_argument("--estimate", action="store_true", help="parameter counts and static-memory estimate only")
    p.add_argument("--backbones", default="vc2,wan-81,wan-33")
    p.add_argument("--configs", default=",".join(TRAIN + INFER))
    p.add_argument("--batch", type=int, default=1, help="videos per training step (the presets: 1 per GPU)")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--fp32", action="store_true", help="no bf16 (frozen weights fp32, no autocast)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/full_size_<device>.json)")
    a = p.parse_args(argv)
    C.set_threads(a.threads)
    if a.estimate:
        res = estimate()
        (Path(a.out) if a.out else C.RESULTS / "full_size_estimate.json").write_text(json.dumps(res, indent=2))
        return 0
    cuda = torch.cuda.is_available() and not a.tiny
    device = torch.cuda.get_device_name().replace(" ", "_") if cuda else "cpu-tiny" if a.tiny else "cpu"
    info = C.machine()
    configs = [c for c in a.configs.split(",") if c]
    unknown = sorted(set(configs) - set(TRAIN + INFER))
    if unknown:
        p.error(f"unknown configs {unknown}; choose from {TRAIN + INFER}")
    # bf16 needs CUDA autocast here: CPU autocast leaves GroupNorm with bf16 weights unconverted
    bf16 = cuda and not a.fp32
    results = {}
    for name in a.backbones.split(","):
        b = Bench(name, a.tiny, bf16, a.batch)
        size = (TINY_SIZES if a.tiny else BACKBONES)[name]
        results[name] = {"size": size, "params": b.params, "configs": {}}
        for c in configs:
            results[name]["configs"][c] = b.run(c, a.steps, a.warmup)
            print(f"{name} {c}: {results[name]['configs'][c]}", file=sys.stderr, flush=True)
        del b
        gc.collect()
    print(f"\n## Full-size cost ({'TINY sizes, ' if a.tiny else ''}{device}; bf16 {'on' if bf16 else 'off'}; "
          f"batch {a.batch}; median of {a.steps} after {a.warmup} warm-up)\n\nMachine: {C.machine_line(info)}.\n")  # fmt: skip
    rows = []
    for name, r in results.items():
        ref = r["configs"].get("turbo-lora-gc") or {}
        ref_t = r["configs"].get("infer-teacher-50-cfg") or {}
        for c, m in r["configs"].items():
            base = ref_t if c.startswith("infer") else ref
            ratio_s = m["seconds"] / base["seconds"] if m.get("seconds") and base.get("seconds") else None
            ratio_m = m["peak_mb"] / base["peak_mb"] if m.get("peak_mb") and base.get("peak_mb") else None
            rows.append([name, "x".join(map(str, r["size"])), c, m.get("seconds"), ratio_s, m.get("peak_mb"), ratio_m,
                         m.get("error", "")])  # fmt: skip
    print(C.markdown(["backbone", "TxHxW", "config", "s/step or s/video", "time ratio", "peak MB", "memory ratio",
                      "note"], rows))  # fmt: skip
    print("\nRatios: training rows vs turbo-lora-gc, inference rows vs infer-teacher-50-cfg.")
    payload = {"device": device, "machine": info, "tiny": a.tiny, "bf16": bf16, "batch": a.batch,
               "steps": a.steps, "warmup": a.warmup, "results": results}  # fmt: skip
    out = Path(a.out) if a.out else C.RESULTS / f"full_size_{device}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2, default=str))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
