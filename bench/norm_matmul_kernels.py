"""The Transformer blocks' LayerNorm + 1x1 projection, 1x1 projection + residual and MDTA's per-head
cosines, kernel by kernel: PyTorch's kernels against engines.kernels.norm_matmul's and
engines.kernels.head_gram's, at the shapes one frame runs.

    python bench/norm_matmul_kernels.py --preset gopro --size 1280x720 [--sweep] [--out DIR]

The shapes are recorded from one forward pass of the FP16 channels-last Restormer with padded
channels and fused blocks (``engines.kernels.fuse_restormer``'s ``norms`` and ``head_gram``). Per
distinct shape the table gives the median time per call (triton.testing.do_bench) of
- ``unfused``: what the eager channels-last model runs, LayerNorm then cuDNN's 1x1 convolution
  (norm sites), the product then the addition (residual sites), or cuBLAS's Gram product of
  [q; k] and the normalisation of its heads' blocks (``head_blocks(channel_cosine(qk), heads)``,
  gram sites);
- ``product``: the product alone (cuDNN / cuBLAS; at gram sites the float32 Gram product
  [q; k] [q; k]^T), the least a fused kernel could hope for;
- ``fused``: the Triton kernel as autotuned, its effective bandwidth (every tensor read and
  written once) and its tile (at gram sites with the sum of the partials and the normalisation
  after it, eagerly: a few small kernels that a compiled model fuses with MDTA's softmax);
and the per-frame sum of each, weighting shapes by their calls. ``--sweep`` also times a wider
set of tiles at each site kind's largest shape and prints the best, to tune the autotuner's lists.
"""
from __future__ import annotations

import itertools
import json
from collections import Counter
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F

from bench.inputs import ImageSize, engine_restormer
from bench.kernel_tables import Column, frame_title, kernel_parser, kernel_table, parse_on_a_gpu, write_results
from hidiff.config import HIDiffConfig, preset

# (kind, images, rows per image M, input channels K, output channels N); kind is "norm",
# "residual" (shared weights), "mixing" (MDTA's per-image matrix) or "gram" (MDTA's q k^T and norms
# per head: K is C, q's and k's channels each, and the N slot holds the number of heads)
Site = tuple[str, int, int, int, int]


