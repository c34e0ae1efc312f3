"""bench/kernel_time.py's reading of an optimized HLO module: the bytes each fused kernel moves and what it computes."""

from __future__ import annotations

from bench.kernel_time import fusion_bytes, fusion_origins

# The shape of XLA's optimized HLO text: fused computations, then the entry; one fusion slices a large parameter
# (as one layer's GroupNorm scale out of the flattened parameters), two share a kernel (deduplicated), one has six
# operands (XLA marks the sixth /*index=5*/).
HLO = """HloModule jit_step, entry_computation_layout={(f32[1000]{0}, bf16[4,8]{1,0})->bf16[4,8]{1,0}}

%fused_slice (param_0: f32[1000]) -> f32[10] {
  %param_0 = f32[1000]{0} parameter(0)
  ROOT %slice.1 = f32[10]{0} slice(%param_0), slice={[0:10]}, metadata={op_name="jit(step)/jvp()/split"}
}

%fused_add (param_0.1: bf16[4,8], param_1: bf16[4,8]) -> bf16[4,8] {
  %param_0.1 = bf16[4,8]{1,0} parameter(0)
  %param_1 = bf16[4,8]{1,0} parameter(1)
  %mul.3 = bf16[4,8]{1,0} multiply(%param_0.1, %param_1), metadata={op_name="jit(step)/transpose(jvp())/mul"}
  %mul.4 = bf16[4,8]{1,0} multiply(%mul.3, %param_1), metadata={op_name="jit(step)/transpose(jvp())/mul"}
  ROOT %add.2 = bf16[4,8]{1,0} add(%mul.4, %param_1), metadata={op_name="jit(step)/transpose(jvp())/add"}
}

%fused_sum (q0: bf16[4,8], q1: bf16[4,8], q2: bf16[4,8], q3: bf16[4,8], q4: bf16[4,8], q5: bf16[4,8]) -> bf16[4,8] {
  %q0 = bf16[4,8]{1,0} parameter(0)
  %q5 = bf16[4,8]{1,0} parameter(5)
  ROOT %add.9 = bf16[4,8]{1,0} add(%q0, %q5), metadata={op_name="jit(step)/add"}
}

ENTRY %main.5 (p0: f32[1000], p1: bf16[4,8]) -> bf16[4,8] {
  %p0 = f32[1000]{0} parameter(0)
  %p1 = bf16[4,8]{1,0} parameter(1)
  %loop_slice_fusion = f32[10]{0} fusion(%p0), kind=kLoop, calls=%fused_slice
  %loop_add_fusion = bf16[4,8]{1,0} fusion(%p1, %p1), kind=kLoop, calls=%fused_add
  %loop_sum_fusion = bf16[4,8]{1,0} fusion(%p1, %p1, %p1, %p1, %p1, /*index=5*/%p1), kind=kLoop, calls=%fused_sum
  ROOT %loop_add_fusion.1 = bf16[4,8]{1,0} fusion(%loop_add_fusion, %p1), kind=kLoop, calls=%fused_add, \
metadata={deduplicated_name="loop_add_fusion"}
}
"""


def test_fusion_bytes_count_slices_and_deduplicated_groups():
    """A fusion that only slices an operand reads the slice (40 bytes of f32[1000]), not all 4,000; the two
    fusions sharing one kernel each move 3 x 64 bytes, and each name gets the group's 384; all six operands count."""
    got = fusion_bytes(HLO)
    assert got == {"loop_slice_fusion": 40 + 40, "loop_add_fusion": 384, "loop_add_fusion_1": 384,
                   "loop_sum_fusion": 7 * 64}


def test_fusion_origins_name_the_result_and_the_jax_ops():
    got = fusion_origins(HLO)
    assert got["loop_slice_fusion"] == "f32[10] jvp()/split x1"
    assert got["loop_add_fusion_1"] == "bf16[4,8] transpose(jvp())/mul x2, transpose(jvp())/add x1"
