"""Figures drawn from results tables only (plus the dataset's pixels for galleries)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # batch jobs have no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .results import save_figure  # noqa: E402


def curves(epochs: list[dict], path: Path) -> Path:
    """Loss and accuracy per epoch, train dashed and validation solid, one colour per trial."""
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    trials = list(dict.fromkeys(r["trial"] for r in epochs))
    for i, name in enumerate(trials):
        rows = sorted((r for r in epochs if r["trial"] == name), key=lambda r: r["epoch"])
        x = [r["epoch"] for r in rows]
        colour = f"C{i % 10}"
        ax_loss.plot(x, [r["train_loss"] for r in rows], "--", color=colour, alpha=0.7)
        ax_loss.plot(x, [r["val_loss"] for r in rows], "-o", color=colour, ms=3, label=name)
        ax_acc.plot(x, [100 * r["train_acc"] for r in rows], "--", color=colour, alpha=0.7)
        ax_acc.plot(x, [100 * r["val_acc"] for r in rows], "-o", color=colour, ms=3, label=name)
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss", title="Loss (dashed: train, solid: validation)")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="Accuracy (dashed: train, solid: validation)")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return path


def image_grid(images: np.ndarray, titles: list[str], path: Path, suptitle: str, cols: int = 6) -> Path:
    """A grid of uint8 images with a short title each (the misclassified gallery)."""
    n = max(len(images), 1)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(2.1 * cols, 2.4 * rows + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, img, title in zip(axes.flat, images, titles):
        ax.imshow(img)
        ax.set_title(title, fontsize=7.5)
    if not len(images):
        axes[0, 0].text(0.5, 0.5, "no images", ha="center", va="center")
    fig.suptitle(suptitle, fontsize=11)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return path
