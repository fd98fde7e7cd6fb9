"""L-BFGS for smooth, strongly convex objectives of a float64 vector.

Written out in NumPy (about 50 lines; Nocedal & Wright, Numerical
Optimization, algorithms 7.4 and 7.5) rather than taken from SciPy, which
would be a dependency for this one function. The standard head recipe
(standard.py) minimizes cross entropy + L2 with it.
"""

import numpy as np

# Pairs of the last steps kept: the usual 10. A fit has converged when a step
# lowers the objective by less than this, relative to the objective (at least
# 1). The head's products are in float32, whose rounding (about 1e-7 of a sum)
# makes smaller decreases noise.
HISTORY = 10
TOLERANCE = 1e-7


def minimize(function, theta, *, max_steps, report):
  """Minimizes function from theta.

  A backtracking (Armijo) line search from the full step suffices: for a
  strongly convex objective every step's curvature pair is usable.

  Args:
    function: float64 [size] -> (value, float64 [size] gradient, extra),
      where extra is anything the caller wants back (the head: training
      cross entropy and accuracy).
    theta: float64 [size], the start.
    max_steps: the most steps taken.
    report: called after each step as report(i, theta, extra, last), where i
      counts from 0 and last is True for the final step.

  Returns:
    (theta, steps taken, extra at theta).
  """
  value, gradient, extra = function(theta)
  pairs = []  # (s, y, 1 / s.y) of the last HISTORY steps.
  for i in range(max_steps):
    direction = -_two_loop(gradient, pairs)
    slope = gradient @ direction
    # The first step has no curvature yet: at most a unit change of theta.
    t = 1.0 if pairs else 1.0 / max(1.0, np.linalg.norm(gradient))
    while True:
      new_theta = theta + t * direction
      new_value, new_gradient, new_extra = function(new_theta)
      if new_value <= value + 1e-4 * t * slope or t < 1e-12:
        break
      t /= 2
    s, y = new_theta - theta, new_gradient - gradient
    if s @ y > 0:
      pairs = (pairs + [(s, y, 1 / (s @ y))])[-HISTORY:]
    # The first step has no curvature to scale it, so its decrease says
    # little about how far the minimum is.
    done = i + 1 == max_steps or (i > 0 and value - new_value <= TOLERANCE *
                                  max(abs(new_value), 1.0))
    theta, value, gradient, extra = new_theta, new_value, new_gradient, new_extra
    report(i, theta, extra, done)
    if done:
      return theta, i + 1, extra
  return theta, 0, extra


def _two_loop(gradient, pairs):
  """The L-BFGS estimate of inverse Hessian @ gradient (algorithm 7.4)."""
  q = gradient.copy()
  alphas = []
  for s, y, rho in reversed(pairs):
    alphas.append(rho * (s @ q))
    q -= alphas[-1] * y
  if pairs:
    s, y, _ = pairs[-1]
    q *= (s @ y) / (y @ y)
  for (s, y, rho), alpha in zip(pairs, reversed(alphas)):
    q += (alpha - rho * (y @ q)) * s
  return q
