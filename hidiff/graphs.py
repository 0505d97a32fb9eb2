"""The three inference graphs as PyTorch modules: what is exported to ONNX and what the PyTorch
engine backend runs, so that every backend computes the same function.

    le_dm         blur (B, 3, H, W)                  -> cond (B, N, C')
    denoise_step  z (B, N, C'), cond (B, N, C'), t   -> z_prev (B, N, C')
    restormer     blur (B, 3, H, W), prior (B, N, C') -> sharp (B, 3, H, W)

Inputs and outputs are float32 whatever the compute dtype: a float16 graph casts at its edges.
H and W are multiples of 8 (the caller pads). ``t`` is an int64 tensor of shape (1,) holding the
schedule index (T-1 .. 0); the schedule's tables are baked into ``denoise_step`` and the
reverse step itself runs in float32.
"""
from __future__ import annotations

import torch
from torch import nn

from hidiff.model import HIDiff


def _image_layout(channels_last: bool) -> torch.memory_format:
    return torch.channels_last if channels_last else torch.contiguous_format


class LeDmGraph(nn.Module):
    def __init__(self, model: HIDiff, dtype: torch.dtype = torch.float32, channels_last: bool = False):
        super().__init__()
        self.le_dm = model.le_dm
        self.dtype = dtype
        self.layout = _image_layout(channels_last)

    def forward(self, blur: torch.Tensor) -> torch.Tensor:
        return self.le_dm(blur.to(self.dtype, memory_format=self.layout)).float()


class DenoiseStepGraph(nn.Module):
    def __init__(self, model: HIDiff, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.denoiser = model.denoiser
        self.dtype = dtype
        schedule = model.schedule
        # The four tables of the reverse step as one (T, 4) buffer: one gather per step (the loop
        # is a few hundred tiny kernels, so each one counts); it follows .to(device) and becomes a
        # graph constant.
        tables = [getattr(schedule, name).detach().float() for name in (
            "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod", "posterior_mean_coef1", "posterior_mean_coef2")]
        self.register_buffer("coefficients", torch.stack(tables, dim=1).clone(), persistent=False)
        self.coefficients: torch.Tensor
        self.clip_denoised = schedule.clip_denoised
        self.time_offset = schedule.time_offset

    def forward(self, z: torch.Tensor, cond: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        eps = self.denoiser(z.to(self.dtype), cond.to(self.dtype), t + self.time_offset).float()
        coef = self.coefficients[t]  # (1, 4): the step's row of the tables
        recip, recipm1, coef1, coef2 = (coef[:, i, None, None] for i in range(4))
        # 1. x0 = sqrt(1/abar_t) z_t - sqrt(1/abar_t - 1) eps    (Eq. 6)
        x0 = torch.addcmul(recip * z, recipm1, eps, value=-1.0)
        # 2. clamp to the prior's range (GoPro release only)
        if self.clip_denoised:
            x0 = x0.clamp(-1.0, 1.0)
        # 3. z_{t-1} = coef1_t x0 + coef2_t z_t    (posterior mean, no noise)
        return torch.addcmul(coef1 * x0, coef2, z)


class RestormerGraph(nn.Module):
    def __init__(self, model: HIDiff, dtype: torch.dtype = torch.float32, channels_last: bool = False):
        super().__init__()
        self.restormer = model.restormer
        self.dtype = dtype
        self.layout = _image_layout(channels_last)

    def forward(self, blur: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        sharp = self.restormer(blur.to(self.dtype, memory_format=self.layout), prior.to(self.dtype))
        return sharp.float().contiguous()


def graph_modules(model: HIDiff, dtype: torch.dtype = torch.float32, channels_last: bool = False) -> dict[str, nn.Module]:
    """The three graphs of ``model`` in compute dtype ``dtype``. The model's weights must already
    be in that dtype (``model.half()`` for float16); the modules share them.

    ``channels_last``: the image graphs take their input in channels-last memory (NHWC strides,
    the layout GPU convolutions and our LayerNorms run fastest in; pass a model converted with
    ``model.to(memory_format=torch.channels_last)``). Shapes and results are the same; the
    ONNX export uses the default layout."""
    param_dtype = next(model.parameters()).dtype
    if param_dtype != dtype:
        raise ValueError(f"model weights are {param_dtype} but graphs in {dtype} were asked for; call model.to({dtype}) first")
    return {
        "le_dm": LeDmGraph(model, dtype, channels_last).eval(),
        "denoise_step": DenoiseStepGraph(model, dtype).eval(),
        "restormer": RestormerGraph(model, dtype, channels_last).eval(),
    }
