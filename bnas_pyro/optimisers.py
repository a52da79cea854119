"""Adam with torch's fused kernel wherever the installed torch has one for the parameters' device.

``torch.optim.Adam(fused=True)`` updates every parameter in one kernel call instead of about ten
tensor operations per parameter tensor.  The update is the same Adam (Kingma and Ba, 2015,
Algorithm 1, with torch's bias corrections); the fused kernel only orders the arithmetic
differently, so trajectories agree to rounding.  torch has it on CUDA since 2.0 and on the CPU
since 2.4; where it is missing (an older torch, a device without the kernel, a dtype it does not
take) the same optimiser runs its plain per-tensor loop.  The optimiser's state (``step``,
``exp_avg``, ``exp_avg_sq``) and its ``state_dict`` have the same keys either way, so a checkpoint
written by one loads into the other.
"""

from __future__ import annotations

from typing import Any, Iterable

import torch


def adam(params: Iterable[Any], lr: float = 1e-3, **options: Any) -> torch.optim.Adam:
    """``torch.optim.Adam(params, lr, **options)``, fused where torch has the kernel for these
    parameters (unless ``options`` choose ``fused``, ``foreach`` or ``differentiable`` themselves).
    ``params`` may be tensors or param-group dicts, as for any torch optimiser.

    The parameters must all be real floating-point tensors; torch then checks, when the
    optimiser is built, that their device has the fused kernel, and raises a ``RuntimeError``
    otherwise (an older torch on the CPU, say): the plain optimiser is built then.
    """
    params = list(params)
    tensors = [p for group in params for p in (group["params"] if isinstance(group, dict)
                                               else [group])]
    if (tensors and all(torch.is_floating_point(p) for p in tensors)
            and not any(k in options for k in ("fused", "foreach", "differentiable"))):
        try:
            return torch.optim.Adam(params, lr=lr, fused=True, **options)
        except RuntimeError:
            pass
    return torch.optim.Adam(params, lr=lr, **options)


__all__ = ["adam"]
