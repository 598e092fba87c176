"""The Llama-style decoder-only transformer, with a pre-allocated KV cache for decoding.
(Qwen2 is the same with biases on the q, k and v projections: `ModelConfig.qkv_bias`.)

    tokens → embedding → N × [x + Attn(RMSNorm(x)), x + SwiGLU(RMSNorm(x))] → RMSNorm → LM head

Attention is grouped-query: `num_key_value_heads` KV heads are shared by the query heads
(= num_attention_heads: MHA; 1: MQA). Positions enter only through rotary embeddings (RoPE),
applied to queries and keys with the "rotate half" convention of Hugging Face Llama, so that our
weights and theirs are interchangeable (checkpoint.py maps the names).

Shapes: B batch, T new tokens, S cached + new tokens, H query heads, K KV heads, D head_dim.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from charter.config import ModelConfig


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        # Normalise in fp32 (as Hugging Face does) so bf16 activations keep their precision.
        normed = F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps)
        return self.weight * normed.to(x.dtype)


def rope_tables(positions: Tensor, head_dim: int, theta: float) -> tuple[Tensor, Tensor]:
    """cos and sin for `positions` (B, T), each (B, 1, T, D), computed in fp32."""
    exponents = torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32)
    inv_freq = 1.0 / (theta ** (exponents / head_dim))  # (D/2,)
    angles = positions.float()[..., None] * inv_freq  # (B, T, D/2)
    angles = torch.cat([angles, angles], dim=-1)  # (B, T, D): rotate-half pairs i with i + D/2
    return angles.cos()[:, None], angles.sin()[:, None]


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate each (x_i, x_{i+D/2}) pair of x (B, heads, T, D) by its position's angle."""
    first, second = x.chunk(2, dim=-1)
    rotated_half = torch.cat([-second, first], dim=-1)
    return x * cos.to(x.dtype) + rotated_half * sin.to(x.dtype)


