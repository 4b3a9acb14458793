"""Model introspection plots: DCN-v2 feature interactions, MMoE gates.

Feature-interaction importance (Wang et al., DCN V2, Sec. 6): the learned
cross weight matrix W [D, D] (for low rank: U @ V) of the first cross layer
is split into blocks by feature (`FeatureEncoder.slices`); block (i, j)
holds the weights with which feature j's columns enter feature i's
columns, and its Frobenius norm ||W_ij||_F is the strength of the i x j
interaction. The result is an [F, F] matrix, drawn as a labeled heatmap.
The paper's features all have one embedding width; ours do not (4 to 128
columns), and a Frobenius norm grows with the block's size, so the plot
shows the per-weight (RMS) norm ||W_ij||_F / sqrt(|i| |j|); both are kept
in the metrics.

Gate utilization (MMoE): the mean softmax gate weight per expert for each
task over the test ratings, [tasks, experts], drawn as grouped bars.

Both PNGs are written into the run directory and logged to TensorBoard as
images.
"""

from __future__ import annotations

import os
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

import tfrs_pipeline  # noqa: F401  (TF_USE_LEGACY_KERAS before TF)
import tensorflow as tf

import matplotlib

matplotlib.use("Agg")
from matplotlib import pyplot as plt  # noqa: E402

HEATMAP_FILE = "interactions.png"
MODEL_NAMES = {"dcn": "DCN-v2", "mmoe": "MMoE"}  # plot titles
GATES_FILE = "gates.png"


def interaction_matrix(weight: np.ndarray, slices: Mapping[str, slice],
                       per_weight: bool = False
                       ) -> Tuple[List[str], np.ndarray]:
  """Block Frobenius norms of a cross weight matrix.

  Args:
    weight: [D, D] cross weight matrix W (rows: output columns).
    slices: {feature: slice of its columns}, in feature order.
    per_weight: divide each block's norm by sqrt(its number of weights)
      (RMS), so features of different widths compare.

  Returns:
    (feature names [F], matrix [F, F] with entry (i, j) = ||W[i, j]||_F,
    or ||W[i, j]||_F / sqrt(|i| |j|) when `per_weight`).
  """
  names = list(slices)
  out = np.zeros((len(names), len(names)), np.float64)
  for i, a in enumerate(names):
    for j, b in enumerate(names):
      block = weight[slices[a], slices[b]]
      out[i, j] = np.linalg.norm(block)
      if per_weight:
        out[i, j] /= np.sqrt(max(block.size, 1))
  return names, out


def model_interactions(model, layer: int = 0, per_weight: bool = False
                       ) -> Optional[Tuple[List[str], np.ndarray]]:
  """`interaction_matrix` of a DCN / MMoE model's cross layer `layer`;
  None when the model has no cross layer."""
  cross = getattr(model, "cross_network", None)
  weights = cross.weight_matrices() if cross is not None else []
  if not weights:
    return None
  return interaction_matrix(weights[layer], model.inputs_layer.slices,
                            per_weight)


def plot_heatmap(names: Sequence[str], matrix: np.ndarray, path: str,
                 title: str = "Feature interactions "
                 "(||W_ij||_F / sqrt(|W_ij|), first cross layer)") -> str:
  """Labeled heatmap PNG of an [F, F] interaction matrix."""
  n = len(names)
  fig, ax = plt.subplots(figsize=(max(6.0, 0.55 * n + 2), max(5.0, 0.5 * n
                                                                  + 1.5)))
  im = ax.imshow(matrix, cmap="viridis")
  ax.set_xticks(range(n))
  ax.set_yticks(range(n))
  ax.set_xticklabels(names, rotation=60, ha="right", fontsize=8)
  ax.set_yticklabels(names, fontsize=8)
  ax.set_xlabel("input feature j")
  ax.set_ylabel("output feature i")
  ax.set_title(title, fontsize=10)
  fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


def plot_gates(utilization: Mapping[str, Sequence[float]], path: str) -> str:
  """Grouped bar chart PNG: mean gate weight per expert, one bar per task."""
  tasks = list(utilization)
  k = len(next(iter(utilization.values())))
  fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * k + 2), 4.0))
  width = 0.8 / max(len(tasks), 1)
  for t, task in enumerate(tasks):
    ax.bar(np.arange(k) + (t - (len(tasks) - 1) / 2) * width,
           utilization[task], width, label=task)
  ax.set_xticks(range(k))
  ax.set_xticklabels([f"expert {i}" for i in range(k)])
  ax.set_ylabel("mean gate weight")
  ax.set_title("MMoE gate utilization per task (test ratings)")
  ax.axhline(1.0 / k, color="gray", lw=0.8, ls="--")
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


def log_image(png_path: str, logdir: str, name: str, step: int = 0) -> None:
  """Logs a PNG file to TensorBoard (images tab)."""
  with open(png_path, "rb") as f:
    image = tf.image.decode_png(f.read(), channels=4)
  with tf.summary.create_file_writer(os.path.join(logdir, "images")
                                     ).as_default():
    tf.summary.image(name, image[tf.newaxis], step=step)


def write_all(model, config, prepared, run, metrics: Dict, log=print
              ) -> Dict[str, str]:
  """Heatmap (if the model has cross layers) and gate plot (MMoE) into the
  run directory and TensorBoard; records the matrices in `metrics`."""
  del prepared
  written = {}
  found = model_interactions(model)
  if found is not None:
    names, matrix = found
    widths = np.array([s.stop - s.start
                       for s in model.inputs_layer.slices.values()])
    rms = matrix / np.sqrt(np.outer(widths, widths))  # per_weight
    path = plot_heatmap(
        names, rms, run.file(HEATMAP_FILE),
        title=f"{MODEL_NAMES.get(config.model, config.model)} feature "
        "interactions (||W_ij||_F / sqrt(|W_ij|), first cross layer)")
    log_image(path, run.logs, "feature_interactions")
    metrics["interactions"] = {"features": names,
                               "matrix": matrix.round(5).tolist(),
                               "matrix_per_weight": rms.round(6).tolist()}
    written["interactions"] = path
    log(f"[ranking] wrote {path}")
  if "gate_utilization" in metrics:
    path = plot_gates(metrics["gate_utilization"], run.file(GATES_FILE))
    log_image(path, run.logs, "gate_utilization")
    written["gates"] = path
    log(f"[ranking] wrote {path}")
  return written
