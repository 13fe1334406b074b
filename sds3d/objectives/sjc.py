"""SJC, Score Jacobian Chaining (Wang et al. 2023), with perturb-and-average scoring.

In VE variables z = x + sigma n with the denoiser D(z, sigma) = z - sigma eps_hat_s(z / sqrt(1 + sigma^2)),
the descent direction -(D(x + sigma n) - x) / sigma is eps_hat_s(x_t) - n, where x_t = z / sqrt(1 + sigma^2)
is exactly the VP noisy sample: SDS with w = 1 (configs/sjc.yaml). ``var_red: false`` drops the -n term.
The authors draw sigma from the 1000 VE levels without the 30 largest and 10 smallest: t in [0.01, 0.97].
"""

import torch

from sds3d.objectives.sds import SDS


class SJC(SDS):
    """Score Jacobian Chaining (PAAS): eps_hat - n in VE variables, unit weight."""

    def target(self, noise: torch.Tensor) -> torch.Tensor:
        return noise if self.config.sjc.var_red else torch.zeros_like(noise)
