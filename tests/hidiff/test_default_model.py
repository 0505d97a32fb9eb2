"""The embedded demonstration model ships inside the package and runs."""
import cv2
import torch

from hidiff import default_model
from hidiff.weights import default_weights_path


def test_embedded_model_is_small_and_loads():
    path = default_weights_path()
    assert path.stat().st_size <= 12 * 1024 * 1024  # issue 3: weights <= 12 MB in fp16
    model = default_model()
    assert model.le is None  # inference needs no stage-1 encoder
    assert model.config.network_g.dim < 48  # the GoPro architecture, narrower
    assert model.schedule.num_timesteps == 8


def test_embedded_model_deblurs_the_sample():
    blur = cv2.imread(str(default_weights_path().parents[1] / "samples" / "blurry.png"))
    x = torch.from_numpy(cv2.cvtColor(blur, cv2.COLOR_BGR2RGB)).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        out = default_model()(x[:, :, :64, :96], generator=torch.Generator().manual_seed(0))
    assert out.shape == (1, 3, 64, 96) and torch.isfinite(out).all()
    # A deblurred crop stays an image of the same scene, not noise.
    assert (out.clamp(0, 1) - x[:, :, :64, :96]).abs().mean() < 0.1
