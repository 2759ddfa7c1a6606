"""Loss of the instance-count head."""

import jax
import jax.numpy as jnp


def counting_loss(
    predicted_fraction: jax.Array, num_instances: jax.Array, *, max_count: int
) -> jax.Array:
  """Mean squared error between the predicted and the true count, both as a fraction of max_count.

  Args:
    predicted_fraction: (B,) predicted count / max_count, already squashed into [0, 1].
    num_instances: (B,) int true instance counts; counts above max_count are clipped to 1.
    max_count: the count that maps to 1.

  Returns:
    Scalar float32 loss.
  """
  pred = predicted_fraction.astype(jnp.promote_types(predicted_fraction.dtype, jnp.float32))
  target = jnp.clip(num_instances.astype(pred.dtype) / max_count, 0.0, 1.0)
  return jnp.mean(jnp.square(pred.reshape(target.shape) - target))
