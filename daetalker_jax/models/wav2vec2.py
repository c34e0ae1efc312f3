"""wav2vec 2.0 and HuBERT speech encoders (the Hugging Face base models) in Flax NNX, loaded from local
Hugging Face checkpoint folders, and their features aligned to 25 fps video.

The model is the HF `Wav2Vec2Model` / `HubertModel` in eval mode without time masking or an attention
mask: a strided conv stack over the raw 16 kHz waveform (GroupNorm on the first conv, or LayerNorm on
every conv), a feature projection, a weight-normed grouped positional conv, and a post-LN (base) or
pre-LN "stable layer norm" (large) transformer. Compute runs in `dtype`; parameters are fp32, and every
norm and the attention softmax are computed in fp32.

Hidden states follow transformers 4.x (and fairseq): for stable-layer-norm models the last one is the
final `encoder.layer_norm` output (= `last_hidden_state`). transformers 5.x returns the last layer's
output before that norm as `hidden_states[-1]`; the other L states are the same in both.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from daetalker_jax.errors import UserError
from daetalker_jax.models.hf_weights import load_config, load_state_dict, read_json

SAMPLE_RATE = 16000
VIDEO_FPS = 25
FEATURES_PER_FRAME = 2          # the standard stack gives 50 Hz features: two per 25 fps video frame
ACTIVATIONS = {"gelu": partial(jax.nn.gelu, approximate=False), "gelu_new": partial(jax.nn.gelu, approximate=True),
               "gelu_pytorch_tanh": partial(jax.nn.gelu, approximate=True), "relu": jax.nn.relu,
               "silu": jax.nn.silu, "swish": jax.nn.silu}
_PREFIXES = ("wav2vec2.", "hubert.")   # base-model prefixes inside task checkpoints (CTC, pretraining, ...)


@dataclass(frozen=True)
class Wav2Vec2Config:
    """The config.json fields the base model uses (defaults: HF's), plus the waveform normalisation."""

    model_type: str = "wav2vec2"
    conv_dim: tuple[int, ...] = (512,) * 7
    conv_kernel: tuple[int, ...] = (10, 3, 3, 3, 3, 2, 2)
    conv_stride: tuple[int, ...] = (5, 2, 2, 2, 2, 2, 2)
    conv_bias: bool = False
    feat_extract_norm: str = "group"
    feat_extract_activation: str = "gelu"
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-5
    num_conv_pos_embeddings: int = 128
    num_conv_pos_embedding_groups: int = 16
    do_stable_layer_norm: bool = False
    feat_proj_layer_norm: bool = True   # HuBERT's switch; wav2vec 2.0 always normalises before the projection
    do_normalize: bool = True           # preprocessor_config.json: zero-mean unit-variance waveform

    def __post_init__(self):
        problems = []
        if self.model_type not in ("wav2vec2", "hubert"):
            problems.append(f"model_type {self.model_type!r} (only wav2vec2 and hubert are supported)")
        if not len(self.conv_dim) == len(self.conv_kernel) == len(self.conv_stride):
            problems.append("conv_dim, conv_kernel and conv_stride of different lengths")
        if self.feat_extract_norm not in ("group", "layer"):
            problems.append(f"feat_extract_norm {self.feat_extract_norm!r} (expected 'group' or 'layer')")
        for name in ("feat_extract_activation", "hidden_act"):
            if getattr(self, name) not in ACTIVATIONS:
                problems.append(f"{name} {getattr(self, name)!r} (supported: {', '.join(ACTIVATIONS)})")
        if self.hidden_size % self.num_attention_heads or self.hidden_size % self.num_conv_pos_embedding_groups:
            problems.append("hidden_size not divisible by num_attention_heads and num_conv_pos_embedding_groups")
        if problems:
            raise UserError(f"unsupported speech encoder config: {'; '.join(problems)}")

    @classmethod
    def from_folder(cls, folder: str | Path) -> Wav2Vec2Config:
        """Reads config.json (and preprocessor_config.json's do_normalize, if present) of an HF model folder."""
        folder = Path(folder)
        raw = load_config(folder)
        if raw.get("conv_pos_batch_norm"):
            raise UserError(f"{folder}: HuBERT with conv_pos_batch_norm is not supported")
        if raw.get("adapter_attn_dim") is not None:
            raise UserError(f"{folder}: wav2vec 2.0 with attention adapters (adapter_attn_dim, MMS) is not supported")
        names = {f.name for f in dataclasses.fields(cls)} - {"feat_proj_layer_norm", "do_normalize"}
        kwargs = {k: tuple(raw[k]) if isinstance(raw[k], list) else raw[k] for k in names if k in raw}
        if raw.get("model_type") == "hubert":
            kwargs["feat_proj_layer_norm"] = bool(raw.get("feat_proj_layer_norm", True))
        if (folder / "preprocessor_config.json").is_file():
            kwargs["do_normalize"] = bool(read_json(folder / "preprocessor_config.json").get("do_normalize", True))
        try:
            return cls(**kwargs)
        except UserError as e:
            raise UserError(f"{folder / 'config.json'}: {e}") from None

    @property
    def stride(self) -> int:
        """Samples between consecutive features (320 for the standard stack: 50 Hz at 16 kHz)."""
        return math.prod(self.conv_stride)

    @property
    def receptive_field(self) -> int:
        """Samples seen by one feature (400 for the standard stack)."""
        field, jump = 1, 1
        for k, s in zip(self.conv_kernel, self.conv_stride):
            field, jump = field + (k - 1) * jump, jump * s
        return field


class _LayerNorm(nnx.LayerNorm):
    """LayerNorm over channels, computed in fp32 (exact two-pass variance), returned in the input dtype."""

    def __init__(self, dim: int, eps: float, *, rngs: nnx.Rngs):
        super().__init__(dim, epsilon=eps, dtype=jnp.float32, param_dtype=jnp.float32, use_fast_variance=False,
                         rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return super().__call__(x.astype(jnp.float32)).astype(x.dtype)


class _ChannelNorm(nnx.GroupNorm):
    """GroupNorm with one group per channel (each channel normalised over time), in fp32 like _LayerNorm."""

    def __init__(self, dim: int, *, rngs: nnx.Rngs):
        super().__init__(dim, num_groups=dim, epsilon=1e-5, dtype=jnp.float32, param_dtype=jnp.float32,
                         use_fast_variance=False, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return super().__call__(x.astype(jnp.float32)).astype(x.dtype)


def _linear(cin: int, cout: int, dtype, rngs: nnx.Rngs) -> nnx.Linear:
    return nnx.Linear(cin, cout, dtype=dtype, param_dtype=jnp.float32, rngs=rngs)


class _ConvLayer(nnx.Module):
    """Strided valid conv -> optional norm (per-channel GroupNorm or LayerNorm; torch eps 1e-5) -> activation."""

    def __init__(self, cfg: Wav2Vec2Config, i: int, dtype, rngs: nnx.Rngs):
        cin, cout = cfg.conv_dim[i - 1] if i else 1, cfg.conv_dim[i]
        self.conv = nnx.Conv(cin, cout, (cfg.conv_kernel[i],), (cfg.conv_stride[i],), padding="VALID",
                             use_bias=cfg.conv_bias, dtype=dtype, param_dtype=jnp.float32, rngs=rngs)
        if cfg.feat_extract_norm == "layer":
            self.layer_norm = _LayerNorm(cout, 1e-5, rngs=rngs)
        else:
            self.layer_norm = _ChannelNorm(cout, rngs=rngs) if i == 0 else None
        self.act = cfg.feat_extract_activation

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.conv(x)
        if self.layer_norm is not None:
            x = self.layer_norm(x)
        return ACTIVATIONS[self.act](x)


class _FeatureExtractor(nnx.Module):
    def __init__(self, cfg: Wav2Vec2Config, dtype, rngs: nnx.Rngs):
        self.conv_layers = nnx.List([_ConvLayer(cfg, i, dtype, rngs) for i in range(len(cfg.conv_dim))])

    def __call__(self, x: jax.Array) -> jax.Array:
        for layer in self.conv_layers:
            x = layer(x)
        return x


class _FeatureProjection(nnx.Module):
    def __init__(self, cfg: Wav2Vec2Config, dtype, rngs: nnx.Rngs):
        norm = cfg.model_type == "wav2vec2" or cfg.feat_proj_layer_norm
        self.layer_norm = _LayerNorm(cfg.conv_dim[-1], cfg.layer_norm_eps, rngs=rngs) if norm else None
        self.projection = _linear(cfg.conv_dim[-1], cfg.hidden_size, dtype, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.projection(x if self.layer_norm is None else self.layer_norm(x))


class _PositionalConv(nnx.Module):
    """Grouped conv over time (weight norm folded in at load time) -> activation, added to the input.

    HF pads k // 2 on both sides and, for even k, drops the last output frame ("same pad"); padding
    one frame less on the right gives the same frames without computing the dropped one.
    """

    def __init__(self, cfg: Wav2Vec2Config, dtype, rngs: nnx.Rngs):
        k, d = cfg.num_conv_pos_embeddings, cfg.hidden_size
        self.conv = nnx.Conv(d, d, (k,), padding=((k // 2, k // 2 - (k % 2 == 0)),),
                             feature_group_count=cfg.num_conv_pos_embedding_groups, dtype=dtype,
                             param_dtype=jnp.float32, rngs=rngs)
        self.act = cfg.feat_extract_activation

    def __call__(self, x: jax.Array) -> jax.Array:
        return ACTIVATIONS[self.act](self.conv(x))


class _Attention(nnx.Module):
    def __init__(self, cfg: Wav2Vec2Config, dtype, rngs: nnx.Rngs):
        d = cfg.hidden_size
        self.heads = cfg.num_attention_heads
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (_linear(d, d, dtype, rngs) for _ in range(4))

    def __call__(self, x: jax.Array) -> jax.Array:
        b, t, d = x.shape
        q, k, v = (p(x).reshape(b, t, self.heads, d // self.heads) for p in (self.q_proj, self.k_proj, self.v_proj))
        logits = jnp.einsum("bqhc,bkhc->bhqk", q, k, preferred_element_type=jnp.float32) / math.sqrt(d // self.heads)
        weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
        return self.out_proj(jnp.einsum("bhqk,bkhc->bqhc", weights, v).reshape(b, t, d))


class _FeedForward(nnx.Module):
    def __init__(self, cfg: Wav2Vec2Config, dtype, rngs: nnx.Rngs):
        self.intermediate_dense = _linear(cfg.hidden_size, cfg.intermediate_size, dtype, rngs)
        self.output_dense = _linear(cfg.intermediate_size, cfg.hidden_size, dtype, rngs)
        self.act = cfg.hidden_act

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.output_dense(ACTIVATIONS[self.act](self.intermediate_dense(x)))


class _EncoderLayer(nnx.Module):
    """Post-LN (base) or pre-LN ("stable layer norm", large) transformer layer."""

    def __init__(self, cfg: Wav2Vec2Config, dtype, rngs: nnx.Rngs):
        self.attention = _Attention(cfg, dtype, rngs)
        self.layer_norm = _LayerNorm(cfg.hidden_size, cfg.layer_norm_eps, rngs=rngs)
        self.feed_forward = _FeedForward(cfg, dtype, rngs)
        self.final_layer_norm = _LayerNorm(cfg.hidden_size, cfg.layer_norm_eps, rngs=rngs)
        self.stable = cfg.do_stable_layer_norm

    def __call__(self, x: jax.Array) -> jax.Array:
        if self.stable:
            x = x + self.attention(self.layer_norm(x))
            return x + self.feed_forward(self.final_layer_norm(x))
        x = self.layer_norm(x + self.attention(x))
        return self.final_layer_norm(x + self.feed_forward(x))


class _Encoder(nnx.Module):
    def __init__(self, cfg: Wav2Vec2Config, dtype, rngs: nnx.Rngs):
        self.pos_conv_embed = _PositionalConv(cfg, dtype, rngs)
        self.layer_norm = _LayerNorm(cfg.hidden_size, cfg.layer_norm_eps, rngs=rngs)
        self.layers = nnx.List([_EncoderLayer(cfg, dtype, rngs) for _ in range(cfg.num_hidden_layers)])
        self.stable = cfg.do_stable_layer_norm

    def __call__(self, x: jax.Array) -> list[jax.Array]:
        x = x + self.pos_conv_embed(x)
        if not self.stable:          # base: norm before the layers; stable: after them
            x = self.layer_norm(x)
        states = [x]
        for layer in self.layers:
            states.append(layer(states[-1]))
        if self.stable:
            states[-1] = self.layer_norm(states[-1])
        return states


class SpeechEncoder(nnx.Module):
    """Waveform (B, N) fp32 -> the L + 1 hidden states, each (B, F, hidden_size) in `dtype`.

    State 0 is the transformer input (after the positional conv, and for base models its LayerNorm);
    state i is the output of layer i. F = floor((N - receptive_field) / stride) + 1.
    """

    def __init__(self, cfg: Wav2Vec2Config, *, dtype=jnp.float32, rngs: nnx.Rngs):
        self.feature_extractor = _FeatureExtractor(cfg, dtype, rngs)
        self.feature_projection = _FeatureProjection(cfg, dtype, rngs)
        self.encoder = _Encoder(cfg, dtype, rngs)
        self.dtype = dtype

    def __call__(self, wave: jax.Array) -> list[jax.Array]:
        x = self.feature_extractor(wave.astype(self.dtype)[..., None])
        return self.encoder(self.feature_projection(x))


def _fold_weight_norm(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """weight = g * v / ||v||, the norm over all axes but the kernel axis (torch weight_norm(dim=2))."""
    out = dict(state)
    for g_name, v_name in ((".weight_g", ".weight_v"),
                           (".parametrizations.weight.original0", ".parametrizations.weight.original1")):
        for key in [k for k in state if k.endswith(g_name)]:
            base = key[:-len(g_name)]
            if base + v_name not in state:
                raise UserError(f"the checkpoint has {key!r} but not {base + v_name!r}; download it again")
            g, v = (np.asarray(state[base + n], np.float64) for n in (g_name, v_name))
            out[f"{base}.weight"] = g * v / np.sqrt((v ** 2).sum(axis=(0, 1), keepdims=True))
            del out[key], out[base + v_name]
    return out


def _to_ours(w: np.ndarray) -> np.ndarray:
    """A torch tensor in our layout: Linear (O, I) -> (I, O); Conv1d (O, I/groups, K) -> (K, I/groups, O)."""
    return w.transpose(tuple(range(w.ndim))[::-1])


def load_encoder(folder: str | Path, dtype=jnp.float32) -> tuple[Wav2Vec2Config, SpeechEncoder]:
    """The config and the model of a local HF wav2vec2/HuBERT folder (base model or any task model).

    Heads, quantizer, adapters and masked_spec_embed are ignored; a missing or wrongly shaped tensor of the
    base model raises UserError.
    """
    cfg = Wav2Vec2Config.from_folder(folder)
    state = {}
    for key, value in load_state_dict(folder).items():
        state[next((key[len(p):] for p in _PREFIXES if key.startswith(p)), key)] = value
    state = _fold_weight_norm(state)
    graphdef, params = nnx.split(nnx.eval_shape(lambda: SpeechEncoder(cfg, dtype=dtype, rngs=nnx.Rngs(0))))

    def fill(abstract: dict, path: str) -> dict:
        out = {}
        for k, v in abstract.items():
            if isinstance(v, dict):
                out[k] = fill(v, f"{path}{k}.")
                continue
            name = f"{path}{'bias' if k == 'bias' else 'weight'}"
            if name not in state:
                raise UserError(f"{folder}: the checkpoint has no tensor {name!r}, which this {cfg.model_type} "
                                "config needs; do config.json and the weights belong together?")
            w = _to_ours(np.asarray(state[name], np.float32))
            if w.shape != v.shape:
                raise UserError(f"{folder}: tensor {name!r} has shape {tuple(state[name].shape)}, but config.json "
                                f"implies {tuple(v.shape[::-1])}; do config.json and the weights belong together?")
            out[k] = jnp.asarray(w)
        return out

    nnx.replace_by_pure_dict(params, fill(nnx.to_pure_dict(params), ""))
    return cfg, nnx.merge(graphdef, params)


@partial(jax.jit, static_argnums=0)
def _encode(graphdef: nnx.GraphDef, params: nnx.State, wave: jax.Array) -> jax.Array:
    """(B, N) -> all hidden states (B, F, L + 1, D) fp32; one compile per graph and wave length."""
    return jnp.stack(nnx.merge(graphdef, params)(wave), axis=2).astype(jnp.float32)


def features_for_frames(encoder: SpeechEncoder, config: Wav2Vec2Config, wave_16k: np.ndarray, n_frames: int,
                        chunk_seconds: float = 20.0, context_seconds: float = 1.0) -> np.ndarray:
    """All hidden states of a 16 kHz clip, exactly two 50 Hz features per 25 fps video frame.

    Returns (2 * n_frames, L + 1, D) fp32. Alignment: video frame j spans samples [640 j, 640 (j + 1));
    feature k is centred on sample 320 k + 160, so features 2j and 2j + 1 are centred on the first and
    second half of frame j. To get there the (normalised, if the config says so) waveform is shifted right
    by (receptive_field - stride) / 2 = 40 samples of zeros, so that feature k's 400-sample window
    [320 k - 40, 320 k + 360) is centred on 320 k + 160; it is then cut, or zero-padded, to the
    (2 n_frames - 1) * 320 + 400 samples that give exactly 2 n_frames features (audio past the end of
    the video is dropped, missing audio is silence).

    Attention costs O(F^2), so clips longer than one window of chunk_seconds + 2 context_seconds are
    encoded window by window: each window yields chunk_seconds of features and carries context_seconds of
    real audio on both sides (windows at the clip's ends are shifted inwards rather than padded), which
    is dropped after encoding. Every window has the same length, so the encoder compiles once for all
    long clips; a shorter clip is encoded in one pass at its own length (one compile per length).
    """
    wave = np.asarray(wave_16k, np.float32)
    if wave.ndim != 1 or wave.size == 0:
        raise UserError(f"expected a non-empty mono waveform (N,), got shape {wave.shape}")
    if n_frames < 1:
        raise UserError(f"n_frames must be at least 1, got {n_frames}")
    stride, field = config.stride, config.receptive_field
    if stride * FEATURES_PER_FRAME * VIDEO_FPS != SAMPLE_RATE:
        raise UserError(f"the conv stack's stride is {stride} samples; two features per 25 fps frame need "
                        f"{SAMPLE_RATE // (FEATURES_PER_FRAME * VIDEO_FPS)}")
    if chunk_seconds <= 0 or context_seconds < 0:
        raise UserError(f"chunk_seconds must be > 0 and context_seconds >= 0, got {chunk_seconds}, {context_seconds}")
    if config.do_normalize:
        wave = (wave - wave.mean()) / np.sqrt(wave.var() + 1e-7)
    n_feat = FEATURES_PER_FRAME * n_frames
    shift = (field - stride) // 2
    padded = np.zeros((n_feat - 1) * stride + field, np.float32)
    body = wave[:padded.size - shift]
    padded[shift:shift + body.size] = body

    graphdef, params = nnx.split(encoder)
    rate = SAMPLE_RATE // stride
    chunk, context = max(1, round(chunk_seconds * rate)), round(context_seconds * rate)
    window = chunk + 2 * context
    if n_feat <= window:
        return np.array(_encode(graphdef, params, padded[None])[0])
    out = np.empty((n_feat, config.num_hidden_layers + 1, config.hidden_size), np.float32)
    window_samples = (window - 1) * stride + field
    for a in range(0, n_feat, chunk):
        b = min(a + chunk, n_feat)
        start = min(max(a - context, 0), n_feat - window)
        feats = _encode(graphdef, params, padded[None, start * stride:start * stride + window_samples])
        out[a:b] = np.asarray(feats[0, a - start:b - start])
    return out
