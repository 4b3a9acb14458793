"""The optimizer both stages train with: Adam, constant or cosine-decayed.

```python
optimizer = optim.adam(3e-3, "cosine", total_steps=epochs * steps)
```
"""

from __future__ import annotations

import math

import tfrs_pipeline  # noqa: F401  (TF_USE_LEGACY_KERAS before TF)
import tensorflow as tf

LR_SCHEDULES = ("constant", "cosine")


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
  """Batches in one pass over `num_examples` (the last one partial)."""
  return max(1, math.ceil(num_examples / batch_size))


def adam(learning_rate: float, schedule: str = "constant",
         total_steps: int = 0) -> tf.keras.optimizers.Optimizer:
  """Adam at `learning_rate`, or decayed along a half cosine to 0 over
  `total_steps` (`schedule="cosine"`; Loshchilov & Hutter, SGDR, without
  restarts). The schedule reads the optimizer's step counter, which
  checkpoints save, so a resumed run continues where it stopped."""
  if schedule not in LR_SCHEDULES:
    raise ValueError(f"learning-rate schedule must be one of "
                     f"{LR_SCHEDULES}, not {schedule!r}")
  if schedule == "cosine":
    if total_steps <= 0:
      raise ValueError("a cosine schedule needs total_steps > 0")
    learning_rate = tf.keras.optimizers.schedules.CosineDecay(
        learning_rate, decay_steps=int(total_steps))
  return tf.keras.optimizers.Adam(learning_rate)
