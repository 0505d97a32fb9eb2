"""The channels LayerNorm of a block of rows, as Triton device functions: a channels-last feature
map is an (M, C) matrix whose rows are pixels, and the norm and prior-attention kernels normalise
whole rows before their products. Statistics in float32, as hidiff.restormer's LayerNorm; the
affine parameters are folded into the product after the norm, so none is applied here."""
from __future__ import annotations

from engines.kernels.support import tl, triton

if triton is not None:

    @triton.jit
    def load_rows(x_ptr, rows, row_ok, ks, k_ok, stride_xm):
        """The ``rows`` of x (M, K), all K channels (``ks``, padded to a power of two with zeros), in float32."""
        return tl.load(x_ptr + rows.to(tl.int64)[:, None] * stride_xm + ks[None, :],
                       mask=row_ok[:, None] & k_ok[None, :], other=0.0).to(tl.float32)

    @triton.jit
    def normalize(x, k_ok, K, eps, BIAS_FREE: tl.constexpr):
        """LN of rows ``x`` (float32, zeros past K) without the affine: moments in float32, the
        result in float32."""
        mean = tl.sum(x, axis=1) / K  # the padding columns are zeros
        centred = tl.where(k_ok[None, :], x - mean[:, None], 0.0)
        rstd = 1.0 / tl.sqrt(tl.sum(centred * centred, axis=1) / K + eps)
        if BIAS_FREE:
            return x * rstd[:, None]  # Restormer's BiasFree norm divides without centring
        return centred * rstd[:, None]
