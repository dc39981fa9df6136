"""Inference speed: T2V-Turbo at 1/2/4/8 steps vs the teacher's 50-step DDIM + CFG, and our sampling loop
vs diffusers' pipeline machinery (an LCMScheduler loop) on the same UNet, VAE and text encoder.

    python benchmarks/inference.py [--quick] [--batch 8] [--repeats 5] [--threads N]
    python benchmarks/inference.py --family fm [--quick]     # flow matching: the tiny Wan2.1

--family fm (docs/flow_matching.md): the 4-step FM student (the flow consistency sampler) vs the 50-step
Euler + CFG teacher (Wan's form, cfg 1 + w) per video, VAE decode included, and our FM consistency
sampler vs a diffusers `FlowMatchLCMScheduler` loop on the same transformer, VAE and text encoder
(`WanPipeline.encode_prompt`, `scheduler.step`, `AutoencoderKLWan.decode`). Writes inference_fm.json.

Every configuration generates the same batch of prompts end to end (text encoding, sampling, VAE
decode), timed in interleaved rounds; the table reports the median seconds per video and UNet
evaluations per video, the speed-up against the 50-step CFG teacher and the time ratio of our loop
to the diffusers loop at the same step count (with the max |difference| of their videos as a parity
check). Writes benchmarks/results/inference.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

STEPS = (1, 2, 4, 8)


@torch.no_grad()
def diffusers_lcm_generate(model, prompts, num_steps: int, guidance: float, seed: int) -> torch.Tensor:
    """The standard diffusers LCM loop on the backbone's own components: tokenizer + text encoder,
    LCMScheduler.set_timesteps(timesteps=ours), `unet(...).sample` + `scheduler.step` per step, then a
    batched per-frame VAE decode (as TextToVideoSDPipeline.decode_latents). Returns videos (B, 3, T, H, W)."""
    from diffusers import LatentConsistencyModelPipeline, LCMScheduler

    from t2v_turbo.models.base import guidance_to_w
    from t2v_turbo.sampling import consistency_timesteps

    g = torch.Generator().manual_seed(seed)
    sched = LCMScheduler(
        **model.schedule.to_config(),
        original_inference_steps=50,
        timestep_scaling=10.0,
        clip_sample=False,
        set_alpha_to_one=True,
    )
    sched.set_timesteps(timesteps=consistency_timesteps(num_steps))
    ids = model.tokenizer(
        list(prompts),
        padding="max_length",
        max_length=model.tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids
    cond = model.text_encoder(ids)[0]
    f = model.latent_shape(1)[2]
    if type(model.unet).__name__ == "UNetMotionModel":  # AnimateDiff pipelines repeat the text per frame
        cond = cond.repeat_interleave(f, dim=0)
    w = torch.full((len(prompts),), guidance_to_w(guidance, model.guidance_convention))
    w_emb = LatentConsistencyModelPipeline.get_guidance_scale_embedding(None, w, model.w_embedding_dim)
    latents = torch.randn(model.latent_shape(len(prompts)), generator=g)
    denoised = latents
    for t in sched.timesteps:
        x = model.unet_input(latents)  # the backbone may append fixed input channels (as inpainting UNets take masks)
        out = model.unet(x, t, encoder_hidden_states=cond, timestep_cond=w_emb).sample
        latents, denoised = sched.step(out, t, latents, generator=g, return_dict=False)
    b, c, f, h, w_ = denoised.shape
    frames = (denoised / model.scaling_factor).permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w_)
    video = model.vae.decode(frames).sample
    return video.reshape(b, f, *video.shape[1:]).permute(0, 2, 1, 3, 4).clamp(-1, 1)


@torch.no_grad()
def diffusers_fm_lcm_generate(model, pipe, prompts, num_steps: int, w: float, seed: int, decode: bool = True):
    """diffusers' flow-matching LCM loop on a Wan backbone's components: `WanPipeline.encode_prompt`,
    `FlowMatchLCMScheduler(shift).set_timesteps(N)`, the transformer (our guidance embedding fed as
    `w_emb`) + `scheduler.step` per step, then `AutoencoderKLWan.decode` of latents / (1 / std) + mean
    (as WanPipeline). Returns videos (B, 3, T, H, W) in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    cond, _ = pipe.encode_prompt(
        list(prompts), do_classifier_free_guidance=False, max_sequence_length=model.max_sequence_length
    )
    sched = pipe.scheduler
    sched.set_timesteps(num_steps)
    b = len(prompts)
    w_emb = model.w_embedding(w, b)
    latents = torch.randn(model.latent_shape(b), generator=g)
    for t in sched.timesteps:
        extra = {} if w_emb is None else {"w_emb": w_emb}
        v = model.unet(
            hidden_states=latents, timestep=t.expand(b), encoder_hidden_states=cond, return_dict=False, **extra
        )[0]
        latents = sched.step(v, t, latents, generator=g, return_dict=False)[0]
    if not decode:
        return latents
    vc = model.vae.config
    mean = torch.tensor(vc.latents_mean).view(1, -1, 1, 1, 1)
    inv_std = 1.0 / torch.tensor(vc.latents_std).view(1, -1, 1, 1, 1)
    return model.vae.decode(latents / inv_std + mean, return_dict=False)[0].clamp(-1, 1)


