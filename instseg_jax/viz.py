"""Pictures: label maps in colour, input | prediction | ground truth panels, embedding views."""

import os

import numpy as np
from PIL import Image
from PIL import ImageDraw


def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
  i = int(h * 6) % 6
  f = h * 6 - int(h * 6)
  p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
  rgb = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
  return (np.asarray(rgb) * 255).astype(np.uint8)


# Hues a golden-ratio step apart, in two brightnesses: consecutive entries differ most.
PALETTE = np.stack(
    [
        _hsv_to_rgb((i * 0.618034) % 1.0, 0.85 if i % 2 else 0.6, 1.0 if i % 4 < 2 else 0.75)
        for i in range(24)
    ]
)


def neighbour_pairs(labels: np.ndarray, *, reach: int = 2) -> np.ndarray:
  """(P, 2) pairs of instance ids (a < b) that come within `reach` pixels of each other.

  Instances a pixel or two apart look like neighbours too, so they count as such.
  """
  labels = np.maximum(np.asarray(labels), 0).astype(np.int64)
  height, width = labels.shape
  base = int(labels.max(initial=0)) + 1
  found = [np.zeros(0, np.int64)]
  for dy in range(0, reach + 1):
    for dx in range(-reach, reach + 1):
      if dy == 0 and dx <= 0:
        continue  # each offset once: (dy, dx) and (-dy, -dx) find the same pairs
      a = labels[: height - dy, max(0, -dx) : width - max(0, dx)]
      b = labels[dy:, max(0, dx) : width - max(0, -dx)]
      touching = (a > 0) & (b > 0) & (a != b)
      low, high = np.minimum(a[touching], b[touching]), np.maximum(a[touching], b[touching])
      found.append(np.unique(low * base + high))  # one number per pair: fast to deduplicate
  keys = np.unique(np.concatenate(found))
  return np.stack([keys // base, keys % base], axis=1)


def instance_colors(labels: np.ndarray) -> np.ndarray:
  """(max id + 1, 3) uint8 colours of a label map; 0 (background) and absent ids are black.

  Ids are coloured in turn, each with the palette colour farthest from the colours of its
  neighbours (`neighbour_pairs`), ties going to the least used colour; so instances that
  touch look different, which random colours do not promise.
  """
  labels = np.maximum(np.asarray(labels), 0)
  colors = np.zeros((int(labels.max(initial=0)) + 1, 3), np.uint8)
  neighbours: dict[int, list[int]] = {}
  for a, b in neighbour_pairs(labels):
    neighbours.setdefault(int(a), []).append(int(b))
    neighbours.setdefault(int(b), []).append(int(a))
  palette = PALETTE.astype(np.float64)
  uses = np.zeros(len(palette))
  colored: set[int] = set()
  for label in np.unique(labels[labels > 0]):
    taken = [colors[n] for n in neighbours.get(int(label), []) if n in colored]
    if taken:
      distance = np.linalg.norm(palette[:, None] - np.asarray(taken, np.float64)[None], axis=2)
      farthest = distance.min(axis=1)
    else:
      farthest = np.zeros(len(palette))
    # Farthest from the neighbours first; among equals, the least used, then palette order.
    choice = np.lexsort((np.arange(len(palette)), uses, -np.round(farthest)))[0]
    colors[label] = PALETTE[choice]
    uses[choice] += 1
    colored.add(int(label))
  return colors


IGNORED_GREY = np.array([128, 128, 128], np.uint8)


def colorize(labels: np.ndarray) -> np.ndarray:
  """(H,W) int labels -> (H,W,3) uint8 colours; negative (ignored) labels are grey."""
  labels = np.asarray(labels)
  colors = instance_colors(labels)[np.maximum(labels, 0)]
  colors[labels < 0] = IGNORED_GREY
  return colors


def to_uint8(image: np.ndarray) -> np.ndarray:
  image = np.asarray(image)
  if image.dtype == np.uint8:
    return image
  return (np.clip(image, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)


def overlay(image: np.ndarray, labels: np.ndarray, *, alpha: float = 0.5) -> np.ndarray:
  """Instances blended over the image (background left as is)."""
  image = to_uint8(image).astype(np.float32)
  colors = colorize(labels).astype(np.float32)
  mixed = np.where((np.asarray(labels) > 0)[..., None], (1 - alpha) * image + alpha * colors, image)
  return mixed.astype(np.uint8)


def panel(
    image: np.ndarray,
    prediction: np.ndarray,
    ground_truth: np.ndarray | None = None,
    *,
    gap: int = 4,
) -> np.ndarray:
  """input | predicted instances | ground truth, side by side with white gaps."""
  parts = [to_uint8(image), colorize(prediction)]
  if ground_truth is not None:
    parts.append(colorize(ground_truth))
  return side_by_side(parts, gap=gap)


def save_png(path: str, array: np.ndarray) -> None:
  """Writes atomically: a reader never sees a half-written file."""
  tmp = f"{path}.tmp-{os.getpid()}"
  Image.fromarray(array).save(tmp, format="PNG")
  os.replace(tmp, path)


def stack_rows(rows: list[np.ndarray], *, gap: int = 4) -> np.ndarray:
  width = max(r.shape[1] for r in rows)
  padded = [
      np.pad(r, ((0, gap), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows
  ]
  return np.concatenate(padded, axis=0)[:-gap]


def pca(points: np.ndarray, components: int) -> tuple[np.ndarray, np.ndarray]:
  """(mean (D,), basis (components, D)) of the principal axes of points (N, D).

  Each axis points where its largest coordinate is positive, so the same embedding gives the
  same picture at every step (an axis's sign is otherwise arbitrary). Axes beyond the data's
  rank are zero.
  """
  points = np.asarray(points, np.float64)
  mean = points.mean(axis=0) if len(points) else np.zeros(points.shape[1])
  basis = np.zeros((components, points.shape[1]))
  if len(points) > 1:
    _, _, vt = np.linalg.svd(points - mean, full_matrices=False)
    kept = vt[:components]
    signs = np.sign(kept[np.arange(len(kept)), np.argmax(np.abs(kept), axis=1)])
    basis[: len(kept)] = kept * np.where(signs == 0, 1.0, signs)[:, None]
  return mean, basis


def _stretch(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
  """values scaled so that the 1st..99th percentiles of `reference` span [0, 1], clipped."""
  if not len(reference):
    return np.zeros_like(values)
  low, high = np.percentile(reference, [1, 99], axis=0)
  return np.clip((values - low) / np.maximum(high - low, 1e-6), 0.0, 1.0)


# Share of brightness background pixels keep in `embedding_rgb`: the loss leaves their
# embeddings free, so their colours are noise that would hide the instances.
BACKGROUND_DIM = 0.25


def embedding_rgb(embedding: np.ndarray, foreground: np.ndarray | None = None) -> np.ndarray:
  """(H, W, D) embedding -> (H, W, 3) uint8: its three principal axes as red, green, blue.

  The axes are those of the foreground pixels (all pixels when `foreground` is None or
  nearly empty), where the discriminative loss puts instances apart; background is dimmed.
  """
  embedding = np.asarray(embedding, np.float64)
  pixels = embedding.reshape(-1, embedding.shape[-1])
  mask = (
      np.ones(pixels.shape[0], bool)
      if foreground is None
      else np.asarray(foreground, bool).reshape(-1)
  )
  if mask.sum() < 3:
    mask = np.ones_like(mask)
  mean, basis = pca(pixels[mask], 3)
  projected = (pixels - mean) @ basis.T
  rgb = _stretch(projected, projected[mask])
  rgb[~mask] *= BACKGROUND_DIM
  return to_uint8(rgb.reshape(*embedding.shape[:2], 3))


def embedding_scatter(
    embedding: np.ndarray,
    labels: np.ndarray,
    *,
    size: int = 192,
    max_points: int = 4000,
    dot: int = 3,
    seed: int = 0,
) -> np.ndarray:
  """(size, size, 3) uint8: the instance pixels' embeddings on their two principal axes.

  Each pixel of `labels` (H, W) > 0 is a dot in its instance's colour (as `colorize` paints
  the label map), on white; both axes share one scale, so distances are as in the
  embedding. At most `max_points` pixels, drawn in a random order so no instance always
  lies on top.
  """
  embedding = np.asarray(embedding, np.float64)
  labels = np.asarray(labels)
  canvas = np.full((size, size, 3), 255, np.uint8)
  inside = labels > 0
  if not inside.any():
    return canvas
  points, ids = embedding[inside], labels[inside]
  order = np.random.default_rng(seed).permutation(len(points))[:max_points]
  points, ids = points[order], ids[order]
  mean, basis = pca(points, 2)
  xy = (points - mean) @ basis.T
  low = xy.min(axis=0)
  span = max(float((xy.max(axis=0) - low).max()), 1e-6)
  margin = dot
  pixels = margin + np.round((xy - low) / span * (size - 2 * margin - 1)).astype(int)
  colors = instance_colors(labels)[ids]
  half = dot // 2
  for dy in range(-half, dot - half):
    for dx in range(-half, dot - half):
      # Rows grow downwards; the second axis grows upwards as on a plot.
      rows = np.clip(size - 1 - pixels[:, 1] + dy, 0, size - 1)
      cols = np.clip(pixels[:, 0] + dx, 0, size - 1)
      canvas[rows, cols] = colors
  return canvas


def side_by_side(parts: list[np.ndarray], *, gap: int = 4) -> np.ndarray:
  """Pictures in a row with white gaps, top-aligned, shorter ones padded white below."""
  height = max(p.shape[0] for p in parts)
  row = []
  for i, part in enumerate(parts):
    if i:
      row.append(np.full((height, gap, 3), 255, np.uint8))
    row.append(np.pad(part, ((0, height - part.shape[0]), (0, 0), (0, 0)), constant_values=255))
  return np.concatenate(row, axis=1)


def resize_nearest(picture: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
  """(h, w, 3) uint8 -> (H, W, 3), each pixel a copy of its nearest source pixel."""
  if picture.shape[:2] == tuple(shape):
    return picture
  return np.asarray(Image.fromarray(picture).resize((shape[1], shape[0]), Image.Resampling.NEAREST))


def caption(picture: np.ndarray, text: str, *, height: int = 14) -> np.ndarray:
  """The picture under a white strip with `text` in black (Pillow's built-in font)."""
  strip = Image.new("RGB", (picture.shape[1], height), (255, 255, 255))
  ImageDraw.Draw(strip).text((2, 1), text, fill=(0, 0, 0))
  return np.concatenate([np.asarray(strip), picture], axis=0)
