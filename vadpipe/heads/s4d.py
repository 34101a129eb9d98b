"""A diagonal state-space layer (S4D; Gu et al. 2022), after state-spaces/s4 ``models/s4/s4d.py``.

Each of the H channels is a linear time-invariant system with N/2 complex diagonal states,
discretised by zero-order hold with a learned step: A = -exp(log_A_real) + i A_imag (S4D-Lin
init), dt = exp(log_dt) drawn log-uniformly in [dt_min, dt_max]. Its impulse response
K[h, l] = 2 Re sum_n C[h, n] (exp(dt A) - 1) / A * exp(dt A l) is applied as a convolution
through the FFT, zero-padded to 2L so it stays causal (output l sees inputs 0..l only).
Then the skip term D, GELU, and a 1x1 convolution to 2H channels with a GLU back to H.

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
        K = dtA.unsqueeze(-1) * torch.arange(L, device=A.device)  # (H N L)
        C = C * (torch.exp(dtA) - 1.0) / A  # (H N)
        return 2 * torch.einsum("hn,hnl->hl", C, torch.exp(K)).real  # (H L)


class S4D(nn.Module):
    """``(B, H, L) -> (B, H, L)``: causal SSM convolution + D skip, GELU, 1x1 conv + GLU."""

    def __init__(self, d_model: int, d_state: int = 64, dropout: float = 0.0, **kernel_args):
        super().__init__()
        self.D = nn.Parameter(torch.randn(d_model))  # (H)
        self.kernel = S4DKernel(d_model, d_state, **kernel_args)
        self.activation = nn.GELU()
        self.dropout = nn.Dropout(dropout)
        self.output_linear = nn.Sequential(nn.Conv1d(d_model, 2 * d_model, kernel_size=1), nn.GLU(dim=-2))

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        L = u.size(-1)
        k = self.kernel(L)  # (H L)
        k_f = torch.fft.rfft(k, n=2 * L)  # (H L+1)
        u_f = torch.fft.rfft(u, n=2 * L)  # (B H L+1)
        y = torch.fft.irfft(u_f * k_f, n=2 * L)[..., :L]  # (B H L): the first L of 2L = causal
        y = y + u * self.D.unsqueeze(-1)  # (B H L)
        y = self.dropout(self.activation(y))
        return self.output_linear(y)  # (B H L)


def param_groups(model: nn.Module, lr: float, ssm_lr: float, weight_decay: float) -> list[dict]:
    """Three AdamW groups: SSM step/decay (``ssm_lr``, no decay), matrices (decay), the rest (no decay)."""

    def is_ssm(name: str) -> bool:
        return name.rsplit(".", 1)[-1] in SSM_PARAMETERS

    return decay_groups(model.named_parameters(), lr, weight_decay, own=((is_ssm, {"lr": ssm_lr, "weight_decay": 0.0}),))
