"""runtime.io's images and files: upright by EXIF, 16 bits and ICC profiles kept where the format
allows, temporary names within NAME_MAX, and write errors that say what happened (a real full
disk on a tiny tmpfs, a folder in the way, a file where a folder should be)."""
from __future__ import annotations

import os

import cv2
import numpy as np
import pytest
from media_helpers import exif_with_orientation, needs_tmpfs, pillow_bytes, srgb_profile, tiny_filesystem
from PIL import Image, ImageOps

from runtime import io


def _rgb(height: int = 24, width: int = 40) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    return np.dstack([x * 6, y * 10, (x + y) * 3]).astype(np.uint8)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_like_pillow(tmp_path, orientation):
    # A lossless PNG with an eXIf chunk, so the comparison with Pillow is exact.
    path = tmp_path / "o.png"
    path.write_bytes(pillow_bytes(_rgb(), "PNG", exif=exif_with_orientation(orientation)))
    image = io.read_image(path)
    with Image.open(path) as stored:
        expected = np.asarray(ImageOps.exif_transpose(stored).convert("RGB"))[..., ::-1]  # BGR, as OpenCV
    assert image.frame.flags.c_contiguous and image.frame.shape == expected.shape
    assert np.array_equal(image.frame, expected)


def test_portrait_phone_jpeg_comes_out_upright(tmp_path):
    """A phone photo: stored landscape (40 x 24) with orientation 6 (turn 90 degrees clockwise)."""
    path = tmp_path / "phone.jpg"
    path.write_bytes(pillow_bytes(_rgb(24, 40), "JPEG", exif=exif_with_orientation(6), quality=95))
    assert cv2.imread(str(path), cv2.IMREAD_UNCHANGED).shape == (24, 40, 3)  # OpenCV alone: on its side
    image = io.read_image(path)
    assert image.frame.shape == (40, 24, 3)
    # The stored image's first column (left edge) is now the top row, read right to left.
    stored = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert np.abs(image.frame[0].astype(int) - stored[::-1, 0].astype(int)).max() <= 2


def test_16_bit_png_round_trip_is_exact(tmp_path):
    deep = (np.arange(16 * 24 * 3, dtype=np.uint32).reshape(16, 24, 3) * 97 % 65536).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "in.png"), deep)
    image = io.read_image(tmp_path / "in.png")
    assert image.bits == 16 and image.frame.dtype == np.float32
    assert io.write_image(tmp_path / "out.png", image.frame, image.bits) == []
    assert np.array_equal(cv2.imread(str(tmp_path / "out.png"), cv2.IMREAD_UNCHANGED), deep)


def test_16_bit_into_jpeg_is_scaled_to_8_bits_and_noted(tmp_path):
    frame = np.full((8, 8, 3), 0.5, np.float32)
    notes = io.write_image(tmp_path / "out.jpg", frame, bits=16)
    assert any("8 bits" in note for note in notes)
    assert abs(int(cv2.imread(str(tmp_path / "out.jpg")).mean()) - 128) <= 1  # not saturated to 255


@pytest.mark.parametrize("suffix, bits", [(".png", 8), (".png", 16), (".jpg", 8), (".webp", 8)])
def test_icc_profile_is_kept(tmp_path, suffix, bits):
    icc = srgb_profile()
    src = tmp_path / f"in{suffix}"
    src.write_bytes(pillow_bytes(_rgb(), "PNG" if suffix == ".png" else suffix[1:].upper().replace("JPG", "JPEG"),
                                 icc_profile=icc))
    image = io.read_image(src)
    assert image.icc == icc
    frame = image.frame.astype(np.float32) / 255 if bits == 16 else image.frame
    notes = io.write_image(tmp_path / f"out{suffix}", frame, bits, image.icc)
    if not hasattr(cv2, "imencodeWithMetadata"):  # OpenCV before 4.12 (JetPack's): the loss is noted
        assert any("ICC profile not kept" in note for note in notes), notes
        return
    assert notes == []
    with Image.open(tmp_path / f"out{suffix}") as written:
        assert written.info.get("icc_profile") == icc
    assert cv2.imread(str(tmp_path / f"out{suffix}"), cv2.IMREAD_UNCHANGED).dtype == (np.uint16 if bits == 16
                                                                                      else np.uint8)


def test_icc_profile_a_format_cannot_hold_is_noted(tmp_path):
    notes = io.write_image(tmp_path / "out.tif", _rgb(), 8, srgb_profile())
    assert any("ICC profile not kept" in note for note in notes)
    assert cv2.imread(str(tmp_path / "out.tif")).shape == (24, 40, 3)


def test_long_name_temporary_fits_name_max(tmp_path):
    """A 252-character name: ".NAME.XXXXXXXX.png" would pass 255, so the temporary's stem is cut."""
    path = tmp_path / ("n" * 248 + ".png")
    assert len(path.name) == 252
    io.write_image(path, _rgb())
    assert cv2.imread(str(path)).shape == (24, 40, 3)
    assert sorted(os.listdir(tmp_path)) == [path.name]
    leftover = io.temporary_path(path)  # what a kill in mid-write leaves
    assert len(os.fsencode(leftover.name)) <= os.pathconf(tmp_path, "PC_NAME_MAX")
    assert io.temporaries_of(path) == [leftover]
    assert io.temporaries_of(tmp_path / ("n" * 200 + ".png")) == []


def test_multibyte_name_is_cut_on_a_character_boundary(tmp_path):
    path = tmp_path / ("é" * 125 + ".png")  # 250 bytes in UTF-8
    io.write_image(path, _rgb())
    assert path.exists() and io.temporaries_of(path) == []


@needs_tmpfs
def test_full_disk_is_named(tmp_path):
    disk = tmp_path / "disk"
    with tiny_filesystem(disk, size="64k"):
        noise = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)  # ~200 kB as PNG
        with pytest.raises(io.MediaError) as info:
            io.write_image(disk / "big.png", noise)
        assert str(info.value).startswith(f"disk full (ENOSPC) writing {disk / 'big.png'}")
        assert os.listdir(disk) == []  # the temporary file is gone


def test_a_folder_in_the_way_and_a_file_as_parent_are_named(tmp_path):
    (tmp_path / "taken.png").mkdir()
    with pytest.raises(io.MediaError, match="is a folder"):
        io.write_image(tmp_path / "taken.png", _rgb())
    (tmp_path / "file").write_text("x")
    with pytest.raises(io.MediaError, match="is a file, not a folder"):
        io.write_image(tmp_path / "file" / "out.png", _rgb())
    assert sorted(os.listdir(tmp_path)) == ["file", "taken.png"]


def test_list_images_skips_hidden_files_and_folders_but_keeps_a_broken_link(tmp_path):
    cv2.imwrite(str(tmp_path / "a.png"), _rgb())
    cv2.imwrite(str(tmp_path / ".a.k2j4h5g6.png"), _rgb())  # a killed run's temporary
    (tmp_path / "folder.png").mkdir()
    (tmp_path / "gone.png").symlink_to(tmp_path / "missing.png")
    (tmp_path / "notes.txt").write_text("not an image")
    assert [p.name for p in io.list_images(tmp_path)] == ["a.png", "gone.png"]
    with pytest.raises(io.MediaError, match="does not exist"):
        io.read_image(tmp_path / "gone.png")


def test_corrupt_image_is_named(tmp_path):
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(io.MediaError, match="bad.jpg: OpenCV cannot read it"):
        io.read_image(tmp_path / "bad.jpg")
