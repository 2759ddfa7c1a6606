"""Pictures: label maps in colour, input | prediction | ground truth panels."""

import os

import numpy as np
from PIL import Image


def label_colors(num_labels: int, *, seed: int = 0) -> np.ndarray:
  """(num_labels+1, 3) uint8 colours; label 0 (background) is black."""
  rng = np.random.default_rng(seed)
  hues = rng.permutation(max(num_labels, 1)) / max(num_labels, 1)
  colors = np.zeros((num_labels + 1, 3), np.uint8)
  for i, hue in enumerate(hues[:num_labels], start=1):
    colors[i] = _hsv_to_rgb(hue, 0.75, 1.0)
  return colors


def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
  i = int(h * 6) % 6
  f = h * 6 - int(h * 6)
  p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
  rgb = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
  return (np.asarray(rgb) * 255).astype(np.uint8)


IGNORED_GREY = np.array([128, 128, 128], np.uint8)


def colorize(labels: np.ndarray) -> np.ndarray:
  """(H,W) int labels -> (H,W,3) uint8 colours; negative (ignored) labels are grey."""
  labels = np.asarray(labels)
  colors = label_colors(int(labels.max(initial=0)))[np.maximum(labels, 0)]
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
  mixed = np.where((np.asarray(labels) > 0)[..., None],
                   (1 - alpha) * image + alpha * colors, image)
  return mixed.astype(np.uint8)


def panel(image: np.ndarray, prediction: np.ndarray,
          ground_truth: np.ndarray | None = None, *, gap: int = 4) -> np.ndarray:
  """input | predicted instances | ground truth, side by side with white gaps."""
  parts = [to_uint8(image), colorize(prediction)]
  if ground_truth is not None:
    parts.append(colorize(ground_truth))
  height = parts[0].shape[0]
  spacer = np.full((height, gap, 3), 255, np.uint8)
  row = [parts[0]]
  for part in parts[1:]:
    row += [spacer, part]
  return np.concatenate(row, axis=1)


def save_png(path: str, array: np.ndarray) -> None:
  """Writes atomically: a reader never sees a half-written file."""
  tmp = f"{path}.tmp-{os.getpid()}"
  Image.fromarray(array).save(tmp, format="PNG")
  os.replace(tmp, path)


def stack_rows(rows: list[np.ndarray], *, gap: int = 4) -> np.ndarray:
  width = max(r.shape[1] for r in rows)
  padded = [np.pad(r, ((0, gap), (0, width - r.shape[1]), (0, 0)), constant_values=255)
            for r in rows]
  return np.concatenate(padded, axis=0)[:-gap]
