"""Qwen2 decoder: parity with transformers' Qwen2ForCausalLM (the reference).

Reference models are random tiny Qwen2s built with transformers (torch, CPU,
float32, eager attention), saved with save_pretrained and loaded with our
loader. All weights are randomised at O(1) scale, including biases and norm
weights, so a swapped or untransposed tensor cannot hide behind zero biases or
unit norms.
"""
import dataclasses

import numpy as np
import pytest
import tensorflow as tf
import torch
import transformers

from tf_genrec.models.qwen2 import Qwen2Config, Qwen2ForCausalLM
from tf_genrec.models.qwen2.checkpoint import hf_parameters, load_hf_checkpoint
from tf_genrec.models.qwen2.modeling import position_ids_from_mask

CONFIGS = {
    # GQA (nKV < nH), untied head, bias-carrying attention.
    "gqa_untied": dict(vocab_size=97, hidden_size=48, intermediate_size=80,
                       num_hidden_layers=2, num_attention_heads=6,
                       num_key_value_heads=2, rope_theta=10000.0,
                       tie_word_embeddings=False),
    # Tied head, plain multi-head attention, Qwen2.5's rope_theta.
    "mha_tied": dict(vocab_size=64, hidden_size=32, intermediate_size=64,
                     num_hidden_layers=3, num_attention_heads=4,
                     num_key_value_heads=4, rope_theta=1e6,
                     tie_word_embeddings=True),
    # Multi-query (a single kv head), tied head.
    "mqa_tied": dict(vocab_size=50, hidden_size=32, intermediate_size=40,
                     num_hidden_layers=2, num_attention_heads=4,
                     num_key_value_heads=1, rope_theta=10000.0,
                     tie_word_embeddings=True, rms_norm_eps=1e-5),
}


def _random_hf_model(kwargs, seed):
  torch.manual_seed(seed)
  config = transformers.Qwen2Config(attn_implementation="eager", **kwargs)
  model = transformers.Qwen2ForCausalLM(config).eval()
  with torch.no_grad():
    for name, p in model.named_parameters():
      if name.endswith("norm.weight"):
        p.copy_(1.0 + 0.2 * torch.randn_like(p))
      elif p.ndim == 2 and "embed" not in name:
        p.normal_(0.0, p.shape[1]**-0.5)  # Keeps activations O(1).
      else:
        p.normal_(0.0, 1.0)
  return model


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def models(request, tmp_path_factory):
  """(config name, HF reference model, our model loaded from its checkpoint)."""
  hf = _random_hf_model(CONFIGS[request.param], seed=len(request.param))
  path = tmp_path_factory.mktemp(request.param)
  hf.save_pretrained(path, safe_serialization=True)
  return request.param, hf, load_hf_checkpoint(str(path))


def _left_padded_batch(rng, vocab_size, lengths, pad_id=0):
  width = max(lengths)
  ids = np.full([len(lengths), width], pad_id, np.int32)
  mask = np.zeros([len(lengths), width], np.int32)
  for row, n in enumerate(lengths):
    ids[row, width - n:] = rng.integers(0, vocab_size, n)
    mask[row, width - n:] = 1
  return ids, mask


def _hf_logits(hf, ids, mask):
  positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
  with torch.no_grad():
    out = hf(input_ids=torch.tensor(ids, dtype=torch.long),
             attention_mask=torch.tensor(mask, dtype=torch.long),
             position_ids=torch.tensor(positions, dtype=torch.long))
  return out.logits.numpy()


def _assert_close(ours, ref):
  rel = np.max(np.abs(ours - ref)) / np.max(np.abs(ref))
  assert rel < 1e-4, f"max|ours-ref| / max|ref| = {rel:.2e}"
  np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("lengths", [[1], [9], [30], [5, 17, 1, 12]],
                         ids=["len1", "len9", "len30", "left_padded"])
def test_logits_match_transformers(models, lengths):
  name, hf, ours = models
  rng = np.random.default_rng(len(lengths) * 31 + max(lengths))
  ids, mask = _left_padded_batch(rng, CONFIGS[name]["vocab_size"], lengths)
  ref = _hf_logits(hf, ids, mask)
  got = ours(tf.constant(ids), tf.constant(mask)).numpy()
  assert got.shape == ref.shape
  valid = mask.astype(bool)  # Pad positions are unspecified in both models.
  _assert_close(got[valid], ref[valid])


