"""Model heads: the score head is transformers' LlamaForSequenceClassification (equal scores, both
ways, under any padding), and the value head gives per-token values that survive a checkpoint."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import (
    AutoModelForSequenceClassification,
    LlamaConfig,
    LlamaForCausalLM,
    LlamaForSequenceClassification,
)

from charter.checkpoint import (
    VALUE_HEAD_FILE,
    CheckpointError,
    load_checkpoint,
    load_policy_with_value,
    load_score_model,
    save_checkpoint,
    save_policy_with_value,
    write_checkpoint,
)
from charter.config import CAUSAL_LM, SEQUENCE_CLASSIFICATION, ModelConfig
from charter.heads import PolicyWithValue, ScoreModel, last_token_positions
from charter.model import Transformer
from tests.helpers import micro

PAD = 0
LENGTHS = [9, 4, 12]


def score_model(num_labels: int = 1, **overrides) -> ScoreModel:
    torch.manual_seed(0)
    config = micro(
        architecture=SEQUENCE_CLASSIFICATION, num_labels=num_labels, pad_token_id=PAD, **overrides
    )
    return ScoreModel(config).eval()


def policy() -> Transformer:
    torch.manual_seed(0)
    return Transformer(micro(pad_token_id=PAD)).eval()


def token_rows(lengths: list[int], vocab_size: int = 512) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return [torch.randint(1, vocab_size, (n,), generator=generator) for n in lengths]  # no PAD


def padded(rows: list[torch.Tensor], side: str) -> tuple[torch.Tensor, torch.Tensor]:
    """input_ids and attention_mask (B, T) of `rows` padded with PAD on `side`."""
    T = max(len(r) for r in rows)
    ids = torch.full((len(rows), T), PAD)
    mask = torch.zeros(len(rows), T, dtype=torch.long)
    for b, row in enumerate(rows):
        span = slice(T - len(row), T) if side == "left" else slice(0, len(row))
        ids[b, span], mask[b, span] = row, 1
    return ids, mask


def hf_scores(hf, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    # No position_ids: transformers numbers the padding too, which shifts a left-padded row's
    # real tokens, but RoPE depends only on their distances, so the scores differ by rounding.
    with torch.no_grad():
        return hf(input_ids=ids, attention_mask=mask).logits


def load_hf_classifier(directory):
    return AutoModelForSequenceClassification.from_pretrained(directory, dtype=torch.float32).eval()


# ---- score head: parity with transformers ----


@pytest.mark.parametrize("num_labels", [1, 3])
def test_unpadded_scores_equal_transformers(tmp_path, num_labels):
    model = score_model(num_labels)
    save_checkpoint(model, tmp_path / "rm")
    hf = load_hf_classifier(tmp_path / "rm")
    assert isinstance(hf, LlamaForSequenceClassification) and hf.config.num_labels == num_labels
    ids = torch.stack(token_rows([10, 10, 10]))
    with torch.no_grad():
        scores = model(ids)
        assert scores.shape == (3, num_labels)
        torch.testing.assert_close(scores, hf(ids).logits, atol=1e-5, rtol=0)


@pytest.mark.parametrize("side", ["right", "left"])
def test_padded_scores_equal_transformers_and_each_row_alone(tmp_path, side):
    model = score_model(num_labels=2)
    save_checkpoint(model, tmp_path / "rm")
    hf = load_hf_classifier(tmp_path / "rm")
    rows = token_rows(LENGTHS)
    ids, mask = padded(rows, side)
    with torch.no_grad():
        scores = model(ids, attention_mask=mask)
        alone = torch.cat([model(row[None]) for row in rows])
    torch.testing.assert_close(scores, hf_scores(hf, ids, mask), atol=1e-5, rtol=0)
    torch.testing.assert_close(scores, alone, atol=1e-5, rtol=0)


def test_transformers_classifier_loads_in_charter_with_equal_scores(tmp_path):
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=300,
        hidden_size=96,
        intermediate_size=200,
        num_hidden_layers=2,
        num_attention_heads=6,
        num_key_value_heads=2,
        rope_theta=50_000.0,
        num_labels=2,
        pad_token_id=PAD,
    )
    hf = LlamaForSequenceClassification(config).eval()
    hf.save_pretrained(tmp_path / "hf")
    model = load_score_model(tmp_path / "hf")
    assert model.config.num_labels == 2 and model.config.pad_token_id == PAD
    ids, mask = padded(token_rows(LENGTHS, vocab_size=300), "left")
    with torch.no_grad():
        scores = model(ids, attention_mask=mask)
    torch.testing.assert_close(scores, hf_scores(hf, ids, mask), atol=1e-5, rtol=0)


# ---- score head: the directory ----


def test_score_directory_is_a_sequence_classifier_and_round_trips_exactly(tmp_path, tokenizer):
    model = score_model(num_labels=3)
    saved = save_checkpoint(model, tmp_path / "judge", tokenizer=tokenizer)
    assert not (saved / "generation_config.json").exists()  # nothing to generate
    config = json.loads((saved / "config.json").read_text())
    assert config["architectures"] == ["LlamaForSequenceClassification"]
    assert config["num_labels"] == 3 and len(config["id2label"]) == 3
    assert config["pad_token_id"] == PAD
    tensors = load_file(saved / "model.safetensors")
    assert tensors["score.weight"].shape == (3, 64)
    assert "lm_head.weight" not in tensors and "score.bias" not in tensors
    assert all(n.startswith("model.") for n in tensors if n != "score.weight")
    loaded = load_score_model(saved)
    assert loaded.state_dict().keys() == model.state_dict().keys()
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name


def test_a_policy_checkpoint_loads_as_a_score_model_with_a_seeded_head(tmp_path):
    lm = policy()
    save_checkpoint(lm, tmp_path / "policy")
    first = load_score_model(tmp_path / "policy", seed=1)
    again = load_score_model(tmp_path / "policy", seed=1)
    other = load_score_model(tmp_path / "policy", seed=2, num_labels=4)
    assert first.config.architecture == SEQUENCE_CLASSIFICATION and first.config.num_labels == 1
    assert not hasattr(first.model, "lm_head")
    assert torch.equal(first.score.weight, again.score.weight)
    assert other.score.weight.shape == (4, 64)
    assert not torch.equal(first.score.weight, other.score.weight[:1])
    assert 0.01 < float(first.score.weight.detach().std()) < 0.03  # N(0, initializer_range = 0.02)
    ids = torch.stack(token_rows([7, 7]))
    with torch.no_grad():
        expected = first.score(lm.hidden_states(ids)[:, -1])  # the policy's own trunk
        torch.testing.assert_close(first(ids), expected, atol=1e-6, rtol=0)
    save_checkpoint(first, tmp_path / "rm")
    assert isinstance(load_hf_classifier(tmp_path / "rm"), LlamaForSequenceClassification)


def test_a_score_directory_does_not_load_as_a_causal_lm(tmp_path):
    save_checkpoint(score_model(), tmp_path / "rm")
    message = r"LlamaForSequenceClassification checkpoint \(a score head, no LM head\).*load_score"
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(tmp_path / "rm")
    with pytest.raises(CheckpointError, match=message):
        load_policy_with_value(tmp_path / "rm", value_head_seed=0)


def test_missing_score_weight_is_named(tmp_path):
    saved = save_checkpoint(score_model(), tmp_path / "rm")
    tensors = load_file(saved / "model.safetensors")
    del tensors["score.weight"]
    save_file(tensors, saved / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"'score\.weight' is missing \(shape \(1, 64\)\)"):
        load_score_model(saved)


def test_a_label_count_other_than_the_checkpoints_is_refused(tmp_path):
    saved = save_checkpoint(score_model(num_labels=3), tmp_path / "judge")
    with pytest.raises(CheckpointError, match="its score head has 3 labels, not 1"):
        load_score_model(saved, num_labels=1)


def test_an_unknown_architecture_is_refused_by_name(tmp_path):
    saved = save_checkpoint(score_model(), tmp_path / "rm")
    config = json.loads((saved / "config.json").read_text())
    config["architectures"] = ["LlamaForTokenClassification"]
    (saved / "config.json").write_text(json.dumps(config))
    message = r"architectures \['LlamaForTokenClassification'\] unsupported; Charter reads"
    for load in (load_score_model, load_checkpoint):
        with pytest.raises(CheckpointError, match=message):
            load(saved)
    with pytest.raises(ValueError, match="architecture 'LlamaModel' unsupported"):
        micro(architecture="LlamaModel")


# ---- the config fields ----


@pytest.mark.parametrize(
    "architecture, num_labels",
    [(CAUSAL_LM, 1), (SEQUENCE_CLASSIFICATION, 1), (SEQUENCE_CLASSIFICATION, 5)],
)
def test_architecture_and_num_labels_round_trip_through_config_json(architecture, num_labels):
    config = micro(architecture=architecture, num_labels=num_labels)
    d = config.to_hf_dict()
    assert d["architectures"] == [architecture] and "architecture" not in d
    assert ("num_labels" in d) == (architecture == SEQUENCE_CLASSIFICATION)
    assert ModelConfig.from_hf_dict(d) == config


def test_num_labels_is_read_as_transformers_reads_it():
    d = micro(architecture=SEQUENCE_CLASSIFICATION, num_labels=3).to_hf_dict()
    del d["num_labels"]  # transformers writes only id2label
    assert ModelConfig.from_hf_dict(d).num_labels == 3
    del d["id2label"], d["label2id"]  # neither: PretrainedConfig's default
    assert ModelConfig.from_hf_dict(d).num_labels == 2
    d.update(num_labels=2, id2label={"0": "a", "1": "b", "2": "c"})
    with pytest.raises(ValueError, match="num_labels 2 disagrees with id2label's 3 labels"):
        ModelConfig.from_hf_dict(d)


# ---- where the score is read ----


def test_the_score_is_read_at_the_last_non_pad_token_under_either_padding():
    ids, mask = padded([torch.tensor([5, 6]), torch.tensor([7, 8, 9, 4])], "right")
    assert last_token_positions(ids, PAD, mask).tolist() == [1, 3]
    ids, mask = padded([torch.tensor([5, 6]), torch.tensor([7, 8, 9, 4])], "left")
    assert last_token_positions(ids, PAD, mask).tolist() == [3, 3]
    assert last_token_positions(torch.tensor([[3, 4, 5]]), None).tolist() == [2]


def test_a_batch_without_pad_token_is_refused():
    with pytest.raises(ValueError, match="pad_token_id is None, so the last token of each of 2"):
        last_token_positions(torch.ones(2, 3, dtype=torch.long), None)


def test_a_row_ending_in_the_pad_token_is_refused_not_scored_elsewhere():
    ids = torch.tensor([[5, 6, 7], [5, 6, PAD]])  # row 1 ends on a real PAD-valued token (EOS)
    mask = torch.ones(2, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="row 1: transformers would score it at 1, .* ends at 2"):
        last_token_positions(ids, PAD, mask)


# ---- value head ----


def test_one_pass_gives_the_policys_logits_and_a_value_per_token():
    lm = policy()
    model = PolicyWithValue(lm, seed=0).eval()
    assert model.policy is lm  # the trunk is shared, not copied
    ids = torch.stack(token_rows([11, 11]))
    with torch.no_grad():
        logits, values = model(ids)
        assert logits.shape == (2, 11, 512) and values.shape == (2, 11)
        assert torch.equal(logits, lm(ids))
        hidden = lm.hidden_states(ids)
        expected = hidden @ model.value_head.weight[0] + model.value_head.bias
        torch.testing.assert_close(values, expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("side", ["right", "left"])
def test_padded_logits_and_values_equal_each_row_alone(side):
    model = PolicyWithValue(policy()).eval()
    rows = token_rows(LENGTHS)
    ids, mask = padded(rows, side)
    with torch.no_grad():
        logits, values = model(ids, attention_mask=mask)
        for b, row in enumerate(rows):
            alone_logits, alone_values = model(row[None])
            real = mask[b].bool()
            torch.testing.assert_close(logits[b, real], alone_logits[0], atol=1e-5, rtol=0)
            torch.testing.assert_close(values[b, real], alone_values[0], atol=1e-5, rtol=0)


def test_value_head_is_saved_beside_the_policy_and_loaded_back(tmp_path, tokenizer):
    model = PolicyWithValue(policy(), seed=4).eval()
    with torch.no_grad():
        model.value_head.bias.fill_(0.25)  # as training would move it from 0
    saved = save_policy_with_value(model, tmp_path / "ppo", tokenizer=tokenizer)
    assert (saved / VALUE_HEAD_FILE).exists()
    loaded = load_policy_with_value(saved)
    ids = torch.stack(token_rows([8, 8]))
    with torch.no_grad():
        for ours, theirs in zip(model(ids), loaded(ids)):
            assert torch.equal(ours, theirs)
        # The directory is still a causal LM for everyone else, value head aside.
        assert torch.equal(load_checkpoint(saved)(ids), model.policy(ids))
        hf = LlamaForCausalLM.from_pretrained(saved, dtype=torch.float32).eval()
        torch.testing.assert_close(hf(ids).logits, model.policy(ids), atol=1e-4, rtol=0)


def test_a_policy_without_value_head_needs_a_seed_for_a_new_one(tmp_path):
    save_checkpoint(policy(), tmp_path / "sft")
    with pytest.raises(
        CheckpointError, match="value_head.safetensors not found: pass value_head_se"
    ):
        load_policy_with_value(tmp_path / "sft")
    first = load_policy_with_value(tmp_path / "sft", value_head_seed=3)
    again = load_policy_with_value(tmp_path / "sft", value_head_seed=3)
    assert torch.equal(first.value_head.weight, again.value_head.weight)
    assert torch.equal(first.value_head.bias, torch.zeros(1))


def test_a_policy_with_values_state_dict_is_not_written_as_a_plain_checkpoint(tmp_path):
    model = PolicyWithValue(policy())
    with pytest.raises(ValueError, match=r"policy\.embed_tokens\.weight.* not part of a LlamaFor"):
        write_checkpoint(tmp_path, model.config, model.state_dict())
