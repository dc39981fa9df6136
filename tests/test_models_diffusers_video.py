import pytest
import torch

from t2v_turbo.errors import CheckpointError
from t2v_turbo.models.base import guidance_to_w
from t2v_turbo.models.diffusers_video import DiffusersVideoBackbone
from t2v_turbo.models.lora import add_lora, lora_target_names, merge_lora


def _inputs(model, b=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(model.latent_shape(b), generator=g)
    t = torch.tensor([999, 250][:b])
    cond = model.encode_prompt(["a red digit 7 moving left", "a cyan digit 0 moving up"][:b])
    return z, t, cond


def test_student_zero_init_equals_teacher(tiny_teacher):
    student = tiny_teacher.make_student(256, init="zero")
    z, t, cond = _inputs(tiny_teacher)
    with torch.no_grad():
        a = tiny_teacher.model_output(z, t, cond)
        b = student.model_output(z, t, cond, student.w_embedding(7.5, 2))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert student.w_embedding_dim == 256 and tiny_teacher.w_embedding_dim is None
    assert student.unet.time_embedding.cond_proj.weight.shape[1] == 256


def test_student_normal_init_is_seeded(tiny_teacher):
    s1 = tiny_teacher.make_student(256, init="normal", seed=3)
    s2 = tiny_teacher.make_student(256, init="normal", seed=3)
    s3 = tiny_teacher.make_student(256, init="normal", seed=4)
    w1, w2, w3 = (s.unet.time_embedding.cond_proj.weight for s in (s1, s2, s3))
    assert torch.equal(w1, w2) and not torch.equal(w1, w3) and w1.abs().sum() > 0
    # teacher weights are copied exactly
    student_params = dict(s1.unet.named_parameters())
    assert set(student_params) - set(dict(tiny_teacher.unet.named_parameters())) == {
        "time_embedding.cond_proj.weight"
    }
    for n, p in tiny_teacher.unet.named_parameters():
        assert torch.equal(p, student_params[n])
    with pytest.raises(ValueError, match="valid"):
        tiny_teacher.make_student(init="xavier")


def test_teacher_rejects_w_embedding(tiny_teacher):
    z, t, cond = _inputs(tiny_teacher)
    with pytest.raises(ValueError, match="teacher"):
        tiny_teacher.model_output(z, t, cond, torch.zeros(2, 256))


def test_gradient_checkpointing_same_outputs_and_grads(tiny_teacher):
    student = tiny_teacher.make_student(256, init="normal")
    student.eval()  # the temporal convs have dropout 0.1; compare deterministic passes
    z, t, cond = _inputs(student)
    w = student.w_embedding(5.0, 2)

    def run():
        student.unet.zero_grad(set_to_none=True)
        out = student.model_output(z, t, cond, w)
        out.square().mean().backward()
        return out.detach(), [p.grad.clone() for p in student.unet.parameters()]

    o1, g1 = run()
    student.enable_gradient_checkpointing(True)
    o2, g2 = run()
    student.enable_gradient_checkpointing(False)
    torch.testing.assert_close(o1, o2, rtol=0, atol=0)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_lora_targets_by_type_and_merge(tiny_teacher):
    student = tiny_teacher.make_student(256, init="normal")
    names = lora_target_names(student.unet)
    kinds = {type(student.unet.get_submodule(n)).__name__ for n in names}
    assert kinds == {"Linear", "Conv2d", "Conv3d"}
    assert any(n.endswith("conv1") for n in names) and "time_embedding.cond_proj" in names
    add_lora(student.unet, rank=4, dropout=0.1)
    n_lora = sum(p.numel() for p in student.trainable_parameters())
    assert n_lora > 0 and all("lora_" in n for n, p in student.unet.named_parameters() if p.requires_grad)
    # make LoRA non-trivial, then merged output == LoRA output
    with torch.no_grad():
        for n, p in student.unet.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    student.eval()
    z, t, cond = _inputs(student)
    w = student.w_embedding(7.5, 2)
    with torch.no_grad():
        before = student.model_output(z, t, cond, w)
        merge_lora(student.unet)
        after = student.model_output(z, t, cond, w)
    torch.testing.assert_close(before, after, rtol=1e-4, atol=1e-5)
    assert not any("lora_" in n for n, _ in student.unet.named_parameters())


def test_decode_subset_and_checkpointed_grad(tiny_teacher):
    z = torch.randn(tiny_teacher.latent_shape(1), requires_grad=True)
    full = tiny_teacher.decode_latents(z)
    part = tiny_teacher.decode_latents(z, frames=[1, 3])
    torch.testing.assert_close(part, full[:, :, [1, 3]], rtol=1e-5, atol=1e-6)
    (g1,) = torch.autograd.grad(tiny_teacher.decode_latents(z, [0, 2]).sum(), z)
    (g2,) = torch.autograd.grad(tiny_teacher.decode_latents(z, [0, 2], checkpoint=True).sum(), z)
    torch.testing.assert_close(g1, g2, rtol=1e-5, atol=1e-6)
    assert g1[:, :, [1, 3]].abs().sum() == 0 and g1[:, :, [0, 2]].abs().sum() > 0


def test_encode_video_scaled_posterior(tiny_teacher):
    video = torch.rand(1, 3, 4, 16, 16) * 2 - 1
    z1 = tiny_teacher.encode_video(video, torch.Generator().manual_seed(0))
    z2 = tiny_teacher.encode_video(video, torch.Generator().manual_seed(0))
    assert torch.equal(z1, z2) and z1.shape == tiny_teacher.latent_shape(1)
    mean = tiny_teacher.vae.encode(video[:, :, 0]).latent_dist.mean * tiny_teacher.scaling_factor
    assert (z1[:, :, 0] - mean).abs().max() < 3 * tiny_teacher.scaling_factor * 10


def test_save_load_round_trip(tmp_path, tiny_teacher):
    student = tiny_teacher.make_student(256, init="normal")
    student.add_lora(rank=2)
    student.save_pretrained(tmp_path / "m")
    loaded = DiffusersVideoBackbone.from_pretrained(tmp_path / "m")
    assert loaded.w_embedding_dim == 256 and loaded.guidance_convention == "t2v-turbo"
    z, t, cond = _inputs(student)
    with torch.no_grad():
        merge_lora(student.unet)
        a = student.model_output(z, t, cond, student.w_embedding(7.5, 2))
        b = loaded.model_output(
            z,
            t,
            loaded.encode_prompt(["a red digit 7 moving left", "a cyan digit 0 moving up"]),
            loaded.w_embedding(7.5, 2),
        )
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(CheckpointError, match="the UNet config is missing"):
        DiffusersVideoBackbone.from_pretrained(tmp_path / "m" / "unet")


def test_guidance_conventions():
    assert guidance_to_w(7.5, "t2v-turbo") == 7.5
    assert guidance_to_w(7.5, "diffusers-lcm") == 6.5
    with pytest.raises(ValueError, match="valid"):
        guidance_to_w(1.0, "other")
