"""Numeric tolerances derived from the arithmetic, not read off one machine's output.

Two implementations of the same formula (densekit's code and a step-by-step restatement, or one
path and another) differ only by rounding, and rounding depends on the kernels a CPU picks (MKL
and oneDNN choose AVX2 / AVX-512 paths by vendor and model, and block sums differently with the
thread count). A tolerance therefore has to bound the rounding error of the computation:

* For a sum of ``n`` products, the error is at most ``gamma(n) * sum|a_i b_i|`` with
  ``gamma(n) = n u / (1 - n u)`` (Higham, *Accuracy and Stability of Numerical Algorithms*,
  2nd ed., eq. 3.4), ``u`` the unit roundoff: 2^-24 in float32, 2^-53 in float64.
* Through a network the bounds compound with depth and with the Lipschitz constants of the
  layers; for a transformer in float32 the worst case is far above the values' own scale, so
  no honest float32 tolerance can be tight. Tests that compare implementations of the same
  formula therefore run in **float64**: with ``n <= 4096`` terms per sum, ``<= 64`` chained
  operations and layer gains ``<= 100`` (tiny random models, inputs of unit scale),
  ``64 * gamma(4096) * 100 ~ 2.9e-9`` bounds the difference of two float64 evaluations of the
  same formula, and :data:`F64_ATOL` = 1e-8 sits above it, while any real discrepancy (a wrong
  scale, a missing residual, a transposed grid) shows up at 1e-3 or more.
* Checks that stay in float32 (end-to-end paths through mmcv / mmseg kernels that cast to
  float32) use :func:`fp32_atol` with the length of the longest reduction and a scale.
"""
U32 = 2.0 ** -24
U64 = 2.0 ** -53


def gamma(n: int, u: float = U32) -> float:
    """Higham's ``gamma_n``: relative error bound of an ``n``-term floating-point sum."""
    if n * u >= 1:
        raise ValueError('n * u >= 1: the bound does not hold')
    return n * u / (1 - n * u)


# float64 comparisons of the same formula (see the module docstring for the bound).
F64_ATOL = 1e-8


def fp32_atol(n_terms: int, scale: float = 1.0, depth: int = 1) -> float:
    """Worst-case float32 error of ``depth`` chained ``n_terms``-sums of values up to
    ``scale``."""
    return depth * gamma(n_terms) * scale
