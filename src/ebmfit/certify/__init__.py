r"""Certified KL bounds between energy-based models: sound oscillation bounds by branch-and-bound.

For two tilts of the same base measure P, :math:`Q_i = e^{-V_i}\,dP / \mathbb{E}_P[e^{-V_i}]`,
and :math:`h = V_2 - V_1`,

.. math:: \mathrm{KL}(Q_1\,\|\,Q_2) = \mathbb{E}_{Q_1}[h] + \log \mathbb{E}_{Q_1}[e^{-h}]
          \le \min\big(\operatorname{osc}(h),\ \operatorname{osc}(h)^2/8\big),
          \qquad \operatorname{osc}(h) = \sup_K h - \inf_K h,

by Hoeffding's lemma (the first term of the minimum from :math:`\log\mathbb{E}[e^{-h}] \le
-\inf h`).  The bound holds for any P and, by symmetry of osc, for both directions.  This is
the corrected form of the seed's §3(a) (which states :math:`2\|V_1 - V_2\|_\infty`); see
``DESIGN.md``.

Modules, one step each:

* :mod:`~ebmfit.certify.pairs` — enclosures of h over boxes from the energies' own bounds
  protocol (:mod:`ebmfit.energies.interval`; no family is named here);
* :mod:`~ebmfit.certify.bnb` — branch-and-bound for :math:`\operatorname{osc}(h)`
  (:func:`oscillation_bounds`);
* :mod:`~ebmfit.certify.kl` — exact KL by quadrature (d ≤ 3) and certificates (:func:`kl_bound`);
* :mod:`~ebmfit.certify.compression` — :func:`compress` with a certificate;
* :mod:`~ebmfit.certify.targets` — energies of known targets and mixtures with the base.

The energies are certified as exact functions of their weights; ``float_error=True`` adds a
rigorous allowance for evaluating them in their own dtype.
"""

from __future__ import annotations

from ..energies.mixture import MixtureEnergy
from .bnb import OscillationBounds, oscillation_bounds
from .compression import compress
from .kl import KLCertificate, KLEstimate, kl_bound, kl_from_osc, kl_quadrature
from .pairs import gradient_bounds
from .targets import base_mixture, target_energy

__all__ = [
    "KLCertificate",
    "KLEstimate",
    "MixtureEnergy",
    "OscillationBounds",
    "base_mixture",
    "compress",
    "gradient_bounds",
    "kl_bound",
    "kl_from_osc",
    "kl_quadrature",
    "oscillation_bounds",
    "target_energy",
]
