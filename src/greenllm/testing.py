"""Test helpers shipped with greenllm so users can test their own code too.

``tiny_causal_lm()`` and ``tiny_tokenizer()`` build a seeded, randomly initialised Llama-style
model and a byte-level tokenizer in code (no download). Fakes of hardware live here too, at
the lowest boundary only: a fake pynvml module object and fake sysfs trees (see below).
"""
from __future__ import annotations

from typing import Any


def tiny_tokenizer():
    """A byte-level BPE tokenizer with no merges: 256 byte tokens + <s>, </s>, <pad>."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    byte_vocab = pre_tokenizers.ByteLevel.alphabet()
    vocab = {tok: i for i, tok in enumerate(sorted(byte_vocab))}
    for special in ("<s>", "</s>", "<pad>"):
        vocab[special] = len(vocab)
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>")


def tiny_causal_lm(seed: int = 0, *, vocab_size: int | None = None, hidden_size: int = 64,
                   num_layers: int = 2, num_heads: int = 4, num_kv_heads: int = 2,
                   intermediate_size: int = 128, max_position_embeddings: int = 512,
                   tie_word_embeddings: bool = False) -> Any:
    """A seeded random LlamaForCausalLM small enough for unit tests (~0.1 M params)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok_vocab = 259
    cfg = LlamaConfig(vocab_size=vocab_size or tok_vocab, hidden_size=hidden_size,
                      num_hidden_layers=num_layers, num_attention_heads=num_heads,
                      num_key_value_heads=num_kv_heads, intermediate_size=intermediate_size,
                      max_position_embeddings=max_position_embeddings,
                      bos_token_id=256, eos_token_id=257, pad_token_id=258,
                      tie_word_embeddings=tie_word_embeddings)
    gen = torch.random.fork_rng()
    with gen:
        torch.manual_seed(seed)
        model = LlamaForCausalLM(cfg)
    model.eval()
    return model


def tiny_model_and_tokenizer(seed: int = 0, **kwargs):
    return tiny_causal_lm(seed, **kwargs), tiny_tokenizer()
