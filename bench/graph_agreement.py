"""Each graph of one backend against eager FP32 PyTorch, fed the same inputs at one frame size: which
graph (and, beside the FP16 PyTorch engines with the fused kernels, whether the kernels or their
packaging) a whole frame's difference comes from.

    python bench/graph_agreement.py --backend aoti --engines DIR --weights W.safetensors --size 1280x720

Inputs: a natural frame (padded to a multiple of 8), the LE_DM prior of eager FP32 as the denoising
step's condition and the Restormer's prior, a seeded latent, the middle timestep. Prints, per graph
and output, the largest absolute difference and the RMS difference relative to the reference's RMS;
for the Restormer's image also the PSNR (dB, peak 1). Rows: the backend (with ``--backend``), and on
CUDA the FP16 PyTorch engines with the fused Triton kernels run eagerly (no compilation), once
through their opaque ops and once through the packaged forms that AOTInductor packages compile in.
"""
from __future__ import annotations

import argparse
import contextlib
import math
import sys
from collections.abc import Mapping, Sequence

import torch

from bench.inputs import ImageSize, add_model_arguments, load_model, model_choice_from_args, natural_frames


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="graph_agreement.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--backend", default=None, help="an engines.registry backend, e.g. aoti (default: none)")
    p.add_argument("--engines", default=None, help="the backend's artifacts folder")
    p.add_argument("--precision", default="fp16", help="the artifacts' precision (default fp16)")
    p.add_argument("--size", type=ImageSize.parse, default=ImageSize.parse("1280x720"), help="WxH (default 1280x720)")
    p.add_argument("--device", default="cuda:0")
    add_model_arguments(p)
    return p.parse_args(argv)


def graph_feeds(model: torch.nn.Module, size: ImageSize, reference: Mapping, device: torch.device) -> dict:
    """The three graphs' inputs at ``size`` (see the module docstring); ``reference``'s LE_DM makes the prior."""
    from engines.contracts import pad_to_multiple
    from engines.pipeline import pad_bottom_right

    frame = torch.from_numpy(natural_frames(size, 1)[0][..., ::-1].copy()).permute(2, 0, 1)[None].float() / 255
    blur = pad_bottom_right(frame, pad_to_multiple(size.height), pad_to_multiple(size.width)).to(device)
    prior = reference["le_dm"].infer({"blur": blur})
    cond = next(iter(prior.values()))
    z = torch.randn(cond.shape, generator=torch.Generator().manual_seed(0)).to(device)
    t = torch.tensor([model.config.diffusion_schedule.timesteps // 2], dtype=torch.int64, device=device)
    return {"le_dm": {"blur": blur}, "denoise_step": {"z": z, "cond": cond, "t": t},
            "restormer": {"blur": blur, "prior": cond}}


def agreement(got: torch.Tensor, want: torch.Tensor) -> dict[str, float]:
    diff = got.float() - want.float()
    mse = float(diff.square().mean())
    rms_want = float(want.float().square().mean().sqrt())
    return {"max_abs": float(diff.abs().max()), "rel_rms": math.sqrt(mse) / max(rms_want, 1e-30),
            "psnr_db": 10 * math.log10(1 / mse) if mse > 0 else math.inf}


def main(argv: Sequence[str] | None = None) -> int:
    from engines.kernels.support import packaged_forms
    from engines.registry import open_engines
    from engines.torch_backend import torch_engines
    from engines.torch_settings import TorchSettings

    args = parse_args(argv)
    device = torch.device(args.device)
    model, source = load_model(model_choice_from_args(args), seed=0)
    rows: dict[str, tuple[Mapping, bool]] = {}  # name: (engines, packaged forms)
    if args.backend is not None:  # opened first, as the runtime opens them: before any other CUDA work
        rows[args.backend] = (open_engines(args.backend, model=model, artifacts=args.engines, device=device,
                                           precision=args.precision, strict=True, cuda_graphs=False).engines, False)
    reference = torch_engines(model, device, "fp32", TorchSettings())
    if device.type == "cuda":
        kernels = torch_engines(model, device, "fp16", TorchSettings.preset("fastest").replace(
            compile_mode=None, cuda_graphs=False))
        rows["fp16 kernels, opaque ops"] = (kernels, False)
        rows["fp16 kernels, packaged forms"] = (kernels, True)
    with torch.no_grad():
        feeds = graph_feeds(model, args.size, reference, device)
        wants = {graph: reference[graph].infer(graph_feed) for graph, graph_feed in feeds.items()}
        print(f"model: {source}; size {args.size.width}x{args.size.height}; reference: eager FP32")
        print(f"{'engines':34} {'graph/output':28} {'max |diff|':>11} {'rel RMS':>10} {'PSNR (dB)':>10}")
        for name, (engines, packaged) in rows.items():
            for graph, graph_feed in feeds.items():
                with packaged_forms() if packaged else contextlib.nullcontext():
                    got = engines[graph].infer(graph_feed)
                for key, value in wants[graph].items():
                    a = agreement(got[key], value)
                    psnr = f"{a['psnr_db']:10.2f}" if graph == "restormer" else f"{'':>10}"
                    print(f"{name:34} {graph + '/' + key:28} {a['max_abs']:11.3e} {a['rel_rms']:10.3e} {psnr}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
