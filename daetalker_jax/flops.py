"""FLOPs of a JAX function counted from its jaxpr (2 per multiply-add in convolutions and matmuls).

XLA's cost analysis misses the convolutions that GPU backends hand to cuDNN, so MFU is computed from
this count instead; it matches torch's FlopCounterMode convention used in the anchors.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
from jax.extend import core


def _eqn_flops(eqn) -> float:
    name = eqn.primitive.name
    if name == "conv_general_dilated":
        out = eqn.outvars[0].aval.shape
        rhs = eqn.invars[1].aval.shape
        dn = eqn.params["dimension_numbers"]
        k_in = rhs[dn.rhs_spec[1]]                       # input channels per group seen by each output
        window = math.prod(rhs[d] for d in dn.rhs_spec[2:])
        return 2.0 * math.prod(out) * k_in * window
    if name == "dot_general":
        (contract, _), _ = eqn.params["dimension_numbers"]
        lhs = eqn.invars[0].aval.shape
        return 2.0 * math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs[d] for d in contract)
    return 0.0


def _jaxpr_flops(jaxpr: core.Jaxpr) -> float:
    total = 0.0
    for eqn in jaxpr.eqns:
        total += _eqn_flops(eqn)
        for value in eqn.params.values():
            inner = getattr(value, "jaxpr", None)
            if isinstance(value, core.ClosedJaxpr):
                inner = value.jaxpr
            if isinstance(inner, core.Jaxpr):
                mult = eqn.params.get("length", 1) if eqn.primitive.name == "scan" else 1
                total += mult * _jaxpr_flops(inner)
    return total


def count_flops(fn: Callable, *args, **kwargs) -> float:
    """Matmul and convolution FLOPs of one call of `fn` (forward and, if traced, backward)."""
    return _jaxpr_flops(jax.make_jaxpr(fn)(*args, **kwargs).jaxpr)
