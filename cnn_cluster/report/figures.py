"""Figures drawn from results tables only (plus the dataset's pixels for galleries)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # batch jobs have no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from ..run.io import save_figure  # noqa: E402


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
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
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


def _heat_extent(shape: tuple[int, int], window: int, stride: int) -> tuple[float, float, float, float]:
    """Place map cell (i, j) over the centre of its window, in pixel coordinates."""
    h, w = shape
    c = (window - 1) / 2
    return (c - stride / 2, (w - 1) * stride + c + stride / 2, (h - 1) * stride + c + stride / 2, c - stride / 2)


def _box(ax, box) -> None:
    if box is not None and min(box) >= 0:
        x0, y0, x1, y1 = box
        ax.add_patch(plt.Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, ec="cyan", lw=1.2))


def _overlay(ax, image: np.ndarray, pmap: np.ndarray, clean: float, window: int, stride: int, box) -> None:
    """The image, with the confidence drop painted over it: opaque where the drop is largest."""
    drop = np.clip(clean - pmap, 0, None)
    norm = drop / max(float(drop.max()), 1e-6)
    ax.imshow(image)
    ax.imshow(norm, cmap="jet", vmin=0, vmax=1, alpha=0.75 * norm, extent=_heat_extent(pmap.shape, window, stride))
    _box(ax, box)


def occlusion_panel(image: np.ndarray, pmap: np.ndarray, clean: float, window: int, stride: int, title: str,
                    path: Path, box=None) -> Path:
    """Image, confidence map (own colour scale) and overlay of the confidence drop."""
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.6))
    axes[0].imshow(image)
    _box(axes[0], box)
    axes[0].set_title("image (box: object)" if box is not None else "image")
    _confidence(axes[1], pmap, window, stride, image.shape[:2])
    axes[1].set_title("P(class) with the window here")
    fig.colorbar(axes[1].images[0], ax=axes[1], fraction=0.046, label="probability")
    _overlay(axes[2], image, pmap, clean, window, stride, box)
    axes[2].set_title("where the confidence dropped")
    for ax in axes:
        ax.axis("off")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return path


def _confidence(ax, pmap: np.ndarray, window: int, stride: int, size: tuple[int, int]) -> None:
    """The study's map: the class probability with the window at each position, on an absolute 0-1
    scale (so maps of different images compare), placed over the window centres."""
    ax.imshow(pmap, cmap="viridis", vmin=0, vmax=1, extent=_heat_extent(pmap.shape, window, stride))
    ax.set_xlim(-0.5, size[1] - 0.5)
    ax.set_ylim(size[0] - 0.5, -0.5)


def occlusion_grid(images: list[np.ndarray], maps: list[np.ndarray], cleans: list[float], titles: list[str],
                   window: int, stride: int, path: Path, boxes: list | None = None, cols: int = 2) -> Path:
    """All analysed images, each as photograph | confidence map (absolute probability) | overlay."""
    n = len(images)
    cols = min(cols, max(n, 1))
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, 3 * cols, figsize=(4.6 * cols, 1.75 * rows + 0.7), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, (img, pmap, clean, title) in enumerate(zip(images, maps, cleans, titles)):
        photo, heat, over = axes[i // cols, 3 * (i % cols):3 * (i % cols) + 3]
        box = boxes[i] if boxes else None
        photo.imshow(img)
        _box(photo, box)
        photo.set_title(title, fontsize=6.5, loc="left")
        _confidence(heat, pmap, window, stride, img.shape[:2])
        heat.set_title(f"p {pmap.min():.2f}-{pmap.max():.2f}", fontsize=6.5)
        _overlay(over, img, pmap, clean, window, stride, box)
        over.set_title("drop", fontsize=6.5)
    fig.colorbar(plt.cm.ScalarMappable(norm=plt.Normalize(0, 1), cmap="viridis"), ax=axes, fraction=0.02,
                 pad=0.01, label="P(class) with the window there")
    fig.suptitle("Occlusion sensitivity: photograph, class probability with the window at each place, and where "
                 "it dropped (overlay scaled per image; box: object)", fontsize=9)
    save_figure(fig, path)
    plt.close(fig)
    return path


def accuracy_vs_cost(trials: list[dict], path: Path) -> Path:
    """Test accuracy against parameters and against forward FLOPs, one labelled point per trial."""
    done = [t for t in trials if t.get("test_acc") is not None]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, key, label in ((axes[0], "params", "parameters (millions)"), (axes[1], "flops", "forward MFLOPs per image")):
        scale = 1e6
        xs = [t[key] / scale for t in done]
        ys = [100 * t["test_acc"] for t in done]
        ax.scatter(xs, ys, c=[f"C{i % 10}" for i in range(len(done))], s=40, zorder=3)
        for x, y, t in zip(xs, ys, done):
            ax.annotate(t["trial"], (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
        ax.set(xlabel=label, ylabel="test accuracy (%)")
        ax.grid(alpha=0.3)
    axes[0].set_title("Accuracy against size")
    axes[1].set_title("Accuracy against compute")
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return path


def search_scatter(trials: list[dict], values: list[dict], path: Path) -> Path:
    """Validation accuracy against each searched field: one panel per field, one colour per
    experiment; filled: trained to the end, hollow: stopped by ASHA, star: the tested best."""
    fields = list(dict.fromkeys(k for v in values for k in v))
    cols = min(len(fields), 3) or 1
    rows = (len(fields) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    groups = list(dict.fromkeys(t["experiment"] for t in trials))
    for ax, field in zip(axes.flat, fields):
        xs = [v.get(field) for v in values]
        categorical = any(not isinstance(x, (int, float)) or isinstance(x, bool) for x in xs if x is not None)
        cats = list(dict.fromkeys(str(x) for x in xs)) if categorical else []
        for t, x in zip(trials, xs):
            if x is None or t.get("val_acc") is None:
                continue
            colour = f"C{groups.index(t['experiment']) % 10}"
            pos = cats.index(str(x)) if categorical else x
            marker = "*" if t.get("test_acc") is not None else "o"
            face = colour if t["status"] == "finished" else "none"
            ax.scatter(pos, 100 * t["val_acc"], s=140 if marker == "*" else 36, marker=marker,
                       facecolors=face, edgecolors=colour)
        numeric = [x for x in xs if isinstance(x, (int, float)) and not isinstance(x, bool)]
        if categorical:
            ax.set_xticks(range(len(cats)), cats, fontsize=8)
        elif numeric and min(numeric) > 0 and max(numeric) / min(numeric) > 20:
            ax.set_xscale("log")  # a loguniform range: its draws spread evenly on a log axis
        ax.set(xlabel=field, ylabel="best validation accuracy (%)")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(fields):]:
        ax.axis("off")
    handles = [plt.Line2D([], [], marker="o", ls="", color=f"C{i % 10}", label=g) for i, g in enumerate(groups)]
    handles += [plt.Line2D([], [], marker="o", ls="", mfc="none", mec="gray", label="stopped by ASHA"),
                plt.Line2D([], [], marker="*", ls="", color="gray", ms=11, label="best (tested)")]
    fig.legend(handles=handles, loc="upper center", ncol=len(handles), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    save_figure(fig, path)
    plt.close(fig)
    return path


def methods_grid(images: list[np.ndarray], maps: list[dict[str, np.ndarray]], titles: list[str],
                 labels: dict[str, str], window: int, stride: int, path: Path, boxes: list | None = None) -> Path:
    """One row per image: photograph | each method's map, every map with its own colour bar.

    Occlusion shows the class probability with the window there (0-1, low: the model needed that
    place); the others their attribution (high: evidence for the class)."""
    methods = list(maps[0])
    fig, axes = plt.subplots(len(images), 1 + len(methods), figsize=(2.3 * (1 + len(methods)), 2.0 * len(images)),
                             squeeze=False)
    for i, (img, row, title) in enumerate(zip(images, maps, titles)):
        axes[i, 0].imshow(img)
        _box(axes[i, 0], boxes[i] if boxes else None)
        axes[i, 0].set_title(title, fontsize=6.5, loc="left")
        for j, m in enumerate(methods, start=1):
            ax = axes[i, j]
            if m == "occlusion":  # its own range: on 0-1 a 100-class model's maps look flat
                ax.imshow(row[m], cmap="viridis_r", extent=_heat_extent(row[m].shape, window, stride))
                ax.set_xlim(-0.5, img.shape[1] - 0.5)
                ax.set_ylim(img.shape[0] - 0.5, -0.5)
            else:
                ax.imshow(row[m], cmap="inferno")
            cb = fig.colorbar(ax.images[0], ax=ax, fraction=0.046, pad=0.02)
            cb.ax.tick_params(labelsize=5)
            if i == 0:
                ax.set_title(labels[m] + (" (P(class), reversed)" if m == "occlusion" else ""), fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return path


def faithfulness_curves(curves: dict[str, tuple[np.ndarray, np.ndarray]], labels: dict[str, str], path: Path) -> Path:
    """Mean deletion and insertion curves per method, with the random and centre-first rankings."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    style = {"random": dict(color="gray", ls="--"), "centre": dict(color="black", ls=":")}
    for k, (ax, name) in enumerate(zip(axes, ("deletion", "insertion"))):
        for m, pair in curves.items():
            c = pair[k]
            ax.plot(np.linspace(0, 1, len(c)), c, label=labels.get(m, m), lw=1.6, **style.get(m, {}))
        ax.set_xlabel("share of pixels " + ("removed (most important first)" if k == 0 else "added onto the blur"))
        ax.set_ylabel("P(true class)")
        ax.set_title(f"{name} (mean over images; {'lower' if k == 0 else 'higher'} area: more faithful)", fontsize=9)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return path
