"""Videos through runtime.io and runtime.jobs (PyAV): as many frames out as in, the same size
(odd sizes too) and rate, audio packets copied byte for byte, a note for a stream the output
container cannot hold, the rotation of a phone video kept, and a truncated source refused with
both frame counts (or kept with accept_partial). Tiny random model on the CPU."""
from __future__ import annotations

import os

import numpy as np
import pytest
from media_helpers import audio_packets, decoded_frames, make_video, video_frame
from runtime_helpers import deblurrer_fixture, model_fixture  # noqa: F401  (pytest fixtures)

from runtime import io
from runtime.jobs import ShortVideo, deblur_video_file

av = pytest.importorskip("av", reason="PyAV (a runtime dependency) is not installed here")


@pytest.mark.parametrize("suffix, fourcc", [(".mp4", None), (".avi", None), (".mkv", "FFV1"), (".mov", None)])
def test_odd_size_and_rate_survive_the_writer(tmp_path, suffix, fourcc):
    """63 x 47: OpenCV's FFmpeg writer rounds sizes down to even ones (width &= -2 in its
    cap_ffmpeg_impl.hpp), so these go through PyAV."""
    path = tmp_path / f"odd{suffix}"
    frames = [video_frame(i, 63, 47) for i in range(7)]
    with io.VideoWriter(path, 15.0, (63, 47), fourcc) as writer:
        for frame in frames:
            writer.write(frame)
    with io.VideoReader(path) as reader:
        got = list(reader)
        assert (reader.size, reader.fps, reader.frames_read) == ((63, 47), 15.0, 7)
    assert [f.shape for f in got] == [(47, 63, 3)] * 7
    if fourcc == "FFV1":  # lossless
        assert all(np.array_equal(a, b) for a, b in zip(got, frames))
    else:
        assert np.mean([np.abs(a.astype(int) - b).mean() for a, b in zip(got, frames)]) < 6
    assert os.listdir(tmp_path) == [path.name]


def test_ten_frames_with_audio_keep_every_frame_and_audio_packet(tmp_path, deblurrer):
    src, dst = tmp_path / "clip.mp4", tmp_path / "sharp.mp4"
    make_video(src, frames=10, size=(63, 47), rate=12, audio="aac")
    result = deblur_video_file(deblurrer, src, dst)
    assert (result.frames, result.declared, result.notes) == (10, 10, ())
    out = decoded_frames(dst)
    assert len(out) == 10 and out[0].shape == (47, 63, 3)
    with av.open(str(dst)) as container:
        assert container.streams.video[0].average_rate == 12
    packets = audio_packets(src)
    assert packets and audio_packets(dst) == packets


def test_audio_copied_across_containers(tmp_path, deblurrer):
    src, dst = tmp_path / "clip.avi", tmp_path / "sharp.mkv"
    make_video(src, frames=6, codec="mjpeg", pixel_format="yuvj420p", audio="pcm_s16le")
    assert deblur_video_file(deblurrer, src, dst).frames == 6
    assert audio_packets(dst) == audio_packets(src) != []


def test_a_stream_the_container_cannot_hold_is_noted(tmp_path, deblurrer):
    src, dst = tmp_path / "clip.mkv", tmp_path / "sharp.avi"
    make_video(src, frames=6, audio="libopus")
    result = deblur_video_file(deblurrer, src, dst)
    assert result.frames == 6 and len(decoded_frames(dst)) == 6
    assert len(result.notes) == 1 and "audio stream 1 (opus) not copied" in result.notes[0]
    assert audio_packets(dst) == []


def test_rotation_of_a_phone_video_is_kept(tmp_path, deblurrer):
    src = tmp_path / "phone.mp4"
    make_video(src, frames=4, audio=None, rotation=90)
    deblur_video_file(deblurrer, src, tmp_path / "sharp.mp4")
    with av.open(str(tmp_path / "sharp.mp4")) as container:
        assert next(container.decode(video=0)).rotation == 90
    result = deblur_video_file(deblurrer, src, tmp_path / "sharp.avi")  # AVI has no display matrix
    assert any("rotation 90 degrees not kept" in note for note in result.notes)


def _truncated(tmp_path):
    src = tmp_path / "clip.avi"
    # 128 x 96: the AVI header takes ~10 kB, so smaller frames would leave none in 40 % of the file
    make_video(src, frames=10, size=(128, 96), codec="mjpeg", pixel_format="yuvj420p", audio=None)
    data = src.read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[:int(len(data) * 0.4)])
    return cut


def test_truncated_source_names_both_counts_and_writes_nothing(tmp_path, deblurrer):
    cut, dst = _truncated(tmp_path), tmp_path / "sharp.avi"
    with pytest.raises(ShortVideo) as info:
        deblur_video_file(deblurrer, cut, dst)
    message = str(info.value)
    read = info.value.frames_read
    assert 0 < read < 10 and f"{read} frames decoded but the file declares 10" in message
    assert not dst.exists() and io.temporaries_of(dst) == []


def test_truncated_source_kept_when_partial_input_is_accepted(tmp_path, deblurrer):
    cut, dst = _truncated(tmp_path), tmp_path / "sharp.avi"
    result = deblur_video_file(deblurrer, cut, dst, accept_partial=True)
    assert 0 < result.frames < 10 and result.declared == 10
    assert any("partial source kept" in note for note in result.notes)
    assert len(decoded_frames(dst)) == result.frames


def test_unknown_codec_and_suffix_are_refused_by_name(tmp_path):
    with pytest.raises(io.MediaError, match="codec 'XVID' is not one of"):
        io.VideoWriter(tmp_path / "a.avi", 10, (8, 8), "XVID")
    with pytest.raises(io.MediaError, match="unknown video suffix '.webm'"):
        io.VideoWriter(tmp_path / "a.webm", 10, (8, 8))
    assert os.listdir(tmp_path) == []
