"""Method properties of the networks, on tiny configs (fast)."""

from __future__ import annotations

import pytest
import torch

from codeformer.models.codeformer import CodeFormer
from codeformer.models.discriminator import PatchDiscriminator
from codeformer.models.fusion import adain
from codeformer.models.quantizer import VectorQuantizer
from codeformer.models.vqgan import VQAutoEncoder
from tests.conftest import TINY_CODEFORMER, TINY_VQGAN


def tiny_codeformer(seed: int = 0) -> CodeFormer:
    torch.manual_seed(seed)
    model = CodeFormer(**TINY_CODEFORMER).eval()
    with torch.no_grad():  # a spread-out codebook, as a trained one is, so codes differ between inputs
        model.quantize.embedding.weight.normal_()
    return model


def images(n: int, size: int = 32, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g) * 2 - 1


def test_released_parameter_counts():
    # spec §1.10: derived counts that match the official key list
    assert sum(p.numel() for p in CodeFormer().parameters()) == 94_112_707
    assert sum(p.numel() for p in VQAutoEncoder().parameters()) == 63_740_099
    assert sum(p.numel() for p in PatchDiscriminator().parameters()) == 6_960_961


def test_quantized_value_is_lookup_of_its_indices():
    q = VectorQuantizer(16, 32)
    torch.nn.init.normal_(q.embedding.weight)
    z = torch.randn(2, 32, 4, 4)
    res = q(z)
    assert torch.allclose(res.z_q, q.lookup(res.indices), atol=1e-6)
    # the index is the nearest code: brute-force distances agree
    flat = z.permute(0, 2, 3, 1).reshape(-1, 32)
    brute = torch.cdist(flat, q.embedding.weight).argmin(1)
    assert torch.equal(brute, res.indices.flatten())
    assert (res.margin >= 0).all()


def test_straight_through_passes_gradient_unchanged():
    q = VectorQuantizer(16, 32)
    z = torch.randn(2, 32, 4, 4, requires_grad=True)
    upstream = torch.randn(2, 32, 4, 4)
    (q(z).z_q * upstream).sum().backward()
    assert torch.equal(z.grad, upstream)


@pytest.mark.parametrize("placement", ["official", "paper"])
def test_code_loss_terms_move_only_their_side(placement):
    q = VectorQuantizer(16, 32, beta=0.25, beta_placement=placement)
    z = torch.randn(2, 32, 4, 4, requires_grad=True)
    e = q.lookup(q(z.detach()).indices)
    codebook_term = torch.mean((z.detach() - e) ** 2)
    commitment_term = torch.mean((z - e.detach()) ** 2)
    # codebook term: gradient on the codebook only
    g_cb = torch.autograd.grad(codebook_term, [q.embedding.weight, z], allow_unused=True)
    assert g_cb[0].abs().sum() > 0 and g_cb[1] is None
    # commitment term: gradient on the encoder output only
    g_cm = torch.autograd.grad(commitment_term, [q.embedding.weight, z], allow_unused=True)
    assert g_cm[0] is None and g_cm[1].abs().sum() > 0
    # the β placement, as documented
    loss = q.code_loss(z, e)
    expected = (commitment_term + 0.25 * codebook_term) if placement == "official" else (
        codebook_term + 0.25 * commitment_term)
    assert torch.allclose(loss, expected)


def test_bad_beta_placement_is_rejected():
    with pytest.raises(ValueError, match="beta_placement"):
        VectorQuantizer(16, 32, beta_placement="swapped")


def test_vqgan_shapes_and_gradient_reaches_encoder():
    model = VQAutoEncoder(**TINY_VQGAN)
    x = images(2)
    res = model(x)
    assert res.out.shape == x.shape and res.z.shape == (2, 32, 8, 8) and res.quant.indices.shape == (2, 8, 8)
    (res.out.abs().mean() + res.quant.loss).backward()
    assert model.encoder.blocks[0].weight.grad.abs().sum() > 0
    assert model.quantize.embedding.weight.grad.abs().sum() > 0


def test_w0_equals_network_without_fusion():
    model = tiny_codeformer()
    x = images(2)
    out = model.restore(x, w=0.0)
    with torch.no_grad():
        lq_feat = model.encoder(x)
        latent = adain(model.codes_to_latent(model.code_logits(lq_feat)), lq_feat)
        plain = model.generator(latent)  # the generator alone, no fusion blocks anywhere
        zero_tensor = model.restore(x, w=torch.zeros(2))  # fusion blocks run, times zero
    assert torch.equal(out, plain)
    assert torch.allclose(zero_tensor, plain, atol=1e-6)


