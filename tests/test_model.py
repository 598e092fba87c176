"""Correctness of the transformer: causality, GQA/MQA, RoPE, the KV cache, learning."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from charter.config import PRESETS, flops_per_token, num_parameters, preset
from charter.model import KVCache, Transformer, apply_rope, decode_attention, rope_tables
from tests.helpers import load_bench, micro


def test_causality_future_tokens_never_change_past_logits(micro_model):
    torch.manual_seed(1)
    ids = torch.randint(0, 512, (2, 24))
    t = 11
    changed = ids.clone()
    changed[:, t + 1 :] = torch.randint(0, 512, (2, 24 - t - 1))
    with torch.no_grad():
        a, b = micro_model(ids), micro_model(changed)
    assert torch.equal(a[:, : t + 1], b[:, : t + 1])
    assert not torch.allclose(a[:, t + 1 :], b[:, t + 1 :])  # the change did reach later positions


def _reference_attention_forward(model: Transformer, ids: torch.Tensor) -> torch.Tensor:
    """The same network with attention written out as plain multi-head softmax attention."""
    c = model.config
    B, T = ids.shape
    positions = torch.arange(T).expand(B, T)
    cos, sin = rope_tables(positions, c.head_dim, c.rope_theta)
    x = model.embed_tokens(ids)
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    for layer in model.layers:
        attn = layer.self_attn
        h = layer.input_layernorm(x)
        q = attn.q_proj(h).view(B, T, c.num_attention_heads, c.head_dim).transpose(1, 2)
        k = attn.k_proj(h).view(B, T, c.num_key_value_heads, c.head_dim).transpose(1, 2)
        v = attn.v_proj(h).view(B, T, c.num_key_value_heads, c.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        scores = q @ k.transpose(-1, -2) / math.sqrt(c.head_dim)
        weights = scores.masked_fill(~causal, float("-inf")).softmax(-1)
        out = (weights @ v).transpose(1, 2).reshape(B, T, -1)
        x = x + attn.o_proj(out)
        x = x + layer.mlp(layer.post_attention_layernorm(x))
    return model.logits(model.norm(x))


def test_gqa_with_as_many_kv_heads_as_query_heads_is_plain_mha():
    torch.manual_seed(0)
    model = Transformer(micro(num_attention_heads=4, num_key_value_heads=4)).eval()
    ids = torch.randint(0, 512, (2, 16))
    with torch.no_grad():
        torch.testing.assert_close(
            model(ids), _reference_attention_forward(model, ids), atol=1e-5, rtol=0
        )


def test_grouped_query_heads_share_their_kv_head():
    """GQA (2 KV heads for 4 query heads) equals MHA whose K/V weights repeat each KV head."""
    torch.manual_seed(0)
    gqa = Transformer(micro(num_attention_heads=4, num_key_value_heads=2)).eval()
    mha = Transformer(micro(num_attention_heads=4, num_key_value_heads=4)).eval()
    state = gqa.state_dict()
    hd = gqa.config.head_dim
    for name, tensor in list(state.items()):
        if name.endswith(("k_proj.weight", "v_proj.weight")):
            heads = tensor.view(2, hd, -1)  # (K, D, d)
            state[name] = heads.repeat_interleave(2, dim=0).reshape(4 * hd, -1)
    mha.load_state_dict(state)
    ids = torch.randint(0, 512, (2, 16))
    with torch.no_grad():
        torch.testing.assert_close(gqa(ids), mha(ids), atol=1e-5, rtol=0)


def test_decode_attention_both_forms_equal_sdpa():
    """One query per row over a cache whose rows hold different lengths (GQA, 6 heads on 2):
    the matmul form and the product-and-sum form (compiled in the engine's tests and the
    attention benchmark's) both equal SDPA."""
    torch.manual_seed(0)
    B, H, K, S, D = 3, 6, 2, 9, 8
    q = torch.randn(B, H, 1, D)
    keys, values = torch.randn(B, K, S, D), torch.randn(B, K, S, D)
    mask = torch.arange(S) < torch.tensor([[4], [9], [1]])  # (B, S): each row's cached length
    mask = mask[:, None, None]  # (B, 1, 1, S)
    expected = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, enable_gqa=True)
    for as_sums in (False, True):
        got = decode_attention(q, keys, values, mask, as_sums)
        torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)


