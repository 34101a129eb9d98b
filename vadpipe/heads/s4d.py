"""A diagonal state-space layer (S4D; Gu et al. 2022), after state-spaces/s4 ``models/s4/s4d.py``.

Each of the H channels is a linear time-invariant system with N/2 complex diagonal states,
discretised by zero-order hold with a learned step: A = -exp(log_A_real) + i A_imag (S4D-Lin
init), dt = exp(log_dt) drawn log-uniformly in [dt_min, dt_max]. Its impulse response
K[h, l] = 2 Re sum_n C[h, n] (exp(dt A) - 1) / A * exp(dt A l) is applied as a causal
convolution (output l sees inputs 0..l only). Then the skip term D, GELU, and a 1x1
convolution to 2H channels with a GLU back to H.

Speed (vadpipe 0.5, 0.5.3): S3M's sequences are short (L_p = 10 or 20), so the convolution is
not an FFT of length 2L (state-spaces/s4's choice for long sequences) but, on ``(B, L, H)``
rows, one multiply-add of the input shifted by each lag (:func:`causal_conv`; 0.5 multiplied by
the (L, L) Toeplitz matrix of K through ``einsum``, which copied the rows to ``(H, L, B)`` and
back). The 1x1 convolution is one matrix product (its weight is stored as the ``Conv1d`` it
was, so runs of earlier versions load), ``last=True`` computes the output at the last position
only (what a stack's top layer needs when only its last state is read), and the kernel's
exp(dt A l) is computed as magnitude and phase (real exp, cos, sin: torch's complex ``exp`` is
not vectorised on a CPU). Scoring UCF-Crime's 290 test videos: 13.7 s -> 8.2 s; a training step
of 64 windows 0.038 -> 0.030 s (same machine, same run of ``bench/bench_heads.py``). The same
function in another order of float32 operations: outputs and gradients match the FFT
reference to rounding (``tests/test_s3m.py``).

The SSM parameters (step and decay) belong in their own optimizer group without weight
decay and with their own (smaller) learning rate: :func:`param_groups`.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from vadpipe.heads.training import decay_groups

SSM_PARAMETERS = ("log_dt", "log_A_real", "A_imag")


class S4DKernel(nn.Module):
    """The convolution kernel ``(H, L)`` of H diagonal SSMs with ``d_state // 2`` complex states."""

    def __init__(self, d_model: int, d_state: int = 64, dt_min: float = 1e-3, dt_max: float = 1e-1):
        super().__init__()
        H, N = d_model, d_state // 2
        log_dt = torch.rand(H) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)  # (H)
        C = torch.randn(H, N, dtype=torch.cfloat)  # (H N)
        self.C = nn.Parameter(torch.view_as_real(C))  # (H N 2): real storage, safetensors-friendly
        self.log_dt = nn.Parameter(log_dt)
        self.log_A_real = nn.Parameter(torch.log(0.5 * torch.ones(H, N)))  # (H N)
        self.A_imag = nn.Parameter(math.pi * torch.arange(N, dtype=torch.float32).repeat(H, 1))  # (H N)

    def forward(self, L: int) -> torch.Tensor:
        dt = torch.exp(self.log_dt)  # (H)
        C = torch.view_as_complex(self.C)  # (H N)
        A = -torch.exp(self.log_A_real) + 1j * self.A_imag  # (H N)
        dtA = A * dt.unsqueeze(-1)  # (H N)
        C = C * (torch.exp(dtA) - 1.0) / A  # (H N)
        # exp(dtA l) as magnitude and phase: torch's complex exp of the (H, N, L) tensor took 1.7 ms
        # of a 47 ms scoring pass a layer (not vectorised); real exp / cos / sin are
        l = torch.arange(L, device=A.device, dtype=dtA.real.dtype)  # (L)
        magnitude = torch.exp(dtA.real.unsqueeze(-1) * l)  # (H N L)
        phase = dtA.imag.unsqueeze(-1) * l  # (H N L)
        real = C.real.unsqueeze(-1) * torch.cos(phase) - C.imag.unsqueeze(-1) * torch.sin(phase)  # (H N L)
        return 2 * (real * magnitude).sum(1)  # (H L): 2 Re sum_n C_n exp(dtA_n l)


def causal_conv(u: torch.Tensor, k: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
    """``y[b, m] = skip * u[b, m] + sum_{j <= m} k[:, j] * u[b, m - j]`` over ``(B, L, H)`` rows.

    One multiply-add of ``u`` shifted by each lag into ``y``: L passes over contiguous rows, no
    transposes (``einsum`` with the (H, L, L) Toeplitz matrix batched over channels copied ``u``
    to ``(H, L, B)`` and back: 3.9 of the 4.1 ms of a layer on 430 windows of 20 went to copies)."""
    L = u.size(1)
    kt = k.t().contiguous()  # (L H): contiguous rows, or each product below is a strided loop
    y = u * (kt[0] + skip)  # (B L H)
    for j in range(1, L):
        y[:, j:].addcmul_(u[:, : L - j], kt[j])
    return y


class S4D(nn.Module):
    """``(B, L, H) -> (B, L, H)`` (or ``(B, H)`` at the last position with ``last=True``): causal
    SSM convolution + D skip, GELU, 1x1 conv + GLU."""

    def __init__(self, d_model: int, d_state: int = 64, dropout: float = 0.0, **kernel_args):
        super().__init__()
        self.D = nn.Parameter(torch.randn(d_model))  # (H)
        self.kernel = S4DKernel(d_model, d_state, **kernel_args)
        self.activation = nn.GELU()
        self.dropout = nn.Dropout(dropout)
        self.output_linear = nn.Sequential(nn.Conv1d(d_model, 2 * d_model, kernel_size=1), nn.GLU(dim=-2))

    def forward(self, u: torch.Tensor, last: bool = False) -> torch.Tensor:
        L = u.size(1)
        k = self.kernel(L)  # (H L)
        if last:  # y[L-1] = sum_l k[L-1-l] u[l]
            y = (u * k.flip(-1).t().contiguous()).sum(1) + u[:, -1] * self.D  # (B H)
        else:
            y = causal_conv(u, k, self.D)  # (B L H)
        y = self.dropout(self.activation(y))
        conv = self.output_linear[0]
        out = nn.functional.linear(y.reshape(-1, y.size(-1)), conv.weight.squeeze(-1), conv.bias)  # one addmm
        return nn.functional.glu(out, dim=-1).view(*y.shape)


def param_groups(model: nn.Module, lr: float, ssm_lr: float, weight_decay: float) -> list[dict]:
    """Three AdamW groups: SSM step/decay (``ssm_lr``, no decay), matrices (decay), the rest (no decay)."""

    def is_ssm(name: str) -> bool:
        return name.rsplit(".", 1)[-1] in SSM_PARAMETERS

    return decay_groups(model.named_parameters(), lr, weight_decay, own=((is_ssm, {"lr": ssm_lr, "weight_decay": 0.0}),))
