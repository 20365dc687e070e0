"""Models built offline for the bring-your-own-model tests and the README example: a scikit-learn pipeline through
skl2onnx, a PyTorch MLP and a tiny BERT-style text classifier through torch.onnx.export, and the tokenizer the text
model reads, trained with `tokenizers` on the test's own sentences. Nothing is downloaded.

torch 2.13's default exporter is the dynamo one (it needs onnxscript); `dynamo=False` keeps the TorchScript-based
exporter, which needs nothing beyond onnx and exports these small graphs in well under a second.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

SENTENCES = [
    "the service answered quickly and the staff were friendly",
    "terrible experience, the order arrived late and cold",
    "i would happily recommend this place to my friends",
    "the product broke after two days and support never replied",
    "great value for the money, works exactly as described",
    "not worth it at all, a complete waste of time",
    "delivery was fast and the packaging was careful",
    "the screen flickers and the battery drains in an hour",
]
MAX_LENGTH = 32
IRIS_FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def sklearn_pipeline(path: Path) -> tuple[Any, np.ndarray]:
    """A StandardScaler + LogisticRegression fitted on iris, written as ONNX (probabilities as a tensor); returns
    the fitted pipeline and its training rows."""
    from skl2onnx import to_onnx
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = load_iris(return_X_y=True)
    X = X.astype(np.float32)
    pipe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(X, y)
    onx = to_onnx(pipe, X[:1], options={id(pipe): {"zipmap": False}}, target_opset={"": 17, "ai.onnx.ml": 3})
    path.write_bytes(onx.SerializeToString())
    return pipe, X


class MLP(nn.Module):
    def __init__(self, n_in: int = 6, n_out: int = 3) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_in, 32), nn.ReLU(), nn.Linear(32, n_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.net(x)
        return logits  # the service applies the softmax


def torch_mlp(path: Path, n_in: int = 6, n_out: int = 3) -> nn.Module:
    torch.manual_seed(0)
    model = MLP(n_in, n_out).eval()
    torch.onnx.export(
        model,
        (torch.zeros(2, n_in),),
        str(path),
        dynamo=False,
        input_names=["x"],
        output_names=["logits"],
        dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}},
        opset_version=17,
    )
    return model


def train_tokenizer(path: Path, sentences: list[str] = SENTENCES) -> None:
    """A WordPiece tokenizer (BERT's normalizer and pre-tokenizer, [CLS] … [SEP]) trained on `sentences`."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    tokenizer.train_from_iterator(sentences, trainers.WordPieceTrainer(vocab_size=300, special_tokens=specials))
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)]
    )
    tokenizer.save(str(path))


class SelfAttention(nn.Module):
    """Multi-head self-attention written out (nn.MultiheadAttention, traced, bakes the batch and sequence sizes of
    the example into Reshape nodes: the exported graph then refuses any other shape)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        split = [t.reshape(t.shape[0], t.shape[1], self.heads, -1).transpose(1, 2) for t in (q, k, v)]
        scores = split[0] @ split[1].transpose(-2, -1) / (split[0].shape[-1] ** 0.5)
        scores = scores.masked_fill(attention_mask[:, None, None, :] == 0, -1e9)  # padding is never attended to
        mixed = (scores.softmax(dim=-1) @ split[2]).transpose(1, 2)
        out: torch.Tensor = self.out(mixed.reshape(x.shape[0], x.shape[1], -1))
        return out


class EncoderBlock(nn.Module):
    """Self-attention and a feed-forward block, each with a residual and LayerNorm (BERT's post-norm layout)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.attention = SelfAttention(dim, heads=2)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.feed_forward = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.norm1(hidden + self.attention(hidden, attention_mask))
        out: torch.Tensor = self.norm2(hidden + self.feed_forward(hidden))
        return out


class TinyEncoder(nn.Module):
    """A BERT-shaped classifier, tiny: token + position embeddings, `layers` encoder blocks, masked mean pooling,
    a linear head giving logits."""

    def __init__(
        self, vocab: int, n_classes: int = 2, dim: int = 32, max_length: int = MAX_LENGTH, layers: int = 1
    ) -> None:
        super().__init__()
        self.tokens = nn.Embedding(vocab, dim)
        self.positions = nn.Embedding(max_length, dim)
        self.blocks = nn.ModuleList(EncoderBlock(dim) for _ in range(layers))
        self.head = nn.Linear(dim, n_classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)
        hidden = self.tokens(input_ids) + self.positions(positions)
        for block in self.blocks:
            hidden = block(hidden, attention_mask)
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        logits: torch.Tensor = self.head(pooled)
        return logits


def text_classifier(
    directory: Path,
    labels: tuple[str, str] = ("negative", "positive"),
    seed: int = 0,
    dim: int = 32,
    layers: int = 1,
    max_length: int = MAX_LENGTH,
) -> Path:
    """model.onnx, tokenizer.json and metadata.json of a tiny text classifier in `directory` (the benchmark
    builds a wider, deeper one with the same code)."""
    directory.mkdir(parents=True, exist_ok=True)
    train_tokenizer(directory / "tokenizer.json")
    vocab = json.loads((directory / "tokenizer.json").read_text())["model"]["vocab"]
    torch.manual_seed(seed)
    model = TinyEncoder(len(vocab), len(labels), dim, max_length, layers).eval()
    ids = torch.ones(2, 8, dtype=torch.int64)
    torch.onnx.export(
        model,
        (ids, torch.ones_like(ids)),
        str(directory / "model.onnx"),
        dynamo=False,
        input_names=["input_ids", "attention_mask"],
        output_names=["logits"],
        dynamic_axes={"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"}},
        opset_version=17,
    )
    meta = {"task": "classification", "labels": list(labels), "text": "review", "max_length": max_length}
    (directory / "metadata.json").write_text(json.dumps(meta))
    return directory


if __name__ == "__main__":  # python tests/onnx_models.py DIR: the README's tiny text classifier, built offline
    import sys

    built = text_classifier(Path(sys.argv[1] if len(sys.argv) > 1 else "reviews"))
    print(f"wrote {built}/model.onnx, tokenizer.json, metadata.json")