def frame_sites(config: HIDiffConfig, size: ImageSize, device: str = "cuda") -> Counter[Site]:
    """How often one frame calls each fused kernel at each shape (``device="meta"``: shapes only)."""
    from engines.kernels import fuse_restormer
    from engines.kernels.fuse import FusedNormBlock

    restormer, blur, prior = engine_restormer(config, size, device, torch.float16)
    fuse_restormer(restormer, gates=False, prior_attention=False)
    seen: Counter[Site] = Counter()

    def record(block: FusedNormBlock, args: tuple[torch.Tensor, ...]) -> None:
        b, c, h, w = args[0].shape
        hidden2, heads = int(block.project_in.weight_t.shape[1]), int(block.attn.num_heads)
        sites: tuple[Site, ...] = (("norm", b, h * w, c, 3 * c), ("norm", b, h * w, c, hidden2),
                                   ("mixing", b, h * w, c, c), ("residual", b, h * w, hidden2 // 2, c),
                                   ("gram", b, h * w, c, heads))
        for site in sites:
            seen[site] += 1

    for module in restormer.modules():
        if isinstance(module, FusedNormBlock):
            module.register_forward_pre_hook(record)
    with torch.inference_mode():
        restormer(blur, prior)
    return seen


def _map(b: int, m: int, c: int) -> torch.Tensor:
    """(b, c, m, 1) float16 channels-last: a feature map of m pixels."""
    return torch.randn(b, c, m, 1, device="cuda", dtype=torch.float16).to(memory_format=torch.channels_last)


def site_inputs(site: Site) -> dict[str, Any]:
    kind, b, m, k, n = site
    scale = k ** -0.5
    if kind == "gram":  # q and k: channels [0, 2C) of a channels-last qkv (B, 3C, M), as MDTA slices it
        qkv = torch.randn(b, m, 3 * k, device="cuda", dtype=torch.float16).transpose(1, 2)
        return {"qk": qkv[:, : 2 * k], "heads": n}
    if kind == "norm":
        return {"x": _map(b, m, k), "weight_t": (torch.randn(k, n, device="cuda") * scale).half(),
                "bias": torch.randn(n, device="cuda").half(), "gamma": torch.ones(k, device="cuda").half(),
                "beta": torch.zeros(k, device="cuda").half()}
    shape = (b, n, k) if kind == "mixing" else (n, k)
    return {"a": _map(b, m, k), "weight": (torch.randn(*shape, device="cuda") * scale).half(), "residual": _map(b, m, n)}


def variants(site: Site) -> dict[str, Callable[[dict[str, Any]], torch.Tensor]]:
    from engines.kernels import norm_matmul as fused

    kind = site[0]
    if kind == "gram":
        from engines.kernels.head_gram import head_cosine
        from hidiff.restormer import channel_cosine, head_blocks

        return {"unfused": lambda t: head_blocks(channel_cosine(t["qk"]), t["heads"]),
                "product": lambda t: torch.bmm(t["qk"], t["qk"].transpose(1, 2), out_dtype=torch.float32),
                "fused": lambda t: head_cosine(t["qk"], t["heads"])}
    if kind == "norm":
        def conv(t: dict[str, Any], x: torch.Tensor) -> torch.Tensor:
            return F.conv2d(x, t["weight_t"].t()[:, :, None, None], t["bias"])

        def unfused(t: dict[str, Any]) -> torch.Tensor:
            x = t["x"]
            normed = F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), t["gamma"], t["beta"], 1e-5).permute(0, 3, 1, 2)
            return conv(t, normed)

        return {"unfused": unfused, "product": lambda t: conv(t, t["x"]),
                "fused": lambda t: fused.norm_conv1x1(t["x"], t["weight_t"], t["bias"], 1e-5)}

    def product(t: dict[str, Any]) -> torch.Tensor:
        a, w = t["a"], t["weight"]
        if w.dim() == 3:
            return torch.bmm(a.flatten(2).transpose(1, 2), w.transpose(1, 2)).transpose(1, 2)
        return F.conv2d(a, w[:, :, None, None])

    return {"unfused": lambda t: t["residual"] + product(t).reshape(t["residual"].shape), "product": product,
            "fused": lambda t: fused.conv1x1_residual(t["a"], t["weight"], None, t["residual"])}


