"""DiffAE: the semantic encoder (frame -> z_sem) and the conditional UNet noise predictor
eps(x_t, t, z_sem), following the official phizaz/diffae BeatGANsAutoencModel (NHWC here).

UNet: conv_in; per level `num_res_blocks` ResBlocks (+ attention at the attention resolutions) and a
down-ResBlock between levels; middle ResBlock-Attention-ResBlock; per level (reversed)
num_res_blocks + 1 ResBlocks, each concatenating one skip from the same level (3 per level), then an
up-ResBlock; out = zero_conv(silu(GN(h))). Time: sinusoid(model_channels) -> Linear-SiLU-Linear to
`embed_channels`; z_sem reaches every ResBlock unchanged (each has its own projection).
Encoder: the same input half without time, then GN-SiLU-global-average-pool-1x1conv -> z_sem.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
from flax import nnx

from daetalker_jax.models.layers import AttentionBlock, GroupNorm32, ResBlock, conv, linear, timestep_embedding


@dataclass(frozen=True)
class DiffAEConfig:
    image_size: int = 128
    model_channels: int = 128
    channel_mult: tuple[int, ...] = (1, 1, 2, 3, 4)
    enc_channel_mult: tuple[int, ...] = (1, 1, 2, 3, 4, 4)
    num_res_blocks: int = 2
    attention_resolutions: tuple[int, ...] = (16,)
    embed_channels: int = 512
    z_channels: int = 512
    dropout: float = 0.1
    dtype: str = "bfloat16"

    @property
    def compute_dtype(self):
        return jnp.dtype(self.dtype)


class _Stage(nnx.Module):
    """A ResBlock optionally followed by attention and/or an up-ResBlock (one 'TimestepEmbedSequential')."""

    def __init__(self, res: ResBlock, attn: AttentionBlock | None = None, up: ResBlock | None = None):
        self.res, self.attn, self.up = res, attn, up

    def __call__(self, x, emb=None, cond=None):
        x = self.res(x, emb, cond)
        if self.attn is not None:
            x = self.attn(x)
        if self.up is not None:
            x = self.up(x, emb, cond)
        return x


def _input_half(cfg: DiffAEConfig, mult: tuple[int, ...], conditioned: bool, rngs: nnx.Rngs):
    """conv_in and the down path; returns (conv_in, stages, per-level skip channels, channels, levels)."""
    dt = cfg.compute_dtype
    emb = cfg.embed_channels if conditioned else None
    z = cfg.z_channels if conditioned else None
    ch = mult[0] * cfg.model_channels
    conv_in = conv(3, ch, 3, dtype=dt, rngs=rngs)
    skips: list[list[int]] = [[ch]] + [[] for _ in mult[1:]]
    stages, levels, res = [], [], cfg.image_size
    for level, m in enumerate(mult):
        for _ in range(cfg.num_res_blocks):
            out = m * cfg.model_channels
            attn = AttentionBlock(out, dtype=dt, rngs=rngs) if res in cfg.attention_resolutions else None
            stages.append(_Stage(ResBlock(ch, out, emb_dim=emb, cond_dim=z, dropout=cfg.dropout, dtype=dt,
                                          rngs=rngs), attn))
            levels.append(level)
            ch = out
            skips[level].append(ch)
        if level != len(mult) - 1:
            stages.append(_Stage(ResBlock(ch, ch, emb_dim=emb, cond_dim=z, dropout=cfg.dropout, resample="down",
                                          dtype=dt, rngs=rngs)))
            levels.append(level + 1)
            skips[level + 1].append(ch)
            res //= 2
    middle = [ResBlock(ch, ch, emb_dim=emb, cond_dim=z, dropout=cfg.dropout, dtype=dt, rngs=rngs),
              AttentionBlock(ch, dtype=dt, rngs=rngs),
              ResBlock(ch, ch, emb_dim=emb, cond_dim=z, dropout=cfg.dropout, dtype=dt, rngs=rngs)]
    return conv_in, stages, levels, skips, ch, res, middle


class SemanticEncoder(nnx.Module):
    """Frame in [-1, 1], (B, H, W, 3) -> z_sem (B, z_channels), fp32."""

    def __init__(self, cfg: DiffAEConfig, *, rngs: nnx.Rngs):
        self.conv_in, stages, _, _, ch, _, middle = _input_half(cfg, cfg.enc_channel_mult, False, rngs)
        self.stages = nnx.List(stages)
        self.middle = nnx.List(middle)
        self.out_norm = GroupNorm32(ch, rngs=rngs)
        self.out = linear(ch, cfg.z_channels, dtype=cfg.compute_dtype, rngs=rngs)   # the 1x1 conv after pooling
        self.dtype = cfg.compute_dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        h = self.conv_in(x.astype(self.dtype))
        for stage in self.stages:
            h = stage(h)
        h = self.middle[2](self.middle[1](self.middle[0](h)))
        h = self.out_norm(h, silu=True).astype(jnp.float32).mean(axis=(1, 2))
        return self.out(h.astype(self.dtype)).astype(jnp.float32)


class UNet(nnx.Module):
    """eps(x_t, t, z_sem): (B, H, W, 3), (B,) int timesteps in 0..T-1, (B, z) -> (B, H, W, 3) fp32."""

    def __init__(self, cfg: DiffAEConfig, *, rngs: nnx.Rngs):
        dt, c = cfg.compute_dtype, cfg.model_channels
        self.cfg = cfg
        self.time1 = linear(c, cfg.embed_channels, dtype=dt, rngs=rngs)
        self.time2 = linear(cfg.embed_channels, cfg.embed_channels, dtype=dt, rngs=rngs)
        self.conv_in, stages, self.levels, skips, ch, res, middle = _input_half(cfg, cfg.channel_mult, True, rngs)
        self.stages_in = nnx.List(stages)
        self.middle = nnx.List(middle)
        kw = {"emb_dim": cfg.embed_channels, "cond_dim": cfg.z_channels, "dropout": cfg.dropout, "dtype": dt}
        out_stages = []
        for level in reversed(range(len(cfg.channel_mult))):
            out = cfg.channel_mult[level] * c
            for i in range(cfg.num_res_blocks + 1):
                skip = skips[level].pop()
                attn = AttentionBlock(out, dtype=dt, rngs=rngs) if res in cfg.attention_resolutions else None
                up = None
                if level and i == cfg.num_res_blocks:
                    up = ResBlock(out, out, resample="up", rngs=rngs, **kw)
                out_stages.append(_Stage(ResBlock(ch + skip, out, rngs=rngs, **kw), attn, up))
                ch = out
            res *= 2
        self.stages_out = nnx.List(out_stages)
        self.out_norm = GroupNorm32(ch, rngs=rngs)
        self.out_conv = conv(ch, 3, 3, dtype=dt, rngs=rngs, zero=True)

    def __call__(self, x: jax.Array, t: jax.Array, z_sem: jax.Array) -> jax.Array:
        dt = self.cfg.compute_dtype
        emb = self.time2(nnx.silu(self.time1(timestep_embedding(t, self.cfg.model_channels).astype(dt))))
        cond = z_sem.astype(dt)
        h = self.conv_in(x.astype(dt))
        skips = [[h]] + [[] for _ in self.cfg.channel_mult[1:]]
        for level, stage in zip(self.levels, self.stages_in):
            h = stage(h, emb, cond)
            skips[level].append(h)
        h = self.middle[0](h, emb, cond)
        h = self.middle[2](self.middle[1](h), emb, cond)
        k = 0
        for level in reversed(range(len(self.cfg.channel_mult))):
            for _ in range(self.cfg.num_res_blocks + 1):
                h = self.stages_out[k]((h, skips[level].pop()), emb, cond)
                k += 1
        return self.out_norm.narrow_conv(h, self.out_conv, silu=True)


class DiffAE(nnx.Module):
    """The diffusion autoencoder: `encode(x0) -> z_sem`, `__call__(x_t, t, z_sem) -> eps`."""

    def __init__(self, cfg: DiffAEConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        self.encoder = SemanticEncoder(cfg, rngs=rngs)
        self.unet = UNet(cfg, rngs=rngs)

    def encode(self, x0: jax.Array) -> jax.Array:
        return self.encoder(x0)

    def __call__(self, x_t: jax.Array, t: jax.Array, z_sem: jax.Array) -> jax.Array:
        return self.unet(x_t, t, z_sem)


def count_params(module: nnx.Module) -> int:
    return sum(x.size for x in jax.tree.leaves(nnx.state(module, nnx.Param)))
