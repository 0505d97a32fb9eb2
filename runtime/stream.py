"""The video path: upload, compute and download of consecutive frames overlap on CUDA.

Per frame shape, two slots (double buffering), each with a pinned host input buffer, a device
input buffer, a pinned host output buffer and events. Frame i goes through

    host:     copy the frame into slot i % 2's pinned input
    upload:   pinned -> device (async)                      -> event uploaded
    compute:  wait uploaded; convert, deblur, convert back  -> event computed
    download: wait computed; device -> pinned output (async) -> event downloaded

and is handed back after frame i+1 has been queued, so the GPU computes frame i+1 while the
host waits for frame i's download and then decodes the next input. Upload and download run on
two separate copy streams: on one in-order copy stream the upload of frame i+1 would queue behind
the download of frame i, which waits for frame i's compute, and the overlap would be lost.

Memory stays flat over any number of frames and videos: buffers are made once per frame shape
and call (at most :data:`MAX_SHAPES` shapes kept; torch's host and device caching allocators
reuse them for the next call), outputs are copied out of the pinned buffer before they are
returned, the core allocates through torch's caching allocator on one compute stream, and the
streams belong to the Deblurrer (tests/runtime/test_stream.py checks it on a GPU).
Frames already on a CUDA device, and lists, go through :meth:`Deblurrer.deblur` one by one (no
host copy to overlap); without CUDA the whole stream is a plain loop.
"""
from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from runtime import frames as fr
from runtime.errors import DeblurError

if TYPE_CHECKING:
    from runtime.deblurrer import Deblurrer

MAX_SHAPES = 4  # distinct frame shapes whose buffers are kept (a video has one)
DEPTH = 2  # frames in flight; also the number of slots per shape


@dataclass
class _Slot:
    pinned_in: torch.Tensor
    device_in: torch.Tensor
    pinned_out: torch.Tensor
    pinned_health: torch.Tensor
    uploaded: torch.cuda.Event
    computed: torch.cuda.Event
    downloaded: torch.cuda.Event


@dataclass
class _InFlight:
    slot: _Slot
    spec: fr.FrameSpec
    index: int


def _make_slot(spec: fr.FrameSpec, device: torch.device) -> _Slot:
    shape = (spec.frames, spec.height, spec.width, spec.channels)
    dtype = torch.uint8 if spec.dtype == "uint8" else torch.float32
    return _Slot(
        pinned_in=torch.empty(shape, dtype=dtype, pin_memory=True),
        device_in=torch.empty(shape, dtype=dtype, device=device),
        pinned_out=torch.empty(shape, dtype=dtype, pin_memory=True),
        pinned_health=torch.empty((spec.frames, 4), dtype=torch.float32, pin_memory=True),
        uploaded=torch.cuda.Event(), computed=torch.cuda.Event(), downloaded=torch.cuda.Event(),
    )


class _Pipeline:
    """Buffers and streams of one :func:`stream_frames` call."""

    def __init__(self, deblurrer: "Deblurrer"):
        self.deblurrer = deblurrer
        self.device = deblurrer.device
        self.upload, self.compute, self.download = deblurrer.video_streams()
        self._slots: OrderedDict[tuple[Any, ...], tuple[list[_Slot], list[int]]] = OrderedDict()

    def slot_for(self, spec: fr.FrameSpec) -> _Slot:
        key = (spec.group_key, spec.batch)
        if key not in self._slots:
            if len(self._slots) >= MAX_SHAPES:
                # The oldest shape's frames were all handed back (DEPTH < any shape's lifetime here),
                # but its last download may still be running: wait for it before freeing its buffers.
                self.download.synchronize()
                self._slots.popitem(last=False)
            self._slots[key] = ([_make_slot(spec, self.device) for _ in range(DEPTH)], [0])
        self._slots.move_to_end(key)
        slots, counter = self._slots[key]
        slot = slots[counter[0] % DEPTH]
        counter[0] += 1
        return slot

    def submit(self, frame: Any, spec: fr.FrameSpec, index: int) -> _InFlight:
        slot = self.slot_for(spec)
        # The slot's previous frame was collected (downloaded.synchronize), so its pinned input is
        # free: its upload finished before its compute, which finished before its download.
        slot.pinned_in.copy_(fr.as_nhwc(frame, spec))
        with torch.cuda.stream(self.upload):
            slot.device_in.copy_(slot.pinned_in, non_blocking=True)
            slot.uploaded.record(self.upload)
        self.compute.wait_event(slot.uploaded)
        with torch.cuda.stream(self.compute):
            out, health = self.deblurrer.process_nhwc(slot.device_in, spec)
            slot.computed.record(self.compute)
        self.download.wait_event(slot.computed)
        with torch.cuda.stream(self.download):
            slot.pinned_out.copy_(out, non_blocking=True)
            slot.pinned_health.copy_(health, non_blocking=True)
            # Made on the compute stream, read here: keep the allocator from reusing them too early.
            out.record_stream(self.download)
            health.record_stream(self.download)
            slot.downloaded.record(self.download)
        # The next upload into this slot's device buffer must wait until this compute has read it.
        self.upload.wait_event(slot.computed)
        return _InFlight(slot, spec, index)

    def collect(self, job: _InFlight) -> Any:
        job.slot.downloaded.synchronize()
        spec = job.spec
        where = f"frame {job.index} of the stream"
        self.deblurrer.check_health(job.slot.pinned_health.clone(), spec,
                                    lambda i: where + (f" (row {i})" if spec.batch else ""))
        return fr.restore(job.slot.pinned_out.clone(), spec)


def stream_frames(deblurrer: "Deblurrer", frames: Iterable[Any]) -> Iterator[Any]:
    """Deblur ``frames`` in order; see the module docstring. Raises at the first bad frame."""
    if deblurrer.device.type != "cuda":
        for index, frame in enumerate(frames):
            try:
                result = deblurrer.deblur(frame)
            except DeblurError as exc:
                raise type(exc)(f"frame {index} of the stream: {exc}") from exc
            yield result
        return
    pipeline = _Pipeline(deblurrer)
    pending: deque[_InFlight] = deque()
    for index, frame in enumerate(frames):
        if isinstance(frame, (list, tuple)):
            spec = None
        else:
            spec = fr.inspect_frame(frame, f"frame {index} of the stream")
        if spec is None or spec.device != "cpu":
            while pending:  # keep the order: earlier frames first
                yield pipeline.collect(pending.popleft())
            # On the caller's stream, where the frame was made: no copy to overlap here.
            try:
                result = deblurrer.deblur(frame)
            except DeblurError as exc:
                raise type(exc)(f"frame {index} of the stream: {exc}") from exc
            yield result
            continue
        pending.append(pipeline.submit(frame, spec, index))
        if len(pending) >= DEPTH:
            yield pipeline.collect(pending.popleft())
    while pending:
        yield pipeline.collect(pending.popleft())
