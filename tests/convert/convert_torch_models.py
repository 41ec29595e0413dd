"""Hand-written torch equivalents of the TF models in ``convert_tf_models.py``."""

from __future__ import annotations

import torch
from torch import nn


class CNN(nn.Module):
    """Conv2D/BN/ReLU, grouped 1x1 Conv2D, DepthwiseConv2D, SeparableConv2D, Conv2DTranspose."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4, eps=1e-3)
        self.grouped = nn.Conv2d(4, 4, 1, groups=2)
        self.depthwise = nn.Conv2d(4, 8, 3, padding=1, groups=4)
        self.separable = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False),
                                       nn.Conv2d(8, 6, 1))
        self.up = nn.ConvTranspose2d(6, 5, 3, stride=2)
        self.head = nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: NHWC like Keras
        h = torch.relu(self.bn(self.conv(x.permute(0, 3, 1, 2))))
        h = self.up(self.separable(self.depthwise(self.grouped(h))))
        return self.head(h.mean(dim=(2, 3)))


def Nested() -> nn.Module:  # noqa: N802 - named like the other model factories
    return nn.Sequential(nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3)),
                         nn.Linear(3, 2))


class ConvND(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        # registration order follows Keras' model.layers, which put the 3-D branch first
        self.conv3 = nn.Conv3d(2, 3, 2)
        self.conv1 = nn.Conv1d(2, 3, 3)
        self.up3 = nn.ConvTranspose3d(3, 2, 2, stride=2)

    def forward(self, x1: torch.Tensor, x3: torch.Tensor) -> torch.Tensor:
        a = self.conv1(x1.permute(0, 2, 1)).mean(dim=2)
        b = self.up3(self.conv3(x3.permute(0, 4, 1, 2, 3))).mean(dim=(2, 3, 4))
        return torch.cat([a, b], dim=1)


class RNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(20, 8)
        self.lstm = nn.LSTM(8, 7, batch_first=True)
        self.gru = nn.GRU(7, 5, batch_first=True)
        self.bilstm = nn.LSTM(5, 4, batch_first=True, bidirectional=True)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, _ = self.gru(self.lstm(self.embed(x))[0])
        _, (last, _) = self.bilstm(h)
        return self.head(torch.cat([last[0], last[1]], dim=1))


class Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.norm = nn.LayerNorm(8, eps=1e-3)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, _ = self.attn(x, x, x, need_weights=False)
        return self.head(self.norm(x + a))


class AttentionLinears(nn.Module):
    """Keras MultiHeadAttention as torch code usually writes it: q, k, v and out Linears."""

    def __init__(self, embed: int = 32, heads: int = 4, key_dim: int = 8,
                 value_dim: int | None = None) -> None:
        super().__init__()
        self.heads, self.key_dim, self.value_dim = heads, key_dim, value_dim or key_dim
        self.q = nn.Linear(embed, heads * key_dim)
        self.k = nn.Linear(embed, heads * key_dim)
        self.v = nn.Linear(embed, heads * self.value_dim)
        self.out = nn.Linear(heads * self.value_dim, embed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, _ = x.shape
        q = self.q(x).view(n, t, self.heads, self.key_dim).transpose(1, 2)
        k = self.k(x).view(n, t, self.heads, self.key_dim).transpose(1, 2)
        v = self.v(x).view(n, t, self.heads, self.value_dim).transpose(1, 2)
        weights = torch.softmax(q @ k.transpose(-1, -2) / self.key_dim ** 0.5, dim=-1)
        return self.out((weights @ v).transpose(1, 2).reshape(n, t, -1))


class AttentionLinearsBlock(nn.Module):
    """``Attention`` with the attention written as four Linears (the ``attention`` case)."""

    def __init__(self) -> None:
        super().__init__()
        self.attn = AttentionLinears(8, 2, 4)
        self.norm = nn.LayerNorm(8, eps=1e-3)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(x + self.attn(x)))


class SelfAttention(nn.Module):
    """nn.MultiheadAttention(32, 4) used as self-attention (the ``mha_k3`` case)."""

    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(32, 4, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(x, x, x, need_weights=False)[0]


class FlattenCNN(nn.Module):
    """Conv(same) -> BN -> ReLU -> Conv -> flatten -> Linear -> ReLU -> Linear (``flatten_*``).

    ``channels_last``: permute to [N, H, W, C] before flattening, as Keras does;
    otherwise ``torch.flatten`` of [N, C, H, W].
    """

    def __init__(self, channels_last: bool = False) -> None:
        super().__init__()
        self.channels_last = channels_last
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4, eps=1e-3)
        self.conv2 = nn.Conv2d(4, 5, 3)
        self.fc1 = nn.Linear(60, 7)
        self.fc2 = nn.Linear(7, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: NHWC like Keras
        h = self.conv2(torch.relu(self.bn(self.conv1(x.permute(0, 3, 1, 2)))))
        h = torch.flatten(h.permute(0, 2, 3, 1) if self.channels_last else h, 1)
        return self.fc2(torch.relu(self.fc1(h)))


class IteratorNet(nn.Module):
    """Dense(tanh) -> Dense (the ``iterator`` case)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 5)
        self.head = nn.Linear(5, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.fc(x)))


