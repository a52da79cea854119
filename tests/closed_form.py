"""Closed-form answers for Bayesian linear regression, used as test oracles.

    y = Phi w + eps,  w ~ N(0, A^{-1} I),  eps ~ N(0, beta^{-1} I)
    log p(y) = log N(y; 0, beta^{-1} I + A^{-1} Phi Phi^T)
    posterior precision Lambda = A I + beta Phi^T Phi
    optimum of the mean-field ELBO = log p(y) - 1/2 (sum_i log Lambda_ii - log det Lambda)
"""

from __future__ import annotations

import numpy as np


def log_evidence(phi: np.ndarray, y: np.ndarray, A: float, beta: float) -> float:
    n = len(y)
    cov = np.eye(n) / beta + phi @ phi.T / A
    sign, logdet = np.linalg.slogdet(cov)
    return float(-0.5 * (n * np.log(2 * np.pi) + logdet + y @ np.linalg.solve(cov, y)))


def posterior_precision(phi: np.ndarray, A: float, beta: float) -> np.ndarray:
    return A * np.eye(phi.shape[1]) + beta * phi.T @ phi


def mean_field_optimum(phi: np.ndarray, y: np.ndarray, A: float, beta: float) -> float:
    lam = posterior_precision(phi, A, beta)
    gap = 0.5 * (np.log(np.diag(lam)).sum() - np.linalg.slogdet(lam)[1])
    return log_evidence(phi, y, A, beta) - gap


def type2_ml(phi: np.ndarray, y: np.ndarray, iters: int = 500) -> tuple[float, float, float]:
    """Evidence maximisation over (A, beta) by MacKay's fixed point; returns (A, beta, log p(y))."""
    n, d = phi.shape
    A, beta = 1.0, 1.0
    eig = np.linalg.eigvalsh(phi.T @ phi)
    for _ in range(iters):
        lam = posterior_precision(phi, A, beta)
        mean = beta * np.linalg.solve(lam, phi.T @ y)
        g = np.sum(beta * eig / (A + beta * eig))
        A = g / (mean @ mean)
        beta = (n - g) / np.sum((y - phi @ mean) ** 2)
    return A, beta, log_evidence(phi, y, A, beta)
