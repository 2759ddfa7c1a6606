"""The nuclei model shipped with the package segments nuclei with no training (`--model=nuclei`)."""

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import helpers
from instseg_jax import export
from instseg_jax.metrics import matching

SAMPLE = helpers.DSB_SAMPLE
# The shipped bundle scores 0.642 on the sample (instseg_jax/pretrained/README.md); the margin
# is for other platforms' floating point.
MIN_ACCURACY = 0.55


def test_the_readme_command_segments_the_sample_without_training(tmp_path):
  try:
    export.resolve_bundle("nuclei")
  except FileNotFoundError:
    pytest.fail("the package ships no nuclei bundle (instseg_jax/pretrained/nuclei)")
  out = tmp_path / "out"
  subprocess.run(
      [
          sys.executable,
          "-m",
          "instseg_jax.main",
          "--mode=predict",
          "--model=nuclei",
          f"--input={SAMPLE}/images",
          f"--output={out}",
      ],
      check=True,
      cwd=helpers.REPO,
      capture_output=True,
  )
  matches = matching.MatchingAccumulator(thresholds=(0.5,))
  for name in sorted(os.listdir(os.path.join(SAMPLE, "labels"))):
    truth = np.asarray(Image.open(os.path.join(SAMPLE, "labels", name))).astype(np.int32)
    predicted = np.asarray(Image.open(out / name.replace(".png", "_labels.png"))).astype(np.int32)
    assert predicted.shape == truth.shape
    matches.add(truth, predicted)
  assert matches.summary()["accuracy@0.5"] >= MIN_ACCURACY
