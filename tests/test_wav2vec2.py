"""wav2vec 2.0 / HuBERT encoders load HF checkpoint folders and give the PyTorch reference's hidden states.

tests/data/{wav2vec2_tiny, hubert_tiny, speech_golden.npz} were made once by tests/data/make_speech_golden.py
(PyTorch 2.13 CPU, transformers 5.24; read its docstring): a base-style wav2vec 2.0 saved as fp16
model.safetensors and a large-style (stable layer norm) HuBERT saved as a bf16 pytorch_model.bin with
legacy weight_g/weight_v names, both with perturbed random weights, and their fp32 hidden states.
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from flax import nnx

from daetalker_jax.errors import UserError
from daetalker_jax.models.hf_weights import SAFETENSORS_DTYPES, load_state_dict
from daetalker_jax.models.wav2vec2 import Wav2Vec2Config, features_for_frames, load_encoder

DATA = Path(__file__).parent / "data"
GOLDEN = np.load(DATA / "speech_golden.npz")
MODELS = ("wav2vec2", "hubert")
_apply = nnx.jit(lambda model, wave: model(wave))   # eager op-by-op dispatch is several times slower


def _rel(ours, ref) -> float:
    return float(np.linalg.norm(np.asarray(ours, np.float64) - ref) / np.linalg.norm(ref))


def _speech_like(n: int, seed: int) -> np.ndarray:
    """Harmonics of a gliding f0 under a 4 Hz syllable envelope, noise in the gaps; 16 kHz."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 16000
    phase = 2 * np.pi * np.cumsum(120 + 30 * np.sin(2 * np.pi * 1.5 * t)) / 16000
    env = np.clip(np.sin(2 * np.pi * 4 * t + rng.uniform(0, 6)), 0, None) ** 2
    voiced = sum(np.sin(k * phase) / k for k in range(1, 25))
    return (0.3 * env * voiced + 0.05 * (1 - env) * rng.standard_normal(n)).astype(np.float32)


def _write_safetensors(path: Path, tensors: dict[str, np.ndarray]) -> None:
    names = {v: k for k, v in SAFETENSORS_DTYPES.items()}
    header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for name, array in tensors.items():
        blob = np.ascontiguousarray(array).tobytes()
        header[name] = {"dtype": names[array.dtype], "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    head = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(head)) + head + b"".join(blobs))


@pytest.fixture(scope="module")
def encoders() -> dict:
    return {name: load_encoder(DATA / f"{name}_tiny") for name in MODELS}


@pytest.mark.parametrize("name", MODELS)
def test_hidden_states_match_pytorch(encoders, name):
    cfg, model = encoders[name]
    assert (cfg.model_type, cfg.do_stable_layer_norm) == {"wav2vec2": ("wav2vec2", False),
                                                           "hubert": ("hubert", True)}[name]
    assert (cfg.stride, cfg.receptive_field) == (320, 400)
    ours = _apply(model, jnp.asarray(GOLDEN["wave"]))
    ref = list(GOLDEN[f"{name}_hidden_states"])
    assert len(ours) == len(ref) == cfg.num_hidden_layers + 1
    # Ours end with last_hidden_state (transformers 4.x / fairseq); 5.x's hidden_states[-1] lacks the final
    # LayerNorm of stable-layer-norm models, and is the same thing for the others.
    ref[-1] = GOLDEN[f"{name}_last_hidden_state"]
    errors = [_rel(o, r) for o, r in zip(ours, ref)]
    assert max(errors) < 1e-4, errors
    assert all(o.shape == r.shape for o, r in zip(ours, ref))


@pytest.mark.parametrize("name,file", [("wav2vec2", "model.safetensors"), ("hubert", "pytorch_model.bin")])
def test_state_dict_is_what_torch_reads(name, file):
    state = load_state_dict(DATA / f"{name}_tiny")
    keys = [k.decode() for k in GOLDEN[f"{name}_keys"]]
    assert sorted(state) == keys
    assert [",".join(map(str, state[k].shape)) for k in keys] == [s.decode() for s in GOLDEN[f"{name}_shapes"]]
    dtype = np.float16 if file.endswith("safetensors") else ml_dtypes.bfloat16
    assert all(v.dtype == dtype for v in state.values())
    for k, (total, weighted) in zip(keys, GOLDEN[f"{name}_sums"]):
        v = state[k].astype(np.float64).ravel()
        np.testing.assert_allclose([v.sum(), (v * np.linspace(0, 1, v.size)).sum()], [total, weighted],
                                   rtol=1e-12, atol=1e-12, err_msg=k)


def test_safetensors_dtypes_and_shards(tmp_path):
    arrays = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "steps": np.array([1, -2**40], np.int64),
              "h": np.array([0.5, -3], np.float16), "b": np.array([1.5, 2], ml_dtypes.bfloat16)}
    _write_safetensors(tmp_path / "one.safetensors", {k: arrays[k] for k in ("a", "steps")})
    _write_safetensors(tmp_path / "two.safetensors", {k: arrays[k] for k in ("h", "b")})
    weight_map = {"a": "one.safetensors", "steps": "one.safetensors", "h": "two.safetensors", "b": "two.safetensors"}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    state = load_state_dict(tmp_path)
    assert sorted(state) == sorted(arrays)
    for k, v in arrays.items():
        assert state[k].dtype == v.dtype and np.array_equal(state[k], v), k
    (tmp_path / "two.safetensors").unlink()
    with pytest.raises(UserError, match="two.safetensors"):
        load_state_dict(tmp_path)