def test_left_padding_does_not_change_results(models):
  _, _, ours = models
  rng = np.random.default_rng(7)
  ids, mask = _left_padded_batch(rng, ours.config.vocab_size, [11, 4])
  padded = ours(tf.constant(ids), tf.constant(mask)).numpy()
  for row, n in enumerate([11, 4]):
    alone = ours(tf.constant(ids[row:row + 1, -n:]),
                 tf.constant(mask[row:row + 1, -n:])).numpy()[0]
    np.testing.assert_allclose(padded[row, -n:], alone, rtol=1e-5, atol=1e-5)


def test_tf_function_and_gradients_match_transformers(models):
  name, hf, ours = models
  rng = np.random.default_rng(3)
  ids, mask = _left_padded_batch(rng, CONFIGS[name]["vocab_size"], [6, 10])
  weights = rng.normal(size=ids.shape + (ours.config.vocab_size,))
  weights *= mask[..., None]  # Pad positions carry no loss.

  @tf.function
  def loss_and_grads(ids, mask):
    with tf.GradientTape() as tape:
      loss = tf.reduce_sum(ours(ids, mask) * weights.astype(np.float32))
    return loss, tape.gradient(loss, ours.trainable_variables)

  loss, grads = loss_and_grads(tf.constant(ids), tf.constant(mask))
  by_variable = {v.ref(): g for v, g in zip(ours.trainable_variables, grads)}

  hf.zero_grad()
  positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
  ref_logits = hf(input_ids=torch.tensor(ids, dtype=torch.long),
                  attention_mask=torch.tensor(mask, dtype=torch.long),
                  position_ids=torch.tensor(positions)).logits
  ref_loss = (ref_logits * torch.tensor(weights, dtype=torch.float32)).sum()
  ref_loss.backward()
  np.testing.assert_allclose(loss.numpy(), ref_loss.item(), rtol=1e-4)

  ref_grads = dict(hf.named_parameters())
  params = hf_parameters(ours)
  assert len(params) == len(ours.trainable_variables)
  for hf_name, (variable, transposed) in params.items():
    # The embedding's gradient is IndexedSlices; densify it.
    got = tf.convert_to_tensor(by_variable[variable.ref()]).numpy()
    got = got.T if transposed else got
    ref = ref_grads[hf_name].grad.numpy()
    rel = np.max(np.abs(got - ref)) / np.max(np.abs(ref))
    assert rel < 1e-4, f"{hf_name}: relative gradient error {rel:.2e}"


