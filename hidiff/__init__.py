"""HI-Diff in PyTorch: the model, its configuration, checkpoints and (in submodules) training and evaluation."""
from hidiff.config import HIDiffConfig, from_official_options, preset
from hidiff.model import HIDiff
from hidiff.schedule import DiffusionSchedule

__all__ = ["HIDiff", "HIDiffConfig", "DiffusionSchedule", "from_official_options", "preset", "default_model"]


def default_model() -> HIDiff:
    """The small demonstration model shipped inside the package (see hidiff/weights/README.md)."""
    from hidiff.weights import default_weights_path

    return HIDiff.load(default_weights_path())
