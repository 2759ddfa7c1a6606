"""Synthetic scenes for the clustering and prediction benchmarks: label layouts and embeddings.

Embeddings look like a trained network's output under the discriminative loss (delta_v = 0.5,
delta_d = 1.5): instance means at least 3.0 apart and packed as closely as that allows, most
pixels within 0.5 of their mean, a few stragglers (5 %) up to 1.3 away and leaning towards a
neighbouring instance, as boundary pixels do. Layouts:

* nuclei: small round instances, 10-15 % foreground; 25-60 of them at 256x256, and as many per
  area at other sizes unless a count is asked for;
* leaves: 15 large elongated instances around the centre, overlapping as in a rosette (slivers
  under 50 pixels per 256x256 dropped, so 11-15 remain).
"""

import numpy as np

DIM = 16
DELTA_V = 0.5
MIN_CENTRE_DIST = 3.0
MIN_LEAF_PIXELS = 50
SCENARIOS = ("nuclei", "leaves")


def centres(rng: np.random.Generator, k: int, dim: int = DIM) -> np.ndarray:
  """K means at least MIN_CENTRE_DIST apart, packed so that many pairs are close to it."""
  # The loss regulariser keeps the means near the origin: sample a small ball, reject near misses.
  out = np.zeros((0, dim))
  scale = 0.6
  while len(out) < k:
    c = rng.normal(0.0, scale, dim)
    if len(out) == 0 or np.min(np.linalg.norm(out - c, axis=-1)) >= MIN_CENTRE_DIST:
      out = np.concatenate([out, c[None]])
    else:
      scale *= 1.002
  return out.astype(np.float32)


def nuclei_layout(
    rng: np.random.Generator, shape: tuple[int, int], count: int | None = None
) -> np.ndarray:
  """(H, W) int32 labels of non-overlapping ellipses; `count` of them, or 25-60 per 256x256."""
  height, width = shape
  area = height * width
  target_k = count or int(rng.integers(25, 61) * area / 256**2)
  target_fg = rng.uniform(0.10, 0.15)
  labels = np.zeros(shape, np.int32)
  k = 0
  radius = np.sqrt(target_fg * area / (np.pi * target_k))
  for _ in range(20 * target_k):
    if k == target_k:
      break
    r = radius * rng.uniform(0.6, 1.4)
    e = rng.uniform(0.7, 1.0)
    cy, cx = rng.uniform(r, height - r), rng.uniform(r, width - r)
    # Only the ellipse's bounding box is drawn: whole-image masks made 500 nuclei slow to place.
    y0, y1 = int(max(0, cy - r - 1)), int(min(height, cy + r + 2))
    x0, x1 = int(max(0, cx - r - 1)), int(min(width, cx + r + 2))
    yy, xx = np.mgrid[y0:y1, x0:x1]
    disc = ((yy - cy) / r) ** 2 + ((xx - cx) / (r * e)) ** 2 <= 1.0
    window = labels[y0:y1, x0:x1]
    if not disc.any() or np.any(window[disc]):
      continue
    k += 1
    window[disc] = k
  return labels


def leaves_layout(rng: np.random.Generator, shape: tuple[int, int], k: int = 15) -> np.ndarray:
  """(H, W) int32 labels of a rosette of `k` leaves, numbered 1..K after dropping slivers."""
  height, width = shape
  scale = min(height, width) / 256
  yy, xx = np.mgrid[:height, :width].astype(np.float64)
  yy -= height / 2
  xx -= width / 2
  labels = np.zeros(shape, np.int32)
  angles = np.sort(rng.uniform(0, 2 * np.pi, k))
  for i, a in enumerate(angles, start=1):
    length = rng.uniform(40, 110) * scale
    leaf_width = length * rng.uniform(0.25, 0.45)
    cy, cx = 0.55 * length * np.sin(a), 0.55 * length * np.cos(a)
    u = (yy - cy) * np.sin(a) + (xx - cx) * np.cos(a)
    v = -(yy - cy) * np.cos(a) + (xx - cx) * np.sin(a)
    leaf = (u / (length / 2)) ** 2 + (v / (leaf_width / 2)) ** 2 <= 1.0
    labels[leaf] = i  # younger leaves cover older ones, as in a rosette.
  # Slivers of covered leaves are not instances anyone annotates; renumber the rest 1..K.
  sizes = np.bincount(labels.ravel(), minlength=k + 1)
  labels[sizes[labels] < MIN_LEAF_PIXELS * scale**2] = 0
  _, inverse = np.unique(labels, return_inverse=True)
  return inverse.reshape(labels.shape).astype(np.int32)


def embeddings(
    rng: np.random.Generator,
    labels: np.ndarray,
    *,
    straggler_frac: float = 0.05,
    straggler_max: float = 1.3,
    dim: int = DIM,
) -> np.ndarray:
  """(H, W, dim) float32 trained-like embeddings of `labels`; the background is anything."""
  k = int(labels.max())
  means = centres(rng, max(k, 1), dim)
  emb = rng.normal(0.0, 1.0, labels.shape + (dim,)).astype(np.float32)
  fg = labels > 0
  n = int(fg.sum())
  inst = labels[fg] - 1
  direction = rng.normal(size=(n, dim))
  direction /= np.linalg.norm(direction, axis=-1, keepdims=True)
  radius = DELTA_V * rng.uniform(0.2, 1.0, n)
  x = means[inst] + radius[:, None] * direction
  if k > 1:
    straggler = rng.random(n) < straggler_frac
    other = (inst + rng.integers(1, k, n)) % k
    towards = means[other] - means[inst]
    towards /= np.linalg.norm(towards, axis=-1, keepdims=True)
    lean = 0.5 * towards + 0.5 * direction
    lean /= np.linalg.norm(lean, axis=-1, keepdims=True)
    far = rng.uniform(DELTA_V, straggler_max, n)
    x = np.where(straggler[:, None], means[inst] + far[:, None] * lean, x)
  emb[fg] = x
  return emb


def make_scene(
    rng: np.random.Generator,
    scenario: str,
    shape: tuple[int, int] = (256, 256),
    *,
    count: int | None = None,
    straggler_frac: float = 0.05,
    straggler_max: float = 1.3,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(embeddings (H, W, D) float32, foreground (H, W) bool, true labels (H, W) int32)."""
  if scenario == "nuclei":
    labels = nuclei_layout(rng, shape, count)
  elif scenario == "leaves":
    labels = leaves_layout(rng, shape)
  else:
    raise ValueError(f"scenario={scenario!r}; choose one of {SCENARIOS}")
  emb = embeddings(rng, labels, straggler_frac=straggler_frac, straggler_max=straggler_max)
  return emb, labels > 0, labels
