"""A line that shows the time elapsed while one long step runs (a TensorRT build without progress
monitor, an AOTInductor package's compilation): a tqdm status line on stderr, refreshed every
second and cleared when the step ends."""
from __future__ import annotations

import threading

from tqdm import tqdm


class Heartbeat:
    """``with Heartbeat("restormer: building"):`` prints ``restormer: building: 01:23`` while the
    block runs; ``enabled=False`` prints nothing."""

    def __init__(self, label: str, enabled: bool = True):
        self.label = label
        self.enabled = enabled
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._tick, daemon=True)

    def _tick(self) -> None:
        with tqdm(desc=self.label, bar_format="{desc}: {elapsed}", dynamic_ncols=True, leave=False) as bar:
            while not self._done.wait(1.0):
                bar.refresh()

    def __enter__(self) -> "Heartbeat":
        if self.enabled:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        if self.enabled:
            self._thread.join()