class KVCache:
    """Keys and values of up to `max_len` tokens for each of `batch_size` rows, allocated once.

    Rows advance independently (`lengths[b]` tokens of row b are cached), so one cache serves a
    batch of prompts of different lengths, and rows can be refilled while others keep decoding
    (continuous batching). A forward pass over rows `rows` writes its new keys at each row's own
    positions and attends to everything that row has cached.
    """

    def __init__(
        self,
        config: ModelConfig,
        batch_size: int,
        max_len: int,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> None:
        # One tensor per layer (not one for all): each is then a whole graph input that a
        # compiled decode step can update in place.
        shape = (batch_size, config.num_key_value_heads, max_len, config.head_dim)  # (B, K, S, D)
        zeros = lambda: torch.zeros(shape, dtype=dtype, device=device)  # noqa: E731
        self.k = [zeros() for _ in range(config.num_hidden_layers)]
        self.v = [zeros() for _ in range(config.num_hidden_layers)]
        self.lengths = torch.zeros(batch_size, dtype=torch.long, device=device)
        self.max_len = max_len
        # RoPE's cos and sin for every position, computed once: a compiled decode step then
        # gathers them, where it would otherwise recompute them (pow, cos, sin) for every key
        # it attends to, inductor having fused the query's rotation into the attention loop.
        every_position = torch.arange(max_len, device=device)[None]  # (1, S)
        cos, sin = rope_tables(every_position, config.head_dim, config.rope_theta)
        self.rope_cos, self.rope_sin = cos[0, 0].clone(), sin[0, 0].clone()  # (S, D), fp32

    @classmethod
    def over(
        cls, k: list[Tensor], v: list[Tensor], lengths: Tensor, rope_cos: Tensor, rope_sin: Tensor
    ) -> KVCache:
        """A cache made of existing tensors (those a traced decode step receives as inputs)."""
        cache = cls.__new__(cls)
        cache.k, cache.v, cache.lengths = list(k), list(v), lengths
        cache.max_len = k[0].shape[2]
        cache.rope_cos, cache.rope_sin = rope_cos, rope_sin
        return cache

    @property
    def batch_size(self) -> int:
        return self.k[0].shape[0]

    def move_row(self, src: int, dst: int) -> None:
        """Copy row `src` into row `dst` (used to keep active rows contiguous)."""
        for layer in (*self.k, *self.v):
            layer[dst] = layer[src]
        self.lengths[dst] = self.lengths[src]


def decode_attention(
    q: Tensor, keys: Tensor, values: Tensor, mask: Tensor, as_sums: bool = False
) -> Tensor:
    """Attention of one new token per row, q (B, H, 1, D), over keys/values (B, K, S, D).

    The same as `scaled_dot_product_attention`, written out because for a single query the
    fused CPU kernel costs more than a few small ops. Each KV head's G = H/K query heads attend
    together. The two products are either batched matmuls or, with `as_sums`, products and
    sums: the same values in two forms, of which the caller picks the faster for how it runs
    (`bench/decode_attention.py` measures both: eagerly the matmuls; compiled the sums, which
    inductor fuses into a few loops where each batched matmul stays a library call, up to 5×
    slower in bf16 at one query).
    """
    B, H, _, D = q.shape
    K, S = keys.shape[1], keys.shape[2]
    if as_sums:
        scores = (q.view(B, K, H // K, 1, D) * keys[:, :, None]).sum(-1)  # (B, K, G, S)
    else:
        scores = q.view(B, K, H // K, D) @ keys.transpose(-1, -2)  # (B, K, G, S)
    scores = (scores * D**-0.5).masked_fill(~mask.view(B, 1, 1, S), float("-inf"))
    probs = scores.softmax(-1)
    out = (probs[..., None] * values[:, :, None]).sum(-2) if as_sums else probs @ values
    return out.view(B, H, 1, D)  # from (B, K, G, D)


class Attention(nn.Module):
    def __init__(self, config: ModelConfig, layer_index: int) -> None:
        super().__init__()
        self.layer_index = layer_index
        self.n_heads, self.n_kv_heads = config.num_attention_heads, config.num_key_value_heads
        self.head_dim = config.head_dim
        d, bias = config.hidden_size, config.qkv_bias  # Qwen2 biases q, k and v; Llama none
        self.q_proj = nn.Linear(d, self.n_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(d, self.n_kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(d, self.n_kv_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(self.n_heads * self.head_dim, d, bias=False)

    def forward(
        self,
        x: Tensor,
        cos: Tensor,
        sin: Tensor,
        cache: KVCache | None = None,
        rows: slice | None = None,
        row_ids: Tensor | None = None,
        positions: Tensor | None = None,
        mask: Tensor | None = None,
        as_sums: bool = False,
    ) -> Tensor:
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, T, D)
        k = (
            self.k_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        )  # (B, K, T, D)
        v = self.v_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        gqa = self.n_kv_heads != self.n_heads
        if cache is None:  # causal, or (padded batches) the mask `hidden_states` made
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, is_causal=mask is None, enable_gqa=gqa
            )
        else:
            # Write this chunk at each row's own positions (by row id: see `hidden_states`), then
            # attend over the cached prefix (read through the view `rows`).
            cache_k, cache_v = cache.k[self.layer_index], cache.v[self.layer_index]
            cache_k[row_ids[:, None], :, positions] = k.transpose(1, 2)  # positions (B, T)
            cache_v[row_ids[:, None], :, positions] = v.transpose(1, 2)
            S = mask.shape[-1]
            keys, values = cache_k[rows, :, :S], cache_v[rows, :, :S]  # (B, K, S, D)
            if T == 1:
                out = decode_attention(q, keys, values, mask, as_sums)
            else:
                out = F.scaled_dot_product_attention(
                    q, keys, values, attn_mask=mask, enable_gqa=gqa
                )
        out = out.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim)
        return self.o_proj(out)


class SwiGLU(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        d, h = config.hidden_size, config.intermediate_size
        self.gate_proj = nn.Linear(d, h, bias=False)
        self.up_proj = nn.Linear(d, h, bias=False)
        self.down_proj = nn.Linear(h, d, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, config: ModelConfig, layer_index: int) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = Attention(config, layer_index)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = SwiGLU(config)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, **cache_args) -> Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, **cache_args)
        return x + self.mlp(self.post_attention_layernorm(x))


class Transformer(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(Block(config, i) for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Hugging Face Llama's initialisation: N(0, initializer_range) weights, zero biases,
        unit norms."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=self.config.initializer_range)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, RMSNorm):
                nn.init.ones_(module.weight)

    def hidden_states(
        self,
        input_ids: Tensor,
        cache: KVCache | None = None,
        rows: slice | None = None,
        input_lengths: Tensor | None = None,
        attend_len: int | None = None,
        attention_mask: Tensor | None = None,
        as_sums: bool = False,
    ) -> Tensor:
        """Final-norm hidden states (B, T, d) for `input_ids` (B, T).

        Without a cache the sequence starts at position 0 and attention is causal. An
        `attention_mask` (B, T) of 1 for real tokens and 0 for padding (left, right or both; no
        cache) hides the padding from the real tokens and numbers them from 0, so a padded row's
        real tokens get the hidden states they would get alone. With a cache,
        row b of the batch is cache row `rows.start + b`: its tokens continue at position
        `cache.lengths` and, afterwards, the row's length grows by `input_lengths[b]` (default T;
        fewer for right-padded prompts, whose padding is written but never attended to: it lies
        beyond the row's length and is overwritten by the next real token). `as_sums` picks the
        form of a single query's attention over a cache (`decode_attention`).
        """
        B, T = input_ids.shape
        if cache is None and attention_mask is None:
            positions = torch.arange(T, device=input_ids.device).expand(B, T)
            cache_args = {}
        elif cache is None:
            real = attention_mask.bool()  # (B, T)
            positions = (real.cumsum(-1) - 1).clamp(min=0)  # (B, T)
            # Query i sees real keys j ≤ i, and itself: a padding query that saw no key would
            # rely on the kernel's handling of fully masked rows (zeros here on the CPU, NaN in
            # some kernels and versions), and NaN reaches real tokens even at zero weight.
            causal = torch.ones(T, T, dtype=torch.bool, device=input_ids.device).tril()
            itself = torch.eye(T, dtype=torch.bool, device=input_ids.device)
            mask = causal & (real[:, None, :] | itself)  # (B, T, T)
            cache_args = dict(mask=mask[:, None])
        elif attention_mask is not None:
            raise ValueError("attention_mask is for uncached passes; a cache tracks row lengths")
        else:
            rows = rows if rows is not None else slice(0, B)
            # Every write into the cache indexes its tensors by row id, not through a view of
            # the rows: compiled, a write through a view copied the rows' entire cache (three
            # times per layer), and torch.export + AOTInductor got one wrong for batches of
            # fewer rows than the cache has (every row's length changed).
            row_ids = torch.arange(rows.start, rows.start + B, device=input_ids.device)  # (B,)
            start = cache.lengths[rows]  # (B,)
            positions = start[:, None] + torch.arange(T, device=input_ids.device)  # (B, T)
            # Keys attended to: up to the furthest row's last position. A compiled caller passes
            # it (`attend_len`), since reading it off the tensor would break the graph.
            S = attend_len if attend_len is not None else int(positions.max()) + 1
            if S > cache.max_len:
                raise ValueError(f"KV cache holds {cache.max_len} tokens per row; {S} needed")
            # A query at position p sees cached keys at positions ≤ p: causal and per row.
            mask = torch.arange(S, device=input_ids.device) <= positions[..., None]  # (B, T, S)
            cache_args = dict(
                cache=cache,
                rows=rows,
                row_ids=row_ids,
                positions=positions,
                mask=mask[:, None],
                as_sums=as_sums,
            )
        if cache is None:
            cos, sin = rope_tables(positions, self.config.head_dim, self.config.rope_theta)
        else:
            cos, sin = cache.rope_cos[positions][:, None], cache.rope_sin[positions][:, None]
        # cos, sin: (B, 1, T, D)
        x = self.embed_tokens(input_ids)  # (B, T, d)
        for layer in self.layers:
            x = layer(x, cos, sin, **cache_args)
        if cache is not None:
            cache.lengths[row_ids] += T if input_lengths is None else input_lengths
        return self.norm(x)

    def logits(self, hidden: Tensor) -> Tensor:
        return self.lm_head(hidden)

    def decode_step(
        self, last: Tensor, cache: KVCache, attend_len: int, as_sums: bool = False
    ) -> Tensor:
        """Logits (B, V) of the next token of cache rows 0…B-1, whose last tokens are `last`
        (B, 1) and whose longest row attends to `attend_len` positions; each row grows by one.
        `as_sums`: the form of the attention (`decode_attention`)."""
        rows = slice(0, last.shape[0])
        hidden = self.hidden_states(last, cache, rows, attend_len=attend_len, as_sums=as_sums)
        return self.logits(hidden[:, -1])

    def forward(self, input_ids: Tensor, **cache_args) -> Tensor:
        """Logits (B, T, vocab) for `input_ids` (B, T)."""
        return self.logits(self.hidden_states(input_ids, **cache_args))