def test_task_checkpoint_prefix_and_bad_weights(encoders, tmp_path):
    """A CTC-style checkpoint ('wav2vec2.' prefix, a head) loads the same model; bad tensors are named."""
    state = load_state_dict(DATA / "wav2vec2_tiny")
    shutil.copy(DATA / "wav2vec2_tiny" / "config.json", tmp_path)
    prefixed = {f"wav2vec2.{k}": v for k, v in state.items()} | {"lm_head.weight": np.zeros((5, 32), np.float16)}
    _write_safetensors(tmp_path / "model.safetensors", prefixed)
    _, model = load_encoder(tmp_path)
    ours, ref = nnx.to_pure_dict(nnx.state(model)), nnx.to_pure_dict(nnx.state(encoders["wav2vec2"][1]))
    assert all(np.array_equal(a, b) for a, b in zip(_leaves(ours), _leaves(ref)))

    name = "wav2vec2.encoder.layers.1.feed_forward.output_dense.bias"
    _write_safetensors(tmp_path / "model.safetensors", {k: v for k, v in prefixed.items() if k != name})
    with pytest.raises(UserError, match="encoder.layers.1.feed_forward.output_dense.bias"):
        load_encoder(tmp_path)
    _write_safetensors(tmp_path / "model.safetensors", prefixed | {name: np.zeros(31, np.float16)})
    with pytest.raises(UserError, match=r"output_dense.bias.*\(31,\).*\(32,\)"):
        load_encoder(tmp_path)


def _leaves(tree: dict) -> list:
    return [x for k in sorted(tree, key=str) for x in (_leaves(tree[k]) if isinstance(tree[k], dict) else [tree[k]])]


def test_missing_folder_config_or_weights(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_encoder(tmp_path / "nope")
    with pytest.raises(UserError, match="config.json"):
        load_encoder(tmp_path)
    shutil.copy(DATA / "hubert_tiny" / "config.json", tmp_path)
    (tmp_path / "tf_model.h5").write_bytes(b"")
    with pytest.raises(UserError, match=r"no PyTorch weights.*found: config.json, tf_model.h5"):
        load_encoder(tmp_path)
    (tmp_path / "model.safetensors").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:0\n")
    with pytest.raises(UserError, match="git lfs pull"):
        load_encoder(tmp_path)


def test_config_reads_preprocessor_and_refuses_unsupported(tmp_path):
    raw = json.loads((DATA / "hubert_tiny" / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(raw))
    assert Wav2Vec2Config.from_folder(tmp_path).do_normalize
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"do_normalize": False}))
    assert not Wav2Vec2Config.from_folder(tmp_path).do_normalize
    (tmp_path / "config.json").write_text(json.dumps(raw | {"conv_pos_batch_norm": True}))
    with pytest.raises(UserError, match="conv_pos_batch_norm"):
        Wav2Vec2Config.from_folder(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(raw | {"model_type": "wavlm"}))
    with pytest.raises(UserError, match="wavlm"):
        Wav2Vec2Config.from_folder(tmp_path)


def test_features_for_frames_shape_and_alignment(encoders):
    """Exactly 2 features per video frame whether the audio is shorter or longer than the video or not a
    multiple of 640 samples; a short clip is one pass over the normalised wave shifted right by 40 samples
    and cut to (2n - 1) * 320 + 400 samples, so feature k is centred on sample 320 k + 160."""
    cfg, model = encoders["hubert"]
    for n_frames, n_samples in [(7, 4321), (7, 4480), (7, 9000), (1, 300)]:
        wave = _speech_like(n_samples, n_samples)
        feats = features_for_frames(model, cfg, wave, n_frames)
        assert feats.shape == (2 * n_frames, cfg.num_hidden_layers + 1, cfg.hidden_size), n_samples
        assert feats.dtype == np.float32
        if n_frames == 7:
            normed = (wave - wave.mean()) / np.sqrt(wave.var() + 1e-7)
            padded = np.zeros(13 * 320 + 400, np.float32)
            body = normed[:padded.size - 40]
            padded[40:40 + body.size] = body
            ref = np.stack([h[0] for h in _apply(model, jnp.asarray(padded[None]))], axis=1)
            assert _rel(feats, ref) < 1e-5, n_samples


@pytest.mark.parametrize("name", MODELS)
def test_chunked_matches_unchunked(encoders, name):
    """6 s in 1 s chunks with 1 s context on each side vs one pass.

    Measured relative difference (middle 4 s): wav2vec2 9.0e-3 / 1.0e-2 / 1.1e-2 (states 0/1/2; its first
    GroupNorm takes statistics over the whole window), HuBERT 2.7e-7 / 6.2e-3 / 8.3e-3: the random-weight
    attention is nearly uniform, so every frame sees the window's mean. HuBERT's state 0 (conv stack and
    positional conv only) is exact, which pins the window bookkeeping.
    """
    cfg, model = encoders[name]
    wave, n_frames = _speech_like(6 * 16000, 0), 150
    whole = features_for_frames(model, cfg, wave, n_frames, chunk_seconds=100.0)
    chunked = features_for_frames(model, cfg, wave, n_frames, chunk_seconds=1.0, context_seconds=1.0)
    assert chunked.shape == whole.shape == (300, 3, 32)
    middle = slice(50, 250)
    errors = [_rel(chunked[middle, i], whole[middle, i]) for i in range(3)]
    assert max(errors) < 3e-2, errors
    if name == "hubert":
        assert errors[0] < 1e-5, errors
