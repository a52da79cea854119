"""``drmad``: reverse mode along the straight line from theta_0 to theta_eta (Fu et al. 2016).

METHOD.md section 5.  The inner operator T is plain gradient ascent with step size beta = ``lr``
(as for ``unrolled``).  The exact reverse pass needs the points theta_t of the forward
trajectory; DrMAD (distilling reverse-mode automatic differentiation) stores only theta_0 and
theta_eta and replaces the trajectory by the line

    theta(t) = (1 - t/eta) theta_0 + (t/eta) theta_eta,

then runs the same adjoint recursion (:mod:`.sgd_unroll`):

    a_eta = d_theta Q(theta_eta, h),   dQ/dh ~= d_h Q + sum_t beta (d^2_{h theta} L(theta(t), h))^T a_{t+1},
    a_t = (I + beta d^2_{theta theta} L(theta(t), h)) a_{t+1}.

The minibatch and random state of each step are replayed (common random numbers), so the only
approximation is the trajectory.

Bias: zero when the trajectory is a straight line traversed at constant speed (e.g. eta = 1, a
test checks it to 1e-10); it grows with the curvature of the path.  Measured
(``tests/test_hypergradients.py::test_measured_bias_of_approximate_methods``: float64 Bayesian
linear regression, one log-precision, eta = 20 SGD steps from a cold start, relative error
against the exact derivative of Q(T^eta(theta_0, h), h)):

    ==========  ============================  ==============================
    guide       Q = hold-out log-likelihood   Q = loglik - 2 KL, c_reg = 0.5
    ==========  ============================  ==============================
    Delta       0.033                         0.0028
    mean-field  0.076                         0.023
    ==========  ============================  ==============================

(always the right sign, and 5-20x closer than ``greedy`` on the same problems).
Cost: eta forward steps, eta Hessian-vector products: the cost of ``unrolled`` (about 2.3-2.6x
eta plain steps, ``benchmarks/hypergrad_cost.py``), whose extra is only memory.  Memory: O(|theta|) (theta_0, theta_eta, the adjoint) plus eta recorded
random states and minibatch references.
"""

from __future__ import annotations

from .base import GradientStrategy, HypergradientEstimate, SearchState
from .sgd_unroll import outer_gradients, reverse_mode, sgd_forward


class DrMADStrategy(GradientStrategy):
    """Approximate reverse-mode hypergradient along the line theta_0 -> theta_eta.

    Args:
        step_size: beta of the inner gradient ascent (default: the search's ``lr``).
    """

    name = "drmad"
    inner_operator = "sgd"

    def __init__(self, step_size: float | None = None):
        self.step_size = step_size

    def hypergradient(self, search: SearchState) -> HypergradientEstimate:
        beta = self.step_size if self.step_size is not None else search.lr
        run = sgd_forward(search, search.inner_steps, beta, keep_trajectory=False)
        theta_eta = [p.detach().clone() for p in search.theta().values()]
        eta = max(len(run.steps), 1)

        def point(t: int):
            w = t / eta
            return [(1 - w) * a + w * b for a, b in zip(run.theta0, theta_eta)]

        Q, d_theta, d_h = outer_gradients(search)
        grads = reverse_mode(search, run, point, beta, d_theta, d_h)
        return HypergradientEstimate(grads, L=run.L, Q=float(Q))