def test_fidelity_knob_changes_output_monotonically():
    model = tiny_codeformer()
    x = images(1)
    base = model.restore(x, w=0.0)
    changes = [float((model.restore(x, w=w) - base).abs().mean()) for w in (0.25, 0.5, 0.75, 1.0)]
    assert changes[0] > 1e-4  # the knob is alive
    assert all(a < b for a, b in zip(changes, changes[1:], strict=False)), changes


def test_batch_equals_single_calls():
    model = tiny_codeformer()
    x = images(3)
    batched = model.restore(x, w=0.5)
    singles = torch.cat([model.restore(x[i:i + 1], w=0.5) for i in range(3)])
    assert torch.allclose(batched, singles, atol=1e-5)


def test_per_sample_w_tensor_equals_separate_calls():
    model = tiny_codeformer()
    x = images(2)
    out = model.restore(x, w=torch.tensor([0.2, 0.9]))
    assert torch.allclose(out[0:1], model.restore(x[0:1], w=0.2), atol=1e-5)
    assert torch.allclose(out[1:2], model.restore(x[1:2], w=0.9), atol=1e-5)


def test_predict_codes_matches_forward_and_fusion_gets_no_gradient():
    model = tiny_codeformer().train()
    x = images(2)
    logits, lq_feat = model.predict_codes(x)
    assert logits.shape == (2, 64, 16) and lq_feat.shape == (2, 32, 8, 8)
    logits.sum().backward()
    assert all(p.grad is None for p in model.fuse_convs_dict.parameters())
    assert all(p.grad is None for p in model.generator.parameters())
    assert model.feat_emb.weight.grad is not None and model.encoder.blocks[0].weight.grad is not None


def test_fusion_loss_does_not_reach_encoder_through_skips():
    """Every parameter trainable: a loss on the output trains the fusion blocks, and reaches no encoder weight
    (the looked-up latent is detached, so the skips are the only way back; they must be detached too)."""
    model = tiny_codeformer().train()
    assert all(p.requires_grad for p in model.parameters())
    out = model(images(1), w=1.0).out  # adain_latent off (training): lq_feat does not reach the output
    out.mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.fuse_convs_dict.parameters())
    reached = [name for name, p in model.encoder.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0]
    assert reached == []


def test_position_embedding_on_queries_and_keys_only():
    model = tiny_codeformer()
    layer = model.ft_layers[0]
    x = torch.randn(1, 64, 32)
    pos = torch.randn(64, 32)
    h = layer.norm1(x)
    # rebuild the attention by hand: q, k from h + pos, v from h
    w_q, w_k, w_v = layer.self_attn.in_proj_weight.chunk(3)
    b_q, b_k, b_v = layer.self_attn.in_proj_bias.chunk(3)
    heads = layer.self_attn.n_head

    def split(t):
        return t.view(1, 64, heads, -1).transpose(1, 2)

    q, k, v = split((h + pos) @ w_q.t() + b_q), split((h + pos) @ w_k.t() + b_k), split(h @ w_v.t() + b_v)
    att = torch.softmax(q @ k.transpose(-1, -2) / (32 // heads) ** 0.5, -1) @ v
    y = x + layer.self_attn.out_proj(att.transpose(1, 2).reshape(1, 64, 32))
    y = y + layer.linear2(torch.nn.functional.gelu(layer.linear1(layer.norm2(y))))
    assert torch.allclose(layer(x, pos), y, atol=1e-5)


def test_discriminator_patch_map_shape():
    d = PatchDiscriminator(ndf=8, n_layers=4)
    assert d(torch.zeros(2, 3, 512, 512)).shape == (2, 1, 30, 30)


def test_invalid_constructor_arguments():
    with pytest.raises(ValueError, match="latent_size"):
        CodeFormer(**{**TINY_CODEFORMER, "latent_size": 256})
    with pytest.raises(ValueError, match="connect_list"):
        CodeFormer(**{**TINY_CODEFORMER, "connect_list": (64,)})


def test_public_api_names_resolve():
    import codeformer

    for name in codeformer.__all__:
        assert getattr(codeformer, name) is not None
    with pytest.raises(AttributeError):
        codeformer.not_a_name  # noqa: B018
