"""Hierarchical fusion module (HFM, paper section 3.2) over per-frame features ``(B, T, d)``.

- :class:`InterFrameAggregator` (IFFA, eq. 8-11): a directed graph over the T frames whose neighbour
  sets are chosen per clip in the learned feature space; channel-wise attention over edge features.
- :class:`ChainGraphAttention`: the official code's IFFA, a two-layer multi-head graph attention
  network (Velickovic et al., "Graph Attention Networks", 2018) over a fixed chain of adjacent frames.
- :class:`SpatioTemporalAggregator` (STFA, eq. 12): the d x T feature map, one (T/2 x T/2)
  convolution, ReLU.
- :class:`HierarchicalFusion` (eq. 13): pool each branch, concatenate; the linear layer g is the head
  of :class:`~hlora_mer.models.mer_model.MERModel`.

Every size derives from d and T. Branch outputs are ``(B, C, D, T')`` maps pooled by :func:`pool_map`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hlora_mer.config import FusionConfig
from hlora_mer.errors import ConfigError

# The official code's pooling window over channels (MaxPool2d kernel (5, T'), stride (2, 1)).
_STRIDED_WINDOW = 5
_STRIDED_STRIDE = 2


def pool_map(x: torch.Tensor, mode: str) -> torch.Tensor:
    """Pool a ``(B, C, D, T')`` map over time into ``(B, F)`` features."""
    if mode == "max":
        return x.amax(dim=-1).flatten(1)  # (B, C*D)
    if mode == "mean":
        return x.mean(dim=-1).flatten(1)  # (B, C*D)
    if mode == "strided":
        window = min(_STRIDED_WINDOW, x.shape[2])
        pooled = F.max_pool2d(x, kernel_size=(window, x.shape[-1]), stride=(_STRIDED_STRIDE, 1))
        return pooled.flatten(1)  # (B, C*((D-window)//2+1))
    raise ValueError(f"unknown pooling {mode!r}; expected max, mean or strided")


def pooled_size(channels: int, dim: int, mode: str) -> int:
    """Length of :func:`pool_map`'s output for a ``(B, channels, dim, T')`` map."""
    if mode == "strided":
        window = min(_STRIDED_WINDOW, dim)
        return channels * ((dim - window) // _STRIDED_STRIDE + 1)
    return channels * dim


class InterFrameAggregator(nn.Module):
    """IFFA as written in the paper (eq. 8-11), batched over clips.

    f'_i = W F_i and e'_ij = W (F_i - F_j) = f'_i - f'_j (W is linear, without bias);
    a_ij = softmax_{j in N_i} ReLU(f'_i + e'_ij), channel-wise; F'_i = ReLU(sum_j a_ij * e'_ij).

    N_i holds the ``num_neighbors`` frames nearest to frame i in the learned space f' (self excluded,
    since e'_ii = 0 carries nothing): the graph is chosen per clip from the features rather than
    fixed to adjacent frames. The selection itself is not differentiated; W is learned through a_ij.
    """

    def __init__(self, dim: int, out_dim: int, num_frames: int, num_neighbors: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, out_dim, bias=False)  # W in eq. 8
        if not 1 <= num_neighbors <= num_frames - 1:
            raise ConfigError(
                f"fusion.num_neighbors={num_neighbors} does not fit a clip of {num_frames} frames: each frame has "
                f"{num_frames - 1} other frames; use 1 <= fusion.num_neighbors <= {num_frames - 1}"
            )
        self.num_neighbors = num_neighbors
        self.out_dim = out_dim

    def neighbours(self, f: torch.Tensor) -> torch.Tensor:
        """``(B, T, D') -> (B, T, T)`` boolean mask, row i marking N_i."""
        dist = torch.cdist(f, f)  # (B, T, T)
        dist = dist + torch.diag_embed(torch.full_like(dist[..., 0], float("inf")))  # exclude self
        nearest = dist.topk(self.num_neighbors, dim=-1, largest=False).indices  # (B, T, k)
        return torch.zeros_like(dist, dtype=torch.bool).scatter_(-1, nearest, True)

    def forward(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, T, d) -> (B, T, D')`` inter-frame features and the ``(B, T, T)`` attention map."""
        f = self.proj(feats)  # (B, T, D')
        edges = f.unsqueeze(2) - f.unsqueeze(1)  # (B, T, T, D'): e'_ij
        mask = self.neighbours(f.detach())  # (B, T, T)
        logits = F.relu(f.unsqueeze(2) + edges)  # (B, T, T, D')
        logits = logits.masked_fill(~mask.unsqueeze(-1), float("-inf"))
        attn = logits.softmax(dim=2)  # over j in N_i, per channel
        out = F.relu((attn * edges).sum(dim=2))  # (B, T, D')
        return out, attn.mean(dim=-1)  # channel-averaged map still sums to 1 over N_i


class GraphAttentionLayer(nn.Module):
    """One GAT head: e_ij = LeakyReLU(a^T [W h_i || W h_j]) masked by the adjacency, softmax over j."""

    def __init__(self, in_dim: int, out_dim: int, dropout: float, negative_slope: float) -> None:
        super().__init__()
        self.proj = nn.Linear(in_dim, out_dim, bias=False)
        self.att_src = nn.Parameter(torch.empty(out_dim))
        self.att_dst = nn.Parameter(torch.empty(out_dim))
        nn.init.xavier_uniform_(self.proj.weight, gain=1.414)
        bound = (6.0 / (out_dim + 1)) ** 0.5 * 1.414  # xavier-uniform bound of a (2*out, 1) matrix
        nn.init.uniform_(self.att_src, -bound, bound)
        nn.init.uniform_(self.att_dst, -bound, bound)
        self.dropout = nn.Dropout(dropout)
        self.negative_slope = negative_slope

    def forward(self, h: torch.Tensor, adjacency: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, T, in) -> (B, T, out)`` and the ``(B, T, T)`` attention."""
        wh = self.proj(h)  # (B, T, out)
        logits = (wh @ self.att_src).unsqueeze(2) + (wh @ self.att_dst).unsqueeze(1)  # (B, T, T)
        logits = F.leaky_relu(logits, self.negative_slope).masked_fill(~adjacency, float("-inf"))
        attn = logits.softmax(dim=-1)
        return self.dropout(attn) @ wh, attn


class ChainGraphAttention(nn.Module):
    """The official code's IFFA: multi-head GAT, then a single-head output GAT, over a frame chain.

    Unlike the official code, the output is not passed through ``log_softmax`` before being used as
    a feature (it is ELU-activated, as in the GAT paper's hidden layers).
    """

    def __init__(
        self, dim: int, out_dim: int, num_frames: int, heads: int, hidden: int, dropout: float, negative_slope: float
    ) -> None:
        super().__init__()
        idx = torch.arange(num_frames)
        self.register_buffer("adjacency", (idx[:, None] - idx[None, :]).abs() <= 1, persistent=False)  # (T, T)
        self.heads = nn.ModuleList(GraphAttentionLayer(dim, hidden, dropout, negative_slope) for _ in range(heads))
        self.out = GraphAttentionLayer(hidden * heads, out_dim, dropout, negative_slope)
        self.dropout = nn.Dropout(dropout)
        self.out_dim = out_dim

    def forward(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, T, d) -> (B, T, out_dim)`` and the heads' mean ``(B, T, T)`` attention."""
        x = self.dropout(feats)
        per_head = [head(x, self.adjacency) for head in self.heads]
        x = self.dropout(torch.cat([F.elu(h) for h, _ in per_head], dim=-1))  # (B, T, heads*hidden)
        x, _ = self.out(x, self.adjacency)
        attn = torch.stack([a for _, a in per_head]).mean(dim=0)  # (B, T, T)
        return F.elu(x), attn


class SpatioTemporalAggregator(nn.Module):
    """STFA (eq. 12): convolve the stacked d x T feature map with a (k x k) filter, then ReLU."""

    def __init__(self, channels: int, kernel: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, channels, kernel_size=(kernel, kernel))
        self.kernel = kernel
        self.channels = channels

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """``(B, T, d) -> (B, C, d-k+1, T-k+1)``."""
        fc = feats.transpose(1, 2).unsqueeze(1)  # (B, 1, d, T): F^c
        return F.relu(self.conv(fc))


class HierarchicalFusion(nn.Module):
    """IFFA and/or STFA, each pooled, concatenated (eq. 13 before g). ``(B, T, d) -> (B, out_features)``."""

    def __init__(
        self,
        iffa: InterFrameAggregator | ChainGraphAttention | None,
        stfa: SpatioTemporalAggregator | None,
        dim: int,
        num_frames: int,
        pooling: str,
    ) -> None:
        super().__init__()
        if iffa is None and stfa is None:
            raise ValueError("HierarchicalFusion needs at least one of IFFA and STFA")
        self.iffa = iffa
        self.stfa = stfa
        self.pooling = pooling
        self.out_features = 0
        if iffa is not None:
            self.out_features += pooled_size(1, iffa.out_dim, pooling)
        if stfa is not None:
            self.out_features += pooled_size(stfa.channels, dim - stfa.kernel + 1, pooling)

    def forward(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        parts, attention = [], None
        if self.iffa is not None:
            inter, attention = self.iffa(feats)  # (B, T, D'), (B, T, T)
            parts.append(pool_map(inter.transpose(1, 2).unsqueeze(1), self.pooling))  # from (B, 1, D', T)
        if self.stfa is not None:
            parts.append(pool_map(self.stfa(feats), self.pooling))
        return torch.cat(parts, dim=1), attention


class TemporalMean(nn.Module):
    """Table 9's "w/o HFM": the time-averaged frame features. ``(B, T, d) -> (B, d)``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.out_features = dim

    def forward(self, feats: torch.Tensor) -> tuple[torch.Tensor, None]:
        return feats.mean(dim=1), None


def build_fusion(cfg: FusionConfig, dim: int, num_frames: int) -> HierarchicalFusion | TemporalMean:
    """The fusion module of ``cfg`` for d = ``dim`` features over T = ``num_frames`` frames."""
    if cfg.variant == "none":
        return TemporalMean(dim)
    iffa: InterFrameAggregator | ChainGraphAttention | None = None
    stfa: SpatioTemporalAggregator | None = None
    if cfg.variant in ("full", "no_stfa"):
        out_dim = cfg.iffa_dim or dim
        if cfg.iffa == "paper":
            iffa = InterFrameAggregator(dim, out_dim, num_frames, cfg.num_neighbors or num_frames // 2)
        else:
            iffa = ChainGraphAttention(
                dim,
                out_dim,
                num_frames,
                cfg.gat_heads,
                cfg.gat_hidden or 2 * dim // 3,
                cfg.gat_dropout,
                cfg.gat_negative_slope,
            )
    if cfg.variant in ("full", "no_iffa"):
        kernel = cfg.stfa_kernel or max(1, num_frames // 2)
        if kernel > num_frames:
            raise ValueError(f"fusion.stfa_kernel={kernel} exceeds num_frames={num_frames}")
        stfa = SpatioTemporalAggregator(cfg.stfa_channels, kernel)
    return HierarchicalFusion(iffa, stfa, dim, num_frames, cfg.pooling)
