"""The training log: one JSON object per line (OUT/train_log.jsonl), appended, flushed per line.

Records carry ``event`` ("start", "train", "val", "checkpoint", "end"), ``iter`` and ``time``
(seconds since the epoch); "train" adds the losses, ``lr`` and ``it_per_s``; "val" adds
``psnr`` (and ``ssim``). A resumed run appends to the same file.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

LOG_NAME = "train_log.jsonl"


def _finite(value: Any) -> Any:
    # JSON has no inf/nan; a PSNR of identical images is inf.
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class JsonlLog:
    """Append records to ``path``; a disabled log (ranks other than 0) writes nothing."""

    def __init__(self, path: str | Path, enabled: bool = True):
        self.path = Path(path)
        self.enabled = enabled
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, event: str, iteration: int, **fields: Any) -> None:
        if not self.enabled:
            return
        record = {"event": event, "iter": iteration, "time": round(time.time(), 3)}
        record.update({k: _finite(v) for k, v in fields.items()})
        with self.path.open("a", encoding="utf-8") as stream:
            stream.write(json.dumps(record) + "\n")


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """Every record of a log file, in order."""
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
