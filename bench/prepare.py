"""`cnnc data prepare` on a mini-ImageNet-shaped folder of JPEGs vs the fastest in-memory decode.

Writes 6,000 84x84 JPEGs (100 classes x 60, the Ravi-Larochelle CSV layout), then in one
run: prepare end to end (file reads included, cold output folder), and decoding the same
bytes already in memory with PIL on all cores and with torchvision's batched decoder.
Prints ``name: value`` lines.
"""

from __future__ import annotations

import io
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cnn_cluster.data.miniimagenet import _CLASSES, prepare  # noqa: E402

N_CLASSES, PER_CLASS = 100, 60


def write_source(root: Path) -> list[bytes]:
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    wnids = sorted(_CLASSES)[:N_CLASSES]
    blobs, rows = [], ["filename,label"]
    base = (rng.random((84, 84, 3)) * 255).astype(np.uint8)
    for c, wnid in enumerate(wnids):
        for i in range(PER_CLASS):
            img = np.roll(base, (c * 7 + i) % 84, axis=(0, 1)) // 2 + (rng.random((84, 84, 3)) * 127).astype(np.uint8)
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, "JPEG", quality=90)
            name = f"{wnid}{i:08d}.jpg"
            (root / "images" / name).write_bytes(buf.getvalue())
            blobs.append(buf.getvalue())
            rows.append(f"{name},{wnid}")
    (root / "train.csv").write_text("\n".join(rows) + "\n")
    return blobs


def threaded_rate(decode_one, blobs: list[bytes]) -> float:
    """Images/s decoding in-memory bytes in chunks on one thread per core."""
    chunks = [blobs[i:i + 256] for i in range(0, len(blobs), 256)]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(os.cpu_count()) as pool:
        list(pool.map(lambda chunk: [decode_one(b) for b in chunk], chunks))
    return len(blobs) / (time.perf_counter() - t0)


def pil_ceiling(blobs: list[bytes]) -> float:
    return threaded_rate(lambda b: np.asarray(Image.open(io.BytesIO(b)).convert("RGB")), blobs)


def simplejpeg_ceiling(blobs: list[bytes]) -> float:
    import simplejpeg

    return threaded_rate(lambda b: simplejpeg.decode_jpeg(b, colorspace="RGB"), blobs)


def torchvision_ceiling(blobs: list[bytes]) -> float:
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    tensors = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in blobs]
    t0 = time.perf_counter()
    for i in range(0, len(tensors), 512):
        decode_jpeg(tensors[i:i + 512], mode=ImageReadMode.RGB)
    return len(blobs) / (time.perf_counter() - t0)


def main() -> None:
    import warnings

    warnings.simplefilter("ignore", DeprecationWarning)  # torchvision.io's decoders, measured for comparison
    import pandas  # noqa: F401 - pyarrow imports it on the first table (~0.5 s): process start-up, not prepare
    with tempfile.TemporaryDirectory() as tmp:
        blobs = write_source(Path(tmp) / "src")
        t0 = time.perf_counter()
        prepare(Path(tmp) / "src", Path(tmp) / "packed")
        rate = len(blobs) / (time.perf_counter() - t0)
        pil, sj, tv = pil_ceiling(blobs), simplejpeg_ceiling(blobs), torchvision_ceiling(blobs)
    ceiling = max(pil, sj, tv)
    print(f"images: {len(blobs)}")
    print(f"prepare_images_per_s: {rate:.0f}")
    print(f"decode_pil_threads_images_per_s: {pil:.0f}")
    print(f"decode_simplejpeg_threads_images_per_s: {sj:.0f}")
    print(f"decode_torchvision_batched_images_per_s: {tv:.0f}")
    print(f"decode_ceiling_images_per_s: {ceiling:.0f}")
    print(f"prepare_vs_ceiling: {rate / ceiling:.2f}")
    print(f"mini_imagenet_60000_estimate_s: {60000 / rate:.1f}")


if __name__ == "__main__":
    main()
