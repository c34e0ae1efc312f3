"""Writes the speech-encoder golden files: tiny random wav2vec 2.0 / HuBERT checkpoints and their outputs.

Run once by hand, outside the test suite (tests never import this file; it needs torch and transformers,
which the project itself does not): `python tests/data/make_speech_golden.py` with PyTorch 2.13 CPU and
transformers 5.24. It writes

- tests/data/wav2vec2_tiny/{config.json, model.safetensors}: a wav2vec 2.0 *base*-style model
  (group norm on the first conv, post-LN transformer), saved by `save_pretrained` in fp16 (F16 tensors,
  weight norm as `parametrizations.weight.original0/1`);
- tests/data/hubert_tiny/{config.json, pytorch_model.bin}: a HuBERT *large*-style model (layer norm on
  every conv, conv bias, pre-LN "stable layer norm" transformer), saved with `torch.save` in bf16 under
  the legacy weight-norm names `weight_g`/`weight_v`, as the old hub checkpoints are (transformers 5 no
  longer writes .bin files; 4.x's save_pretrained(safe_serialization=False) also just torch.saved the dict);
- tests/data/speech_golden.npz: `wave` (2, 6400) fp32 speech-like noise and, per model, the fp32
  `{name}_hidden_states` (L + 1, 2, F, D) with `output_hidden_states=True` and `{name}_last_hidden_state`
  (for stable-layer-norm models transformers 5's hidden_states[-1] lacks the final LayerNorm, 4.x's did not),
  plus `{name}_keys`, `{name}_shapes` (bytes) and `{name}_sums` of the weight file as torch reads it back (sorted
  names, shapes as "32,1,10", and per tensor the fp64 sum and position-weighted sum, which pin values,
  layout and order).

Both have the standard conv kernels/strides with 32 channels, hidden 32, 2 layers, 4 heads, FFN 64, a
16-tap positional conv in 4 groups. Every parameter is perturbed by 0.05 * N(0, 1) (so norms, biases and
the weight-norm gains are not 1 or 0) and then rounded to the stored dtype, so the fp32 reference
computed here uses exactly the weights in the files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import safetensors.torch
import torch
from transformers import HubertConfig, HubertModel, Wav2Vec2Config, Wav2Vec2Model

DATA = Path(__file__).parent
SMALL = dict(conv_dim=(32,) * 7, conv_kernel=(10, 3, 3, 3, 3, 2, 2), conv_stride=(5, 2, 2, 2, 2, 2, 2),
             hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
             num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4, hidden_act="gelu",
             feat_extract_activation="gelu")


def speech_like(n: int, seed: int, sr: int = 16000) -> np.ndarray:
    """Harmonics of a gliding f0 under a ~4 Hz syllable envelope, with noise (fricatives) in the gaps."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / sr
    f0 = 110 + 40 * rng.random() + 30 * np.sin(2 * np.pi * 1.5 * t + rng.uniform(0, 2 * np.pi))
    phase = 2 * np.pi * np.cumsum(f0) / sr
    voiced = sum(np.sin(k * phase) * rng.uniform(0.2, 1.0) / k for k in range(1, 25))
    env = np.clip(np.sin(2 * np.pi * 4 * t + rng.uniform(0, 2 * np.pi)), 0, None) ** 2
    return (0.3 * env * voiced + 0.05 * (1 - env) * rng.standard_normal(n)).astype(np.float32)


def perturb_and_round(model: torch.nn.Module, dtype: torch.dtype) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
            p.copy_(p.to(dtype).float())


def hidden_states(model: torch.nn.Module, wave: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with torch.no_grad():
        out = model(torch.from_numpy(wave), output_hidden_states=True)
    return np.stack([h.numpy() for h in out.hidden_states]), out.last_hidden_state.numpy()


def file_summary(state: dict[str, torch.Tensor]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    keys = sorted(state)
    shapes = [",".join(map(str, state[k].shape)) for k in keys]
    sums = []
    for k in keys:
        v = state[k].double().flatten()
        sums.append((float(v.sum()), float((v * torch.linspace(0, 1, v.numel(), dtype=torch.float64)).sum())))
    return np.array(keys, dtype="S"), np.array(shapes, dtype="S"), np.array(sums)


def main() -> None:
    wave = np.stack([speech_like(6400, 1), speech_like(6400, 2)])
    golden = {"wave": wave}

    torch.manual_seed(0)
    w2v = Wav2Vec2Model(Wav2Vec2Config(feat_extract_norm="group", do_stable_layer_norm=False, conv_bias=False,
                                       attn_implementation="eager", **SMALL)).eval()
    perturb_and_round(w2v, torch.float16)
    golden["wav2vec2_hidden_states"], golden["wav2vec2_last_hidden_state"] = hidden_states(w2v, wave)
    w2v.half().save_pretrained(DATA / "wav2vec2_tiny")
    saved = safetensors.torch.load_file(DATA / "wav2vec2_tiny" / "model.safetensors")
    golden["wav2vec2_keys"], golden["wav2vec2_shapes"], golden["wav2vec2_sums"] = file_summary(saved)

    torch.manual_seed(1)
    hub = HubertModel(HubertConfig(feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True,
                                   feat_proj_layer_norm=True, attn_implementation="eager", **SMALL)).eval()
    perturb_and_round(hub, torch.bfloat16)
    golden["hubert_hidden_states"], golden["hubert_last_hidden_state"] = hidden_states(hub, wave)
    out = DATA / "hubert_tiny"
    hub.config.save_pretrained(out)
    legacy = {"parametrizations.weight.original0": "weight_g", "parametrizations.weight.original1": "weight_v"}
    state = {}
    for k, v in hub.state_dict().items():
        for new, old in legacy.items():
            k = k.replace(new, old)
        state[k] = v.to(torch.bfloat16).contiguous()
    torch.save(state, out / "pytorch_model.bin")
    saved = torch.load(out / "pytorch_model.bin", weights_only=True)
    golden["hubert_keys"], golden["hubert_shapes"], golden["hubert_sums"] = file_summary(saved)

    np.savez_compressed(DATA / "speech_golden.npz", **golden)
    for name in ("wav2vec2_tiny/model.safetensors", "hubert_tiny/pytorch_model.bin", "speech_golden.npz"):
        print(f"{name}: {(DATA / name).stat().st_size / 1024:.1f} KiB")


if __name__ == "__main__":
    main()
