"""The hierarchical fusion module against the paper's equations, written out as loops."""

import torch
import torch.nn.functional as F

from hlora_mer.config import FusionConfig
from hlora_mer.models.fusion import InterFrameAggregator, build_fusion, pool_map


def reference_iffa(feats, weight, mask):
    """Eq. 8-10 for one clip, one frame and one neighbour at a time."""
    t = feats.shape[0]
    f = feats @ weight.T
    out = torch.zeros_like(f)
    attn = torch.zeros(t, t)
    for i in range(t):
        neigh = [j for j in range(t) if mask[i, j]]
        edges = torch.stack([weight @ (feats[i] - feats[j]) for j in neigh])  # e'_ij = W e_ij
        logits = torch.stack([F.relu(f[i] + edges[n]) for n in range(len(neigh))])
        a = torch.exp(logits) / torch.exp(logits).sum(0)
        out[i] = F.relu((a * edges).sum(0))
        for n, j in enumerate(neigh):
            attn[i, j] = a[n].mean()
    return out, attn


def test_iffa_matches_the_equations():
    torch.manual_seed(0)
    iffa = InterFrameAggregator(dim=6, out_dim=5, num_frames=8, num_neighbors=3)
    feats = torch.randn(2, 8, 6)
    out, attn = iffa(feats)
    mask = iffa.neighbours(iffa.proj(feats))
    for b in range(2):
        ref_out, ref_attn = reference_iffa(feats[b], iffa.proj.weight, mask[b])
        torch.testing.assert_close(out[b], ref_out)
        torch.testing.assert_close(attn[b], ref_attn)


def test_iffa_neighbours_are_the_nearest_frames_without_self():
    iffa = InterFrameAggregator(dim=1, out_dim=1, num_frames=5, num_neighbors=2)
    f = torch.tensor([0.0, 1.0, 3.0, 7.0, 15.0]).view(1, 5, 1)
    mask = iffa.neighbours(f)[0]
    expected = torch.tensor(
        [[0, 1, 1, 0, 0], [1, 0, 1, 0, 0], [1, 1, 0, 0, 0], [0, 1, 1, 0, 0], [0, 0, 1, 1, 0]], dtype=torch.bool
    )
    assert torch.equal(mask, expected)


def test_iffa_attention_rows_sum_to_one_over_neighbours_only():
    torch.manual_seed(1)
    iffa = InterFrameAggregator(dim=16, out_dim=16, num_frames=8, num_neighbors=4)
    feats = torch.randn(3, 8, 16) * 3
    _, attn = iffa(feats)
    mask = iffa.neighbours(iffa.proj(feats))
    torch.testing.assert_close(attn.sum(-1), torch.ones(3, 8))
    assert torch.all(attn[~mask] == 0)
    assert torch.all(mask.sum(-1) == 4)


def test_official_gat_uses_the_adjacent_frame_chain():
    fusion = build_fusion(FusionConfig(iffa="official", variant="no_stfa"), dim=12, num_frames=6)
    _, attn = fusion(torch.randn(2, 6, 12))
    chain = (torch.arange(6)[:, None] - torch.arange(6)[None, :]).abs() <= 1
    assert torch.all(attn[:, ~chain] == 0)
    torch.testing.assert_close(attn.sum(-1), torch.ones(2, 6))


def test_official_dimensions_reproduce_the_official_head_width():
    # The official code: Linear(1531, 3) after strided max pooling of d = 1536 features over T = 8.
    fusion = build_fusion(FusionConfig(iffa="official", pooling="strided"), dim=1536, num_frames=8)
    assert fusion.out_features == 1531


def test_stfa_is_one_half_t_convolution_then_relu():
    fusion = build_fusion(FusionConfig(variant="no_iffa", pooling="max"), dim=10, num_frames=8)
    stfa = fusion.stfa
    assert stfa.conv.kernel_size == (4, 4)
    feats = torch.randn(2, 8, 10)
    expected = F.relu(F.conv2d(feats.transpose(1, 2).unsqueeze(1), stfa.conv.weight, stfa.conv.bias)).amax(-1)
    out, attention = fusion(feats)
    torch.testing.assert_close(out, expected.flatten(1))
    assert attention is None
    assert out.shape == (2, fusion.out_features) == (2, 7)


def test_pooling_modes():
    x = torch.arange(2 * 1 * 6 * 3, dtype=torch.float).view(2, 1, 6, 3)
    torch.testing.assert_close(pool_map(x, "max"), x[..., -1].flatten(1))
    torch.testing.assert_close(pool_map(x, "mean"), x[..., 1].flatten(1))
    # windows of 5 channels, stride 2, over all of time: channels 0-4 only (6 channels -> 1 window)
    torch.testing.assert_close(pool_map(x, "strided"), x[:, :, 4, -1])


def test_variants_have_the_right_branches():
    dims = {"full": (True, True), "no_stfa": (True, False), "no_iffa": (False, True)}
    for variant, (has_iffa, has_stfa) in dims.items():
        fusion = build_fusion(FusionConfig(variant=variant), dim=8, num_frames=8)
        assert (fusion.iffa is not None, fusion.stfa is not None) == (has_iffa, has_stfa)
    none = build_fusion(FusionConfig(variant="none"), dim=8, num_frames=8)
    feats = torch.randn(2, 8, 8)
    torch.testing.assert_close(none(feats)[0], feats.mean(1))
