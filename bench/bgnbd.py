"""BG/NBD (Fader, Hardie & Lee 2005, "Counting Your Customers the Easy Way") — a reference
model for the predictive-goal benchmark and test, never used by the product.

Per customer: ``x`` repeat purchases, ``t_x`` time of the last purchase and ``T`` the time
since the first purchase (all in days, measured at the calibration cutoff). The four
parameters (r, alpha, a, b) maximise the log-likelihood (paper eq. 6); the score of a
customer is the expected number of purchases in the next ``t`` days (eq. 10), which ranks
customers for "will buy in the next t days".
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize
from scipy.special import betaln, gammaln, hyp2f1


def _neg_log_likelihood(log_params: np.ndarray, x: np.ndarray, t_x: np.ndarray,
                        big_t: np.ndarray) -> float:
    r, alpha, a, b = np.exp(log_params)
    a1 = gammaln(r + x) - gammaln(r) + r * np.log(alpha)
    a2 = betaln(a, b + x) - betaln(a, b)
    a3 = -(r + x) * np.log(alpha + big_t)
    a4 = np.where(x > 0, np.log(a) - np.log(np.maximum(b + x - 1, 1e-12))
                  - (r + x) * np.log(alpha + t_x), -np.inf)
    ll = a1 + a2 + np.logaddexp(a3, a4)
    return float(-ll.sum())


def fit(x: np.ndarray, t_x: np.ndarray, big_t: np.ndarray) -> tuple[float, float, float, float]:
    """Maximum-likelihood (r, alpha, a, b)."""
    res = minimize(_neg_log_likelihood, np.log([0.5, 5.0, 0.5, 2.0]), args=(x, t_x, big_t),
                   method="Nelder-Mead", options={"maxiter": 4000, "xatol": 1e-6,
                                                  "fatol": 1e-6})
    r, alpha, a, b = np.exp(res.x)
    return float(r), float(alpha), float(a), float(b)


def expected_purchases(params: tuple[float, float, float, float], t: float, x: np.ndarray,
                       t_x: np.ndarray, big_t: np.ndarray) -> np.ndarray:
    """E[purchases in (T, T + t]] for each customer (paper eq. 10)."""
    r, alpha, a, b = params
    hyp = hyp2f1(r + x, b + x, a + b + x - 1, t / (alpha + big_t + t))
    head = (a + b + x - 1) / (a - 1) * (1 - ((alpha + big_t) / (alpha + big_t + t)) ** (r + x)
                                        * hyp)
    tail = 1 + np.where(x > 0, a / (b + x - 1), 0.0) * ((alpha + big_t) / (alpha + t_x)) ** (r + x)
    return np.asarray(head / tail)


def p_any(params: tuple[float, float, float, float], t: float, x: np.ndarray,
          t_x: np.ndarray, big_t: np.ndarray) -> np.ndarray:
    """P(at least one purchase in (T, T + t]): alive (paper eq. 13) and not quiet for t
    days (drop-out follows a purchase, so a quiet alive customer stays alive)."""
    r, alpha, a, b = params
    odds = np.where(x > 0, a / (b + x - 1), 0.0) * ((alpha + big_t) / (alpha + t_x)) ** (r + x)
    quiet = ((alpha + big_t) / (alpha + big_t + t)) ** (r + x)
    return np.asarray((1 - quiet) / (1 + odds))


def summary(purchases: dict[int, list[float]], cutoff: float) -> tuple[np.ndarray, ...]:
    """(ids, x, t_x, T) in days from each customer's purchase days (epoch days) before
    ``cutoff``; purchases on the same day count once, as in the paper."""
    ids, xs, txs, ts = [], [], [], []
    for cid, days in sorted(purchases.items()):
        before = sorted({d for d in days if d < cutoff})
        if not before:
            continue
        ids.append(cid)
        xs.append(len(before) - 1)
        txs.append(before[-1] - before[0])
        ts.append(cutoff - before[0])
    return (np.array(ids), np.array(xs, float), np.array(txs, float), np.array(ts, float))