def test_mqa_runs_and_is_causal():
    torch.manual_seed(0)
    model = Transformer(micro(num_attention_heads=4, num_key_value_heads=1)).eval()
    assert model.layers[0].self_attn.k_proj.weight.shape == (16, 64)
    ids = torch.randint(0, 512, (1, 12))
    with torch.no_grad():
        logits = model(ids)
        shorter = model(ids[:, :6])
    assert logits.shape == (1, 12, 512)
    torch.testing.assert_close(logits[:, :6], shorter, atol=1e-5, rtol=0)


def test_rope_scores_depend_only_on_relative_position():
    torch.manual_seed(0)
    head_dim = 16
    q, k = torch.randn(1, 1, 1, head_dim), torch.randn(1, 1, 1, head_dim)

    def score(query_pos: int, key_pos: int) -> float:
        cq, sq = rope_tables(torch.tensor([[query_pos]]), head_dim, 10000.0)
        ck, sk = rope_tables(torch.tensor([[key_pos]]), head_dim, 10000.0)
        return float((apply_rope(q, cq, sq) * apply_rope(k, ck, sk)).sum())

    for shift in (1, 7, 100, 1000):
        assert score(9, 4) == pytest.approx(score(9 + shift, 4 + shift), abs=1e-4)
    assert score(9, 4) != pytest.approx(score(9, 5), abs=1e-3)  # the distance does matter


def test_model_logits_are_shift_invariant_through_the_cache(micro_model):
    """The same tokens after a different-length prefix see the same relative positions only."""
    ids = torch.randint(0, 512, (1, 8))
    cache = KVCache(micro_model.config, 1, 64)
    with torch.no_grad():
        direct = micro_model(ids)
        cache.lengths[:] = 0
        cached = micro_model(ids, cache=cache)
    torch.testing.assert_close(direct, cached, atol=1e-5, rtol=0)


def test_kv_cache_incremental_decoding_equals_full_forward(micro_model):
    torch.manual_seed(2)
    ids = torch.randint(0, 512, (3, 20))
    with torch.no_grad():
        full = micro_model(ids)
        cache = KVCache(micro_model.config, 3, 32)
        steps = [micro_model(ids[:, :7], cache=cache)]
        steps += [micro_model(ids[:, t : t + 1], cache=cache) for t in range(7, 20)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=0)
    assert cache.lengths.tolist() == [20, 20, 20]


def test_kv_cache_batch_of_different_prompt_lengths(micro_model):
    """Right-padded prompts of lengths 5, 9 and 13 prefilled together, then decoded together,
    give each row exactly the logits of running that row alone."""
    torch.manual_seed(3)
    lengths = [5, 9, 13]
    total = 18
    rows = [torch.randint(0, 512, (total,)) for _ in lengths]
    padded = torch.stack(
        [torch.cat([r[:n], torch.zeros(13 - n, dtype=torch.long)]) for r, n in zip(rows, lengths)]
    )  # (3, 13)
    cache = KVCache(micro_model.config, 3, 32)
    with torch.no_grad():
        prefill = micro_model(padded, cache=cache, input_lengths=torch.tensor(lengths))
        assert cache.lengths.tolist() == lengths
        decoded = []
        for step in range(total - 13):
            token = torch.stack([r[n + step] for r, n in zip(rows, lengths)])[:, None]
            decoded.append(micro_model(token, cache=cache)[:, 0])
        for b, (row, n) in enumerate(zip(rows, lengths)):
            alone = micro_model(row[None, : n + total - 13])[0]
            torch.testing.assert_close(prefill[b, :n], alone[:n], atol=1e-5, rtol=0)
            for step, logits in enumerate(decoded):
                torch.testing.assert_close(logits[b], alone[n + step], atol=1e-5, rtol=0)


