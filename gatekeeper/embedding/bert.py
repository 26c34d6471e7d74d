"""A BERT encoder in plain torch, for the default model's fast start.

Importing ``transformers`` costs seconds of start-up that a gate answering its first message
should not pay. BERT-family encoders (the default all-MiniLM-L6-v2, BGE-en, …) need nothing of
it: the ``tokenizers`` library reads ``tokenizer.json`` and the forward pass below computes,
from the same ``model.safetensors`` weights, the same ``last_hidden_state`` as transformers'
``BertModel`` (a test compares them within 1e-5). Models of other shapes go through
transformers (:mod:`gatekeeper.embedding.local`).

This module imports torch at the top: import it only when a model is loaded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class _Layer(nn.Module):
    """One transformer block: self-attention (query/key/value fused into one matrix), then the
    feed-forward, each followed by a residual LayerNorm (post-norm, as BERT)."""

    def __init__(self, hidden: int, heads: int, intermediate: int, eps: float) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.attention_out = nn.Linear(hidden, hidden)
        self.attention_norm = nn.LayerNorm(hidden, eps=eps)
        self.intermediate = nn.Linear(hidden, intermediate)
        self.output = nn.Linear(intermediate, hidden)
        self.output_norm = nn.LayerNorm(hidden, eps=eps)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor, keep: torch.Tensor | None
    ) -> torch.Tensor:
        """``x`` holds the batch's real tokens only, (tokens, hidden), when ``keep`` (the real
        tokens' positions in the padded batch) is given, else the padded batch itself."""
        batch, length = mask.shape[0], mask.shape[-1]
        hidden = x.shape[-1]
        qkv = self.qkv(x)
        if keep is not None:  # attention needs the padded layout; the matrices do not
            qkv = qkv.new_zeros(batch * length, 3 * hidden).index_copy_(0, keep, qkv)
        qkv = qkv.view(batch, length, 3, self.heads, hidden // self.heads)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        context = F.scaled_dot_product_attention(query, key, value, attn_mask=mask)
        context = context.transpose(1, 2).reshape(batch * length, hidden)
        if keep is not None:
            context = context.index_select(0, keep)
        else:
            context = context.view(batch, length, hidden)
        x = self.attention_norm(self.attention_out(context) + x)
        out: torch.Tensor = self.output_norm(self.output(F.gelu(self.intermediate(x))) + x)
        return out


class BertEncoder(nn.Module):
    """``BertModel`` without the pooler: token ids and attention mask → last hidden state."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        hidden = int(config["hidden_size"])
        eps = float(config.get("layer_norm_eps", 1e-12))
        self.word = nn.Embedding(int(config["vocab_size"]), hidden)
        self.position = nn.Embedding(int(config["max_position_embeddings"]), hidden)
        self.token_type = nn.Embedding(int(config.get("type_vocab_size", 2)), hidden)
        self.embedding_norm = nn.LayerNorm(hidden, eps=eps)
        self.layers = nn.ModuleList(
            _Layer(
                hidden,
                int(config["num_attention_heads"]),
                int(config["intermediate_size"]),
                eps,
            )
            for _ in range(int(config["num_hidden_layers"]))
        )
        self.hidden_size = hidden
        self.max_positions = int(config["max_position_embeddings"])

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The last hidden state, (batch, length, hidden); padding positions hold zeros.

        A padded batch of short customer messages is about half padding: the dense layers
        (nearly all of the work) run on the real tokens only, and only attention sees the
        padded layout. Real tokens get the values a padded forward pass gives them.
        """
        batch, length = input_ids.shape
        positions = torch.arange(length, device=input_ids.device)
        x = self.word(input_ids) + self.position(positions) + self.token_type.weight[0]
        # Padding keys are masked out for every query: (batch, 1, 1, length), True = attend.
        mask = attention_mask.bool()[:, None, None, :]
        keep = None
        if not bool(mask.all()):
            keep = attention_mask.reshape(-1).nonzero().squeeze(1)
            x = x.reshape(batch * length, -1).index_select(0, keep)
        hidden: torch.Tensor = self.embedding_norm(x)
        for layer in self.layers:
            hidden = layer(hidden, mask, keep)
        if keep is None:
            return hidden
        padded = hidden.new_zeros(batch * length, hidden.shape[-1]).index_copy_(0, keep, hidden)
        return padded.view(batch, length, -1)


def load_encoder(path: Path) -> BertEncoder:
    """The encoder in ``path`` (``config.json`` + ``model.safetensors``), in eval mode."""
    from safetensors.torch import load_file

    config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    weights = {
        key.removeprefix("bert."): value
        for key, value in load_file(str(path / "model.safetensors")).items()
    }
    encoder = BertEncoder(config)
    encoder.load_state_dict(_renamed(weights, len(encoder.layers)))
    encoder.eval()
    return encoder


def _renamed(weights: dict[str, torch.Tensor], layers: int) -> dict[str, torch.Tensor]:
    """Hugging Face's parameter names mapped onto :class:`BertEncoder`'s."""
    state = {
        "word.weight": weights["embeddings.word_embeddings.weight"],
        "position.weight": weights["embeddings.position_embeddings.weight"],
        "token_type.weight": weights["embeddings.token_type_embeddings.weight"],
        "embedding_norm.weight": weights["embeddings.LayerNorm.weight"],
        "embedding_norm.bias": weights["embeddings.LayerNorm.bias"],
    }
    for i in range(layers):
        hf = f"encoder.layer.{i}."
        ours = f"layers.{i}."
        for part in ("weight", "bias"):
            state[ours + "qkv." + part] = torch.cat(
                [weights[f"{hf}attention.self.{name}.{part}"] for name in ("query", "key", "value")]
            )
            state[ours + "attention_out." + part] = weights[f"{hf}attention.output.dense.{part}"]
            state[ours + "attention_norm." + part] = weights[
                f"{hf}attention.output.LayerNorm.{part}"
            ]
            state[ours + "intermediate." + part] = weights[f"{hf}intermediate.dense.{part}"]
            state[ours + "output." + part] = weights[f"{hf}output.dense.{part}"]
            state[ours + "output_norm." + part] = weights[f"{hf}output.LayerNorm.{part}"]
    return state


class PackedBert(nn.Module):
    """The encoder in the form exported to ONNX (:mod:`gatekeeper.embedding.ort`): token ids
    and attention mask → the last hidden states of the real tokens only, (tokens, hidden), in
    batch order (no padding rows). The same computation as :class:`BertEncoder`, in operations
    ONNX Runtime runs fast: attention's padded layout is *gathered* from the real tokens and a
    zero row (ONNX Runtime's scatter, which ``index_copy`` becomes, cost a fifth of a batch)."""

    def __init__(self, encoder: BertEncoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        enc = self.encoder
        batch, length = input_ids.shape
        positions = torch.arange(length, device=input_ids.device)
        x = enc.word(input_ids) + enc.position(positions) + enc.token_type.weight[0]
        flat = attention_mask.reshape(-1)
        keep = flat.nonzero().squeeze(1)  # the real tokens' slots in the padded batch
        # Each padded slot's row in [real tokens; one zero row].
        slot_row = torch.where(flat.bool(), flat.cumsum(0) - 1, keep.shape[0])
        mask = attention_mask.bool()[:, None, None, :]
        hidden: torch.Tensor = enc.embedding_norm(
            x.reshape(batch * length, -1).index_select(0, keep)
        )
        width = hidden.shape[-1]
        for layer in enc.layers:
            assert isinstance(layer, _Layer)
            qkv = layer.qkv(hidden)
            qkv = torch.cat([qkv, qkv.new_zeros(1, 3 * width)]).index_select(0, slot_row)
            qkv = qkv.view(batch, length, 3, layer.heads, width // layer.heads)
            query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)
            context = F.scaled_dot_product_attention(query, key, value, attn_mask=mask)
            context = context.transpose(1, 2).reshape(batch * length, width).index_select(0, keep)
            hidden = layer.attention_norm(layer.attention_out(context) + hidden)
            hidden = layer.output_norm(layer.output(F.gelu(layer.intermediate(hidden))) + hidden)
        return hidden
