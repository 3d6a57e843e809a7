"""Pictures in the awkward formats people really upload, and a few that are not pictures at all."""
from __future__ import annotations

import pickle
import zlib
from pathlib import Path

from PIL import Image


def solid_image(folder: Path, name: str, colour, mode: str = "RGB", size=(40, 30)) -> Path:
    path = Path(folder) / name
    Image.new(mode, size, colour).save(path)
    return path


def awkward_uploads(folder: Path) -> dict[str, Path]:
    """Grey, transparent, CMYK, palette, 16-bit, one pixel, animated, EXIF-rotated: all open as upright RGB.
    A truncated PNG does not."""
    folder = Path(folder)
    files = {}
    for name, mode, colour in (("grey", "L", 90), ("rgba", "RGBA", (10, 200, 10, 0)), ("cmyk", "CMYK", (0, 255, 0, 0)),
                               ("palette", "P", 3), ("sixteen-bit", "I;16", 4000), ("one-pixel", "RGB", (1, 2, 3))):
        size = (1, 1) if name == "one-pixel" else (20, 12)
        files[name] = solid_image(folder, f"{name}.{'jpg' if mode == 'CMYK' else 'png'}", colour, mode, size)
    frames = [Image.new("RGB", (16, 16), c) for c in ("red", "blue")]
    files["animated"] = folder / "animated.gif"
    frames[0].save(files["animated"], save_all=True, append_images=frames[1:])
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: rotate 90 degrees to show
    files["exif-rotated"] = folder / "exif.jpg"
    Image.new("RGB", (30, 10), "white").save(files["exif-rotated"], exif=exif)
    whole = solid_image(folder, "whole.png", "red", size=(64, 64))
    files["truncated"] = folder / "truncated.png"
    files["truncated"].write_bytes(whole.read_bytes()[:60])
    return files


def refused_uploads(folder: Path) -> dict[str, Path]:
    """Files every upload path must refuse: a decompression bomb, a picture over the app's pixel limit, and text
    and a pickle named .png."""
    folder = Path(folder)
    files = {"bomb": bomb_png(folder / "bomb.png"), "over-the-pixel-limit": folder / "big.png",
             "text-named-png": folder / "text.png", "pickle-named-png": folder / "pickle.png"}
    Image.new("1", (7000, 7000)).save(files["over-the-pixel-limit"])   # 49 M pixels: Pillow opens it, we must not
    files["text-named-png"].write_text("just some text\n")
    files["pickle-named-png"].write_bytes(pickle.dumps({"a": 1}))
    return files


def bomb_png(path: Path, side: int = 20_000) -> Path:
    """A real 20,000 x 20,000 1-bit PNG (400 M pixels), a few hundred kB on disk."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    row = b"\x00" + bytes((side + 7) // 8)
    z = zlib.compressobj(9)
    body = b"".join(z.compress(row) for _ in range(side)) + z.flush()
    ihdr = side.to_bytes(4, "big") * 2 + bytes([1, 0, 0, 0, 0])
    path = Path(path)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return path