def test_position_ids_from_left_padded_mask():
  mask = tf.constant([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
  np.testing.assert_array_equal(position_ids_from_mask(mask).numpy(),
                                [[0, 0, 0, 1, 2], [0, 1, 2, 3, 4]])


def _tiny_config(**overrides):
  kwargs = dict(vocab_size=40, hidden_size=16, intermediate_size=24,
                num_hidden_layers=1, num_attention_heads=4,
                num_key_value_heads=2, tie_word_embeddings=False)
  kwargs.update(overrides)
  return Qwen2Config(**kwargs)


@pytest.mark.parametrize("tied", [False, True])
def test_resize_token_embeddings_keeps_old_rows(tied):
  model = Qwen2ForCausalLM(_tiny_config(tie_word_embeddings=tied), seed=5)
  ids, mask = tf.constant([[3, 7, 39, 1]]), tf.ones([1, 4], tf.int32)
  old_logits = model(ids, mask).numpy()
  old_embed = model.model.embed_tokens.weight.numpy()
  old_head = model.lm_head_weight().numpy()

  model.resize_token_embeddings(40 + 300, seed=1)
  assert model.config.vocab_size == 340
  embed = model.model.embed_tokens.weight.numpy()
  head = model.lm_head_weight().numpy()
  assert embed.shape == head.shape == (340, 16)
  np.testing.assert_array_equal(embed[:40], old_embed)
  np.testing.assert_array_equal(head[:40], old_head)
  # New rows: N(0, 0.02) (300 x 16 samples pin the std down to ~2%).
  assert abs(embed[40:].std() - 0.02) < 0.002
  assert abs(embed[40:].mean()) < 0.002
  if tied:
    np.testing.assert_array_equal(head, embed)
  new_logits = model(ids, mask).numpy()
  np.testing.assert_allclose(new_logits[..., :40], old_logits, rtol=1e-6,
                             atol=1e-6)
  assert len(model.trainable_variables) == len(
      Qwen2ForCausalLM(model.config).trainable_variables)
  with pytest.raises(ValueError, match="new_vocab_size"):
    model.resize_token_embeddings(100)


def test_same_seed_builds_same_model():
  a = Qwen2ForCausalLM(_tiny_config(), seed=3).trainable_variables
  b = Qwen2ForCausalLM(_tiny_config(), seed=3).trainable_variables
  c = Qwen2ForCausalLM(_tiny_config(), seed=4).trainable_variables
  assert all(np.array_equal(x.numpy(), y.numpy()) for x, y in zip(a, b))
  assert not np.array_equal(a[0].numpy(), c[0].numpy())


def test_dropout_is_training_only():
  model = Qwen2ForCausalLM(_tiny_config(), seed=1)
  ids = tf.constant([[1, 5, 7, 2, 9]])
  mask = tf.ones_like(ids)
  plain = model.model(ids, mask).numpy()
  np.testing.assert_array_equal(model.model(ids, mask).numpy(), plain)
  dropped = [model.model(ids, mask, dropout=0.5).numpy() for _ in range(2)]
  assert not np.allclose(dropped[0], plain, atol=1e-3)
  assert not np.allclose(dropped[0], dropped[1], atol=1e-3)
  # The default (inference) graph carries no dropout op at all.
  graph = tf.function(lambda i, m: model.model(i, m)).get_concrete_function(
      ids, mask).graph
  ops = {op.type for op in graph.get_operations()}
  assert not ops & {"RandomUniform", "StatelessRandomUniformV2"}, ops


def test_bad_inputs_raise_invalid_argument():
  model = Qwen2ForCausalLM(_tiny_config())
  with pytest.raises(tf.errors.InvalidArgumentError, match="attention_mask"):
    model(tf.constant([[1, 2, 3]]), tf.constant([[1, 1]]))
  with pytest.raises(tf.errors.InvalidArgumentError, match="40"):
    model(tf.constant([[1, 40]]), tf.constant([[1, 1]]))


def test_config_hf_dict_round_trip_through_transformers():
  config = _tiny_config(rope_theta=1e6, rms_norm_eps=1e-5)
  hf = transformers.Qwen2Config(**config.to_hf_dict())
  assert Qwen2Config.from_hf_dict(hf.to_dict()) == config
  assert hf.model_type == "qwen2"
  assert hf.rope_parameters["rope_theta"] == 1e6
  assert hf.num_key_value_heads == 2 and hf.tie_word_embeddings is False


def test_config_from_legacy_hf_dict_ignores_unknown_keys():
  d = dict(dataclasses.asdict(_tiny_config()), torch_dtype="bfloat16",
           use_sliding_window=False, sliding_window=4096, bos_token_id=1,
           model_type="qwen2", rope_theta=5e5)
  assert Qwen2Config.from_hf_dict(d).rope_theta == 5e5


@pytest.mark.parametrize("overrides, field", [
    (dict(hidden_act="gelu"), "hidden_act"),
    (dict(num_attention_heads=3), "num_attention_heads"),
    (dict(num_key_value_heads=3), "num_key_value_heads"),
    (dict(vocab_size=0), "vocab_size"),
    (dict(rms_norm_eps=0.0), "rms_norm_eps"),
])
def test_config_validation_names_the_field(overrides, field):
  with pytest.raises(ValueError, match=field):
    _tiny_config(**overrides)


@pytest.mark.parametrize("extra, field", [
    (dict(use_sliding_window=True), "use_sliding_window"),
    (dict(rope_parameters={"rope_type": "yarn", "factor": 4.0}),
     "rope_type"),
    (dict(rope_scaling={"type": "linear", "factor": 2.0}), "rope_scaling"),
    (dict(model_type="llama"), "model_type"),
    (dict(hidden_size=None), r"missing required keys \['hidden_size'\]"),
])
def test_unsupported_hf_features_are_rejected(extra, field):
  d = dict(dataclasses.asdict(_tiny_config()), **extra)
  with pytest.raises(ValueError, match=field):
    Qwen2Config.from_hf_dict(d)


def test_exports_in_a_saved_model(tmp_path):
  model = Qwen2ForCausalLM(_tiny_config(), seed=2)
  spec = tf.TensorSpec([None, None], tf.int32)
  model.serve = tf.function(model.__call__, input_signature=[spec, spec])
  tf.saved_model.save(model, str(tmp_path))
  reloaded = tf.saved_model.load(str(tmp_path))
  ids = tf.constant([[0, 0, 4, 5, 6], [7, 8, 9, 10, 11]])
  mask = tf.constant([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
  np.testing.assert_allclose(reloaded.serve(ids, mask).numpy(),
                             model(ids, mask).numpy(), rtol=1e-6, atol=1e-6)