def main_fm(a) -> int:
    """The flow-matching family on the tiny Wan (see the module docstring)."""
    from diffusers import FlowMatchLCMScheduler, WanPipeline

    from t2v_turbo.models.tiny import tiny_wan_teacher
    from t2v_turbo.pipeline import generate

    threads = C.set_threads(a.threads)
    batch = a.batch or (2 if a.quick else 4)
    repeats = a.repeats or (2 if a.quick else 5)
    info = C.machine()
    teacher = tiny_wan_teacher(seed=0, frames=a.fm_frames, height=a.fm_size).freeze().eval()
    # option (a) student (takes w); a normal-initialised guidance embedding so that w matters
    student = teacher.make_student(256, init="normal", seed=1).eval()
    note = (
        f"tiny Wan2.1 (models/tiny.py tiny_wan_components: 2-layer WanTransformer3DModel 2x12 heads, "
        f"AutoencoderKLWan base_dim 3, 2-layer UMT5), {a.fm_frames} frames at {a.fm_size}x{a.fm_size}, "
        f"latents {tuple(teacher.latent_shape(1)[1:])}, flow shift {teacher.schedule.shift}; random weights"
    )
    prompts = C.md_prompts(batch)
    pipe = WanPipeline(tokenizer=student.tokenizer, text_encoder=student.text_encoder, vae=student.vae,
                       scheduler=FlowMatchLCMScheduler(shift=student.schedule.shift), transformer=student.unet)  # fmt: skip
    w = a.fm_w
    teacher_key = f"wan-teacher-euler{a.teacher_steps}-cfg"
    fns = {teacher_key: lambda: generate(teacher, prompts, a.teacher_steps, w, seed=0)}
    for n in STEPS:
        fns[f"fm-turbo-{n}"] = lambda n=n: generate(student, prompts, n, w, seed=0, timestep_rule="diffusers")
        fns[f"diffusers-fmlcm-{n}"] = lambda n=n: diffusers_fm_lcm_generate(student, pipe, prompts, n, w, 0)
    # where the time goes: sampling alone (no decode) and the VAE decode alone
    z_dec = torch.randn(student.latent_shape(batch), generator=torch.Generator().manual_seed(0))
    parts = {
        f"part: teacher {a.teacher_steps}-step Euler + CFG sampling, no decode": lambda: generate(
            teacher, prompts, a.teacher_steps, w, seed=0, decode=False),
        "part: 4-step FM student sampling, no decode": lambda: generate(student, prompts, 4, w, seed=0, decode=False),
        "part: causal VAE decode (B videos)": lambda: student.decode_latents(z_dec),
    }  # fmt: skip
    fns.update({k: torch.no_grad()(f) for k, f in parts.items()})
    bar = tqdm(total=repeats * len(fns), desc="FM inference rounds")
    times = C.interleaved_timings(fns, repeats, warmup=1, progress=bar)
    bar.close()
    parity, parity_latents = {}, {}
    for n in STEPS:
        ours = generate(student, prompts, n, w, seed=0, timestep_rule="diffusers").videos
        theirs = diffusers_fm_lcm_generate(student, pipe, prompts, n, w, 0)
        parity[n] = float((ours - theirs).abs().max())
        ours = generate(student, prompts, n, w, seed=0, timestep_rule="diffusers", decode=False).videos
        theirs = diffusers_fm_lcm_generate(student, pipe, prompts, n, w, 0, decode=False)
        parity_latents[n] = float((ours - theirs).abs().max())
    per_video = {k: C.median(v) / batch for k, v in times.items()}
    t_teacher = per_video[teacher_key]
    rows = [[teacher_key, a.teacher_steps, 2 * a.teacher_steps, t_teacher, 1.0, "-", "-"]]
    for n in STEPS:
        ours, theirs = per_video[f"fm-turbo-{n}"], per_video[f"diffusers-fmlcm-{n}"]
        rows.append([f"fm-turbo-{n}", n, n, ours, t_teacher / ours, ours / theirs,
                     f"{parity[n]:.1e} (latents {parity_latents[n]:.1e})"])  # fmt: skip
        rows.append([f"diffusers-fmlcm-{n}", n, n, theirs, t_teacher / theirs, 1.0, "-"])
    headers = ["config", "steps", "transformer evals/video", "s/video (median)",
               f"speed-up vs teacher {a.teacher_steps}-step Euler + CFG",
               "time vs diffusers FlowMatchLCM loop (same steps)", "max |ours - diffusers|"]  # fmt: skip
    table = C.markdown(headers, rows)
    speedup4 = t_teacher / per_video["fm-turbo-4"]
    loop_ratio = max(per_video[f"fm-turbo-{n}"] / per_video[f"diffusers-fmlcm-{n}"] for n in STEPS)
    worst = max(parity.values())
    worst_latents = max(parity_latents.values())
    targets = {
        "fm_turbo4_speedup_vs_teacher": speedup4,
        "worst_loop_time_ratio_vs_diffusers": loop_ratio,
        "loop_ratio_met": loop_ratio <= 1.05,  # within timing noise
        "worst_parity_max_abs_diff": worst,
        "worst_parity_latents_max_abs_diff": worst_latents,
        # the sampler's output (latents) is the parity target; decoded videos differ by float order only
        # (our causal decode loop vs AutoencoderKLWan.decode)
        "parity_met": worst_latents <= 1e-5,
    }
    print(f"\n## Inference, flow matching (tiny Wan): {batch} videos per call, {repeats} interleaved rounds, median\n")
    print(f"Machine: {C.machine_line(info)}. Models: {note}. w = {w} (teacher cfg {1 + w}).\n")
    print(table)
    part_rows = [[k.removeprefix("part: "), per_video[k] * batch, per_video[k]] for k in parts]
    breakdown = C.markdown(["component", "s per call (median)", "s per video"], part_rows)
    ks = list(parts)
    sampling_ratio = per_video[ks[0]] / per_video[ks[1]]
    targets["fm_turbo4_sampling_speedup_no_decode"] = sampling_ratio
    print("\nWhere the time goes:\n")
    print(breakdown)
    print(
        f"\nWithout the VAE decode the 4-step student samples {sampling_ratio:.1f}x faster than the teacher; "
        "on the tiny Wan the decode is most of a video's time, so the end-to-end ratio is small."
    )
    print(
        f"\nTargets: our FM consistency loop / diffusers' FlowMatchLCMScheduler loop worst case {loop_ratio:.2f} "
        f"(target <= 1, 5% noise allowance: {'met' if targets['loop_ratio_met'] else 'MISSED'}); sampled latents "
        f"equal to {worst_latents:.1e} (target 1e-5: {'met' if targets['parity_met'] else 'MISSED'}), decoded videos "
        f"to {worst:.1e} (our causal decode loop vs AutoencoderKLWan.decode: float summation order); 4-step student "
        f"{speedup4:.1f}x faster than the {a.teacher_steps}-step Euler + CFG teacher per video (VAE decode included)."
    )
    payload = {"benchmark": "inference_fm", "machine": info, "threads": threads, "models": note, "batch": batch,
               "repeats": repeats, "w": w, "teacher_cfg_scale": 1 + w, "seconds_per_video": per_video,
               "raw_seconds": times, "parity_max_abs_diff": parity, "parity_latents_max_abs_diff": parity_latents,
               "targets": targets, "table": table, "breakdown": breakdown}  # fmt: skip
    print(f"\nwrote {C.write_json('inference_fm', payload)}")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--family", choices=["md", "fm"], default="md",
                   help="md: the MovingDigits (DDPM) models; fm: flow matching on the tiny Wan2.1")  # fmt: skip
    p.add_argument("--fm-frames", type=int, default=17, help="--family fm: frames (4k + 1)")
    p.add_argument("--fm-size", type=int, default=64, help="--family fm: height = width (multiple of 16)")
    p.add_argument("--fm-w", type=float, default=4.0, help="--family fm: the student's w (teacher cfg 1 + w)")
    p.add_argument("--quick", action="store_true", help="fewer prompts and repeats")
    p.add_argument("--batch", type=int, default=None, help="videos per generate call (default 8; quick 4)")
    p.add_argument("--repeats", type=int, default=None, help="timed rounds (default 5; quick 2)")
    p.add_argument("--teacher-steps", type=int, default=50)
    p.add_argument("--guidance", type=float, default=7.5, help="student w; the teacher uses CFG 1 + w")
    p.add_argument("--threads", type=int, default=None)
    a = p.parse_args(argv)
    if a.family == "fm":
        return main_fm(a)
    from t2v_turbo.pipeline import generate

    threads = C.set_threads(a.threads)
    batch = a.batch or (4 if a.quick else 8)
    repeats = a.repeats or (2 if a.quick else 5)
    info = C.machine()
    teacher, student, note = C.load_models("turbo")
    prompts = C.md_prompts(batch)

    fns = {
        f"teacher-ddim{a.teacher_steps}-cfg": lambda: generate(
            teacher, prompts, a.teacher_steps, 1 + a.guidance, 0
        )
    }
    for n in STEPS:
        fns[f"turbo-{n}"] = lambda n=n: generate(student, prompts, n, a.guidance, 0)
        fns[f"diffusers-lcm-{n}"] = lambda n=n: diffusers_lcm_generate(student, prompts, n, a.guidance, 0)
    # components, for the breakdown of where the time goes
    cond = student.encode_prompt(prompts)
    z = torch.randn(student.latent_shape(batch))
    tb = torch.full((batch,), 999)
    w_emb = student.w_embedding(a.guidance, batch)
    t_cond = teacher.encode_prompt(prompts)
    both = torch.cat([t_cond, teacher.encode_prompt([""]).expand_as(t_cond)])
    parts = {
        "part: text encoder (B prompts)": lambda: student.encode_prompt(prompts),
        "part: student UNet call (B)": lambda: student.model_output(z, tb, cond, w_emb),
        "part: teacher UNet call, CFG batch (2B)": lambda: teacher.model_output(
            torch.cat([z, z]), torch.cat([tb, tb]), both
        ),
        "part: VAE decode (B videos)": lambda: student.decode_latents(z),
    }
    fns.update({k: torch.no_grad()(f) for k, f in parts.items()})
    bar = tqdm(total=repeats * len(fns), desc="inference rounds")
    times = C.interleaved_timings(fns, repeats, warmup=1, progress=bar)
    bar.close()

    parity = {}
    for n in STEPS:
        ours = generate(student, prompts, n, a.guidance, 0).videos
        theirs = diffusers_lcm_generate(student, prompts, n, a.guidance, 0)
        parity[n] = float((ours - theirs).abs().max())

    per_video = {k: C.median(v) / batch for k, v in times.items()}
    teacher_key = f"teacher-ddim{a.teacher_steps}-cfg"
    t_teacher = per_video[teacher_key]
    rows, records = [], []
    evals = {teacher_key: 2 * a.teacher_steps}
    rows.append([teacher_key, a.teacher_steps, 2 * a.teacher_steps, t_teacher, 1.0, "-", "-"])
    for n in STEPS:
        ours, theirs = per_video[f"turbo-{n}"], per_video[f"diffusers-lcm-{n}"]
        rows.append([f"turbo-{n}", n, n, ours, t_teacher / ours, ours / theirs, f"{parity[n]:.1e}"])
        rows.append([f"diffusers-lcm-{n}", n, n, theirs, t_teacher / theirs, 1.0, "-"])
        evals[f"turbo-{n}"] = evals[f"diffusers-lcm-{n}"] = n
    for k, v in times.items():
        if k.startswith("part: "):
            continue
        records.append(
            {
                "config": k,
                "seconds_per_video": per_video[k],
                "unet_evals_per_video": evals[k],
                "raw_seconds": v,
            }
        )
    headers = [
        "config",
        "steps",
        "UNet evals/video",
        "s/video (median)",
        f"speed-up vs teacher {a.teacher_steps}-step CFG",
        "time vs diffusers LCM loop (same steps)",
        "max |ours - diffusers|",
    ]
    table = C.markdown(headers, rows)
    speedup4 = t_teacher / per_video["turbo-4"]
    loop_ratio = max(per_video[f"turbo-{n}"] / per_video[f"diffusers-lcm-{n}"] for n in STEPS)
    targets = {
        "turbo4_speedup_vs_teacher": speedup4,
        "turbo4_speedup_target": 15.0,
        "turbo4_speedup_met": speedup4 >= 15.0,
        "worst_loop_time_ratio_vs_diffusers": loop_ratio,
        "loop_ratio_target": 1.0,
        "loop_ratio_met": loop_ratio <= 1.05,  # within timing noise
    }
    print(f"\n## Inference: {batch} videos per call, {repeats} interleaved rounds, median\n")
    print(f"Machine: {C.machine_line(info)}. Models: {note}.\n")
    print(table)
    part_rows = [[k.removeprefix("part: "), per_video[k] * batch, per_video[k]] for k in parts]
    a4 = sum(per_video[k] for k in parts) - per_video["part: teacher UNet call, CFG batch (2B)"]
    model_4 = a4 + 3 * per_video["part: student UNet call (B)"]
    model_t = (
        2 * per_video["part: text encoder (B prompts)"]
        + a.teacher_steps * per_video["part: teacher UNet call, CFG batch (2B)"]
        + per_video["part: VAE decode (B videos)"]
    )
    breakdown = C.markdown(["component", "s per call (median)", "s per video"], part_rows)
    print("\nWhere the time goes:\n")
    print(breakdown)
    print(
        f"\nSum of parts: 4-step T2V-Turbo {model_4:.4f} s/video (measured {per_video['turbo-4']:.4f}); "
        f"teacher {model_t:.4f} s/video (measured {t_teacher:.4f}). A CFG step batches cond + uncond, so it "
        f"costs {per_video['part: teacher UNet call, CFG batch (2B)'] / per_video['part: student UNet call (B)']:.2f}x "
        "a student step, not 2x: the ideal speed-up is below the 25x ratio of UNet evaluations."
    )
    print(
        f"\nTargets: 4-step T2V-Turbo {speedup4:.1f}x faster than the {a.teacher_steps}-step CFG teacher "
        f"(target >= 15x: {'met' if targets['turbo4_speedup_met'] else 'MISSED'}); our loop / diffusers' "
        f"loop worst case {loop_ratio:.2f} (target <= 1, 5% noise allowance: "
        f"{'met' if targets['loop_ratio_met'] else 'MISSED'})."
    )
    payload = {
        "benchmark": "inference",
        "machine": info,
        "threads": threads,
        "models": note,
        "batch": batch,
        "repeats": repeats,
        "guidance": a.guidance,
        "teacher_guidance": 1 + a.guidance,
        "results": records,
        "parity_max_abs_diff": parity,
        "targets": targets,
        "table": table,
        "breakdown": breakdown,
    }
    print(f"\nwrote {C.write_json('inference', payload)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
