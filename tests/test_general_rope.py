"""The general rotary form P blockdiag(R) P^T (rope_general): a relative encoding for any
orthogonal P, exactly RoPE-Mixed at P = I, and exactly RoPE-Mixed with P^T absorbed into W_q, W_k."""

import pytest
import torch

from vit_rope import create_model
from vit_rope.layers.rope_embed import Rotary, cayley
from vit_rope.layers.rotary import apply_rotary, grid_positions
from vit_rope.models.encodings import RopeGeneral

D, HEADS, DEPTH = 16, 2, 2
KW = dict(num_classes=3, img_size=32, patch_size=8, embed_dim=D * HEADS, depth=DEPTH, num_heads=HEADS)


def random_general(seed=0):
    torch.manual_seed(seed)
    model = create_model("vit_micro", "rope_general", **KW)
    with torch.no_grad():
        model.rope.basis_params.normal_(0, 0.5)
        for blk in model.blocks:  # attention that depends on position strongly enough to see
            blk.attn.qkv.weight.mul_(4)
    return model.eval()


def test_cayley_basis_is_orthogonal_and_identity_at_zero():
    S = torch.randn(3, 2, D, D)
    P = cayley(S)
    torch.testing.assert_close(P @ P.transpose(-1, -2), torch.eye(D).expand_as(P), atol=1e-5, rtol=0)
    assert torch.equal(cayley(torch.zeros(2, D, D)), torch.eye(D).expand(2, D, D))


def test_relative_position_identity_and_norms_for_a_random_basis():
    rope = Rotary(RopeGeneral(), D, HEADS, DEPTH, (4, 5), num_prefix_tokens=0)
    with torch.no_grad():
        rope.basis_params.normal_(0, 0.5)
    angles = rope.angles((4, 5))
    tables = rope.layer_tables(angles, 1, rope.basis())
    q, k = torch.randn(HEADS, 1, D), torch.randn(HEADS, 1, D)
    qs = apply_rotary((q @ tables.basis).expand(HEADS, 20, D), tables.cos, tables.sin)
    ks = apply_rotary((k @ tables.basis).expand(HEADS, 20, D), tables.cos, tables.sin)
    torch.testing.assert_close(qs.norm(dim=-1), q.norm(dim=-1).expand(HEADS, 20), atol=1e-5, rtol=1e-5)
    idx = {tuple(p): i for i, p in enumerate(grid_positions((4, 5)).long().tolist())}
    a = (qs[:, idx[(0, 0)]] * ks[:, idx[(2, 1)]]).sum(-1)  # offset (+2, +1)
    b = (qs[:, idx[(1, 2)]] * ks[:, idx[(3, 3)]]).sum(-1)  # the same offset elsewhere
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    c = (qs[:, idx[(0, 0)]] * ks[:, idx[(1, 2)]]).sum(-1)  # another offset: another score
    assert not torch.allclose(a, c, atol=1e-3)


@pytest.mark.parametrize("learn_basis", [True, False])
def test_identity_basis_reproduces_rope_mixed_exactly(learn_basis):
    x = torch.randn(2, 3, 48, 40)
    torch.manual_seed(0)
    general = create_model("vit_micro", "rope_general", pos_options={"learn_basis": learn_basis}, **KW)
    torch.manual_seed(0)
    mixed = create_model("vit_micro", "rope_mixed", **KW)
    assert torch.equal(general(x), mixed(x))
    assert (general.rope.basis_params is not None) == learn_basis


def test_the_basis_is_absorbed_by_w_q_and_w_k():
    """Su's completeness argument, exactly: rope_general with basis P gives the logits of
    rope_mixed whose W_q and W_k (and biases) are multiplied by P^T per head."""
    general = random_general()
    torch.manual_seed(1)
    mixed = create_model("vit_micro", "rope_mixed", **KW).eval()
    state = {k: v.clone() for k, v in general.state_dict().items() if "basis_params" not in k}
    P = general.rope.basis().detach()  # (depth, heads, d, d)
    C = D * HEADS
    for layer in range(DEPTH):
        w = state[f"blocks.{layer}.attn.qkv.weight"]  # (3C, C): rows q | k | v, head by head
        b = state[f"blocks.{layer}.attn.qkv.bias"]
        for part in (0, 1):  # q and k
            for h in range(HEADS):
                rows = slice(part * C + h * D, part * C + (h + 1) * D)
                w[rows] = P[layer, h].T @ w[rows]
                b[rows] = P[layer, h].T @ b[rows]
    mixed.load_state_dict(state)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(mixed(x), general(x), atol=1e-4, rtol=1e-4)
        assert not torch.allclose(mixed(x), create_model("vit_micro", "rope_mixed", **KW).eval()(x), atol=1e-3)


def test_basis_gets_gradients_and_no_weight_decay():
    model = random_general().train()
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    assert model.rope.basis_params.grad is not None and model.rope.basis_params.grad.abs().sum() > 0
    assert "rope.basis_params" in model.no_weight_decay()


def test_head_dim_that_cannot_split_is_a_clear_error():
    from vit_rope.errors import PositionConfigError

    with pytest.raises(PositionConfigError, match="Head dimension 6 cannot be split for RoPE-Mixed"):
        create_model("vit_micro", "rope_general", num_classes=2, img_size=32, patch_size=8, embed_dim=12, num_heads=2)