def moved_bytes(site: Site) -> int:
    kind, b, m, k, n = site
    if kind == "gram":  # q and k read once, float16; the (heads, d, d) float32 cosines written
        return b * (2 * m * 2 * k + 4 * n * (k // n) ** 2)
    return 2 * b * m * (k + n + (n if kind != "norm" else 0))


def measure(sites: Counter[Site]) -> list[dict]:
    from triton.testing import do_bench

    from engines.kernels import head_gram as gram
    from engines.kernels import norm_matmul as fused

    rows = []
    torch.manual_seed(0)
    for site, count in sorted(sites.items(), key=lambda item: -moved_bytes(item[0])):
        tensors = site_inputs(site)
        row: dict = {"kind": site[0], "images": site[1], "rows": site[2], "K": site[3], "N": site[4],
                     "calls_per_frame": count}
        with torch.inference_mode():
            want = variants(site)["unfused"](tensors).float()
            for name, fn in variants(site).items():
                if name != "product":
                    row[f"{name}_max_abs_err"] = (fn(tensors).float() - want).abs().max().item()
                row[f"{name}_ms"] = do_bench(lambda: fn(tensors), warmup=25, rep=100, return_mode="median")
        if site[0] == "gram":
            kernel = gram.head_gram_kernel
        elif site[0] != "norm":
            kernel = fused.matmul_residual_kernel
        elif fused.tma_fits(tensors["x"], tensors["weight_t"]):
            kernel = fused.norm_matmul_tma_kernel
        else:
            kernel = fused.norm_matmul_kernel
        row["fused_config"] = str(getattr(kernel, "best_config", "?")).split(", num_ctas")[0]
        if kernel is fused.norm_matmul_tma_kernel:
            row["fused_config"] = f"TMA BLOCK_N {fused.TMA_BLOCK_N}, {row['fused_config']}"
        row["fused_GB_per_s"] = moved_bytes(site) / row["fused_ms"] / 1e6
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


# The sweep's grids: (BLOCK_M, BLOCK_N or BLOCK_K, warps, stages); for gram sites (BLOCK_N, warps, stages,
# SQUARES).
NORM_SWEEP = tuple(itertools.product((64, 128), (32, 64, 128), (4, 8), (1, 2, 3))) + tuple(
    itertools.product((256,), (32,), (8,), (1, 2)))
RESIDUAL_SWEEP = tuple(itertools.product((64, 128, 256), (32, 64, 128), (4, 8), (1, 2, 3)))
GRAM_SWEEP = tuple(itertools.product((64, 128, 256), (4, 8), (2, 3, 4), (3, 4)))  # + SQUARES


def sweep_sites(sites: Counter[Site], kinds: Sequence[str]) -> list[Site]:
    """The sites a sweep times: every distinct shape of the ``kinds`` named, most bytes first."""
    return sorted((site for site in sites if site[0] in kinds), key=lambda s: -moved_bytes(s))


def sweep(sites: Counter[Site], kinds: Sequence[str] = ("norm",)) -> list[dict]:
    """Every tile of the sweep grid at each shape of ``kinds``: milliseconds, best first."""
    from bench.tile_sweep import time_tiles
    from engines.kernels import head_gram as gram
    from engines.kernels import norm_matmul as fused

    grids = {"norm": NORM_SWEEP, "gram": GRAM_SWEEP}
    results = []
    for site in sweep_sites(sites, kinds):
        tensors = site_inputs(site)

        def launch(tile: tuple[int, ...], kind: str = site[0]) -> torch.Tensor:
            if kind == "gram":
                block_n, warps, stages, squares = tile
                return gram.launch_head_gram(gram.head_gram_kernel.fn, tensors["qk"], tensors["heads"],
                                             BLOCK_N=block_n, SQUARES=squares, num_warps=warps, num_stages=stages)
            block_m, inner, warps, stages = tile
            if kind == "norm":
                return fused.launch_norm_matmul(fused.norm_matmul_kernel.fn, tensors["x"], tensors["weight_t"],
                                                tensors["bias"], 1e-5, False, BLOCK_M=block_m, BLOCK_N=inner,
                                                num_warps=warps, num_stages=stages)
            return fused.launch_matmul_residual(fused.matmul_residual_kernel.fn, tensors["a"], tensors["weight"],
                                                None, tensors["residual"], BLOCK_M=block_m, BLOCK_K=inner,
                                                num_warps=warps, num_stages=stages)

        timings = time_tiles(grids.get(site[0], RESIDUAL_SWEEP), launch, moved_bytes(site), str(site))
        entry = {"site": list(site), "best": timings[:8]}
        print(json.dumps(entry), flush=True)
        results.append(entry)
    return results


def _channels(r: dict) -> str:
    # gram sites: q and k of K channels each, in N heads
    return f"{r['K']}, heads {r['N']}" if r["kind"] == "gram" else f"{r['K']} -> {r['N']}"


def markdown(rows: list[dict], title: str) -> str:
    return kernel_table(title, [
        Column("kind", lambda r: r["kind"], numeric=False),
        Column("M", lambda r: str(r["images"] * r["rows"])),
        Column("K -> N", _channels, numeric=False),
        Column("calls", lambda r: str(r["calls_per_frame"]), "calls"),
        Column("unfused ms", lambda r: f"{r['unfused_ms']:.3f}", "unfused"),
        Column("product ms", lambda r: f"{r['product_ms']:.3f}", "product"),
        Column("fused ms", lambda r: f"{r['fused_ms']:.3f}", "fused"),
        Column("fused GB/s", lambda r: f"{r['fused_GB_per_s']:.0f}"),
        Column("fused max err", lambda r: f"{r['fused_max_abs_err']:.1e}"),
        Column("tile", lambda r: r["fused_config"], numeric=False),
    ], rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = kernel_parser(__doc__, "norm_matmul_kernels")
    parser.add_argument("--sweep", nargs="?", const="norm", metavar="KINDS",
                        help="also time a grid of tiles at every shape of these site kinds (comma-separated: norm, "
                             "residual, mixing, gram; default norm)")
    args = parse_on_a_gpu(parser, argv)
    sites = frame_sites(preset(args.preset), args.size)
    rows = measure(sites)
    title = frame_title("LayerNorm + projection, projection + residual and MDTA's cosines", args)
    table = markdown(rows, title)
    print(table)
    swept = sweep(sites, args.sweep.split(",")) if args.sweep else []
    write_results(args.out, "norm_matmul_kernels", {"title": title, "rows": rows, "sweep": swept}, table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
