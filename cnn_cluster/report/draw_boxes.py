"""The report's box-drawing block: drag one box per analysed photograph, download them as a CSV in
the ``data.boxes`` format (``filename,x0,y0,x1,y1`` in the original image's pixels), then
``cnnc occlude RUN --boxes boxes.csv`` gives the object-or-context verdict from the maps already
computed. Inline script, no server, no network: the page works from a file, offline.
"""

from __future__ import annotations

import base64
import html
import io

import numpy as np

from .page import Html

SCALE = 3  # an 84-pixel photograph drawn 252 pixels wide: big enough to box by hand

_SCRIPT = """
(function () {
  var root = document.getElementById('cnnc-boxes'), boxes = {};
  var link = document.getElementById('cnnc-boxes-csv'), text = document.getElementById('cnnc-boxes-text');
  function csv() {
    var lines = ['filename,x0,y0,x1,y1'];
    root.querySelectorAll('canvas').forEach(function (c) {
      var b = boxes[c.dataset.file];
      if (b) lines.push(c.dataset.file + ',' + b.join(','));
    });
    return lines.join('\\n') + '\\n';
  }
  function update() {
    var body = csv();
    text.value = body;
    link.href = 'data:text/csv;charset=utf-8,' + encodeURIComponent(body);
    document.getElementById('cnnc-boxes-count').textContent =
      Object.keys(boxes).length + ' of ' + root.querySelectorAll('canvas').length + ' boxed';
  }
  root.querySelectorAll('canvas').forEach(function (c) {
    var ctx = c.getContext('2d'), img = new Image(), start = null, drawn = null;
    ctx.imageSmoothingEnabled = false;
    function paint(b) {
      ctx.drawImage(img, 0, 0, c.width, c.height);
      if (b) { ctx.strokeStyle = '#00e5ff'; ctx.lineWidth = 2; ctx.strokeRect(b[0], b[1], b[2] - b[0], b[3] - b[1]); }
    }
    function at(e) {
      var r = c.getBoundingClientRect();  // the drawing area: inside the canvas's border
      return [Math.max(0, Math.min(c.width, (e.clientX - r.left - c.clientLeft) * c.width / c.clientWidth)),
              Math.max(0, Math.min(c.height, (e.clientY - r.top - c.clientTop) * c.height / c.clientHeight))];
    }
    function rect(a, b) { return [Math.min(a[0], b[0]), Math.min(a[1], b[1]), Math.max(a[0], b[0]), Math.max(a[1], b[1])]; }
    img.onload = function () { paint(null); };
    img.src = c.dataset.src;
    c.addEventListener('pointerdown', function (e) { start = at(e); c.setPointerCapture(e.pointerId); e.preventDefault(); });
    c.addEventListener('pointermove', function (e) { if (start) paint(rect(start, at(e))); });
    c.addEventListener('pointerup', function (e) {
      if (!start) return;
      var b = rect(start, at(e)); start = null;
      if (b[2] - b[0] < 3 || b[3] - b[1] < 3) { paint(drawn); return; }  // a click, not a box
      drawn = b; paint(b);
      // canvas pixels -> the analysed image's pixels -> the original photograph's pixels
      var sx = c.dataset.ow / c.width, sy = c.dataset.oh / c.height;
      boxes[c.dataset.file] = [Math.floor(b[0] * sx), Math.floor(b[1] * sy), Math.ceil(b[2] * sx), Math.ceil(b[3] * sy)];
      update();
    });
  });
  update();
})();
"""

_CSS = ("#cnnc-boxes .grid{display:flex;flex-wrap:wrap;gap:.6rem}#cnnc-boxes figure{margin:0;font-size:.75rem}"
        "#cnnc-boxes canvas{cursor:crosshair;touch-action:none;border:1px solid #d5dae3;max-width:100%}"
        "#cnnc-boxes textarea{width:100%;height:5rem;font-family:monospace;font-size:.75rem}")


def _png(image: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(image, np.uint8)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def block(images: list[tuple[str, np.ndarray, str, tuple[int, int]]], run: str) -> Html:
    """``images``: (file name as the dataset names it, pixels (H, W, 3), caption, original (width, height))."""
    figs = "".join(
        f"<figure><canvas width='{img.shape[1] * SCALE}' height='{img.shape[0] * SCALE}' "
        f"data-file='{html.escape(name)}' data-ow='{size[0]}' data-oh='{size[1]}' data-src='{_png(img)}'></canvas>"
        f"<figcaption>{html.escape(caption)}</figcaption></figure>" for name, img, caption, size in images)
    cmd = f"cnnc occlude {run} --boxes boxes.csv"
    page = (f"<div id='cnnc-boxes'><style>{_CSS}</style><p><strong>Draw the objects:</strong> drag one box around "
            f"the object on each photograph, then <a id='cnnc-boxes-csv' download='boxes.csv' href='#'>download "
            f"boxes.csv</a> (<span id='cnnc-boxes-count'></span>) and run <code>{html.escape(cmd)}</code>: the "
            f"verdict per method comes from the maps already computed.</p><div class='grid'>{figs}</div>"
            f"<textarea id='cnnc-boxes-text' readonly aria-label='boxes.csv'></textarea>"
            f"<script>{_SCRIPT}</script></div>")
    return Html(page, f"Object boxes: open index.html to draw them, then `{cmd}`.")
