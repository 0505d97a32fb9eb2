"""Triton kernels for the Restormer on CUDA, behind one entry point.

:func:`fuse_restormer` swaps a Restormer's modules for fused forms that run these kernels (each
switch names what it fuses); :func:`unavailable_reason` says why they cannot run on a device,
dtype and memory layout. The kernels, each with its PyTorch reference, live in the submodules:

- :mod:`~engines.kernels.gated_dwconv`: GDFN's depthwise convolution and GELU gate;
- :mod:`~engines.kernels.norm_matmul`: LayerNorm + 1x1 projection, 1x1 projection + residual;
- :mod:`~engines.kernels.head_gram`: MDTA's per-head cosines of q and k;
- :mod:`~engines.kernels.prior_attention`: HIM, the cross-attention to the prior tokens;
- :mod:`~engines.kernels.gdfn_block` and :mod:`~engines.kernels.mdta_block`: a block's whole
  feed-forward half in one kernel and its attention half in two, over the halo tiles of
  :mod:`~engines.kernels.halo_tiles`;
- :mod:`~engines.kernels.support` and :mod:`~engines.kernels.layer_norm`: what they share.

Each is a ``torch.library.custom_op`` (``torch.ops.hidiff.*``) that ``torch.compile`` calls as one
opaque operation, and a ``torch.library.triton_op`` of the same name ending ``_packaged`` that
``torch.export`` traces into the graph, so that AOTInductor compiles the kernel into the package.
"""
from engines.kernels.fuse import fuse_restormer
from engines.kernels.support import unavailable_reason

__all__ = ["fuse_restormer", "unavailable_reason"]