def flatten_cnn_channels_last() -> FlattenCNN:
    """A factory for ``torchckpt convert --model``."""
    return FlattenCNN(channels_last=True)


class Keras3Model(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 6)
        self.lstm = nn.LSTM(6, 5, batch_first=True)
        self.fc = nn.Linear(5, 8)
        self.bn = nn.BatchNorm1d(8, eps=1e-3)
        self.norm = nn.LayerNorm(8, eps=1e-3)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, (h, _) = self.lstm(self.embed(x))
        return self.head(self.norm(self.bn(torch.relu(self.fc(h[0])))))


class MiniBert(nn.Module):
    """One BERT layer (attention as nn.MultiheadAttention), a TF1-style LSTM, and a head."""

    def __init__(self) -> None:
        super().__init__()
        self.word = nn.Embedding(30, 8)
        self.position = nn.Parameter(torch.zeros(5, 8))
        self.emb_norm = nn.LayerNorm(8, eps=1e-12)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.attn_norm = nn.LayerNorm(8, eps=1e-12)
        self.intermediate = nn.Linear(8, 16)
        self.output = nn.Linear(16, 8)
        self.out_norm = nn.LayerNorm(8, eps=1e-12)
        self.lstm = nn.LSTM(8, 6, batch_first=True)
        self.head = nn.Linear(6, 3)
        self.pooler = nn.Linear(8, 8)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.emb_norm(self.word(ids) + self.position)
        a, _ = self.attn(h, h, h, need_weights=False)
        h = self.attn_norm(a + h)
        h = self.out_norm(self.output(nn.functional.gelu(self.intermediate(h))) + h)
        _, (last, _) = self.lstm(h)
        return self.head(last[0])


#: Checkpoint names of ``case_tf1_bert`` -> MiniBert (scopes end in "/").
BERT_MAP = [
    ("bert/embeddings/word_embeddings", "word.weight"),
    ("bert/embeddings/position_embeddings", "position"),
    ("bert/embeddings/LayerNorm/", "emb_norm"),
    (r"bert/encoder/layer_0/attention/output/LayerNorm/", "attn_norm"),
    (r"bert/encoder/layer_0/attention/", "attn"),  # self/{query,key,value} + output/dense
    (r"bert/encoder/layer_0/(intermediate|output)/dense/", r"\1"),
    (r"bert/encoder/layer_0/output/LayerNorm/", "out_norm"),
    ("bert/pooler/dense/", "pooler"),
    ("rnn/", "lstm"),
    ("cls/head/", "head"),
]


class TrainNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 8)
        self.norm = nn.LayerNorm(8, eps=1e-3)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(torch.tanh(self.fc(x))))