def test_a_pass_over_some_cache_rows_writes_those_rows_only(micro_model):
    """Rows 1-2 of a 3-row cache, prefilled and decoded as a slice, give the logits and the
    keys and values of a cache of their own; row 0 is not touched."""
    torch.manual_seed(4)
    ids = torch.randint(0, 512, (2, 10))
    shared, own = KVCache(micro_model.config, 3, 16), KVCache(micro_model.config, 2, 16)
    for layer in (*shared.k, *shared.v):
        layer[0] = 7.0
    with torch.no_grad():
        logits = {}
        for name, cache, rows in (("shared", shared, slice(1, 3)), ("own", own, slice(0, 2))):
            steps = [micro_model(ids[:, :6], cache=cache, rows=rows)]
            steps += [micro_model(ids[:, t : t + 1], cache=cache, rows=rows) for t in range(6, 10)]
            logits[name] = torch.cat(steps, dim=1)
    torch.testing.assert_close(logits["shared"], logits["own"], atol=1e-6, rtol=0)
    for mine, theirs in zip((*shared.k, *shared.v), (*own.k, *own.v), strict=True):
        assert (mine[0] == 7.0).all()
        torch.testing.assert_close(mine[1:], theirs, atol=1e-6, rtol=0)
    assert shared.lengths.tolist() == [0, 10, 10]


def test_kv_cache_rope_tables_are_the_tables_of_each_position(micro_model):
    config = micro_model.config
    cache = KVCache(config, 1, 64)
    positions = torch.tensor([[0, 5, 63], [1, 2, 3]])
    cos, sin = rope_tables(positions, config.head_dim, config.rope_theta)  # (2, 1, 3, D)
    assert cache.rope_cos.shape == cache.rope_sin.shape == (64, config.head_dim)
    torch.testing.assert_close(cache.rope_cos[positions][:, None], cos, atol=1e-6, rtol=0)
    torch.testing.assert_close(cache.rope_sin[positions][:, None], sin, atol=1e-6, rtol=0)


def test_kv_cache_overflow_is_an_error(micro_model):
    cache = KVCache(micro_model.config, 1, 8)
    with torch.no_grad(), pytest.raises(ValueError, match="KV cache holds 8 tokens per row; 9"):
        micro_model(torch.zeros(1, 9, dtype=torch.long), cache=cache)


def test_micro_model_overfits_one_batch():
    torch.manual_seed(0)
    model = Transformer(micro())
    batch = torch.randint(0, 512, (4, 33))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(150):
        logits = model(batch[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, 512), batch[:, 1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.1


@pytest.mark.parametrize("name", PRESETS)
@pytest.mark.parametrize("tied", [True, False])
def test_parameter_count_formula_matches_the_model(name, tied):
    config = preset(name, vocab_size=1000)
    config.tie_word_embeddings = tied
    with torch.device("meta"):
        model = Transformer(config)
    assert num_parameters(config) == sum(p.numel() for p in model.parameters())
    assert num_parameters(config, include_embedding=False) == num_parameters(config) - 1000 * (
        config.hidden_size
    )


def test_flops_per_token_is_six_n_plus_attention():
    c = preset("mid", vocab_size=1000)
    n_matmul = (
        c.num_hidden_layers
        * (
            c.hidden_size * c.head_dim * 2 * (c.num_attention_heads + c.num_key_value_heads)
            + 3 * c.hidden_size * c.intermediate_size
        )
        + 1000 * c.hidden_size
    )
    # causal attention: QKᵀ and AV over an average of seq/2 keys, ×3 for the backward pass
    attention = 3 * 2 * c.num_hidden_layers * c.num_attention_heads * c.head_dim * 1024
    assert flops_per_token(c, 1024) == 6 * n_matmul + attention
    assert flops_per_token(c, 1024, training=False) == (6 * n_matmul + attention) / 3


def test_config_rejects_heads_that_do_not_group():
    with pytest.raises(ValueError, match="multiple of num_key_value_heads 3"):
        micro(num_attention_heads=4, num_key_value_heads=3)


@pytest.mark.slow
def test_decode_attention_benchmark_times_both_forms_eager_and_compiled(capsys):
    argv = ["--batch-sizes", "2", "--lengths", "5", "--dtypes", "float32", "--repeats", "2"]
    results = load_bench("decode_attention").main([*argv, "--layers", "1"])
    forms = ["matmuls, eager", "matmuls, compiled", "sums, eager", "sums, compiled"]
    assert [r["form"] for r in results] == forms
    assert all(r["ms"] > 0 for r in results)
    rows = [line.split(" | ") for line in capsys.readouterr().out.splitlines()[3:]]
    assert [row[3] for row in rows] == forms
    assert all(float(row[5].rstrip(" |")) < 1e-5 for row in rows)  # each equals fp32 SDPA
