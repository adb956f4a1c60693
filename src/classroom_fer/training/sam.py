"""Sharpness-Aware Minimisation (Foret et al., 2021) over any base optimiser, as the thesis used."""
from __future__ import annotations

from typing import Callable

import torch


class SAM(torch.optim.Optimizer):
    """Two passes per step: climb to the worst nearby weights (radius ``rho``), take the gradient
    there, come back and let the base optimiser step with it."""

    def __init__(self, params, base_optimizer: type[torch.optim.Optimizer], rho: float = 0.05, **kwargs) -> None:
        if rho <= 0:
            raise ValueError(f"rho must be positive, got {rho}")
        super().__init__(params, dict(rho=rho, **kwargs))
        self.base_optimizer = base_optimizer(self.param_groups, **kwargs)
        self.param_groups = self.base_optimizer.param_groups
        self.defaults.update(self.base_optimizer.defaults)

    @torch.no_grad()
    def first_step(self) -> None:
        grads = [p.grad for group in self.param_groups for p in group["params"] if p.grad is not None]
        grad_norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])) if grads else torch.tensor(0.0)
        for group in self.param_groups:
            scale = group["rho"] / (grad_norm + 1e-12)
            for p in group["params"]:
                if p.grad is None:
                    continue
                perturbation = p.grad * scale
                p.add_(perturbation)
                self.state[p]["sam_perturbation"] = perturbation

    @torch.no_grad()
    def second_step(self) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                perturbation = self.state[p].pop("sam_perturbation", None)
                if perturbation is not None:
                    p.sub_(perturbation)
        self.base_optimizer.step()

    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> None:
        if closure is None:
            raise RuntimeError("SAM needs a closure that recomputes the loss and gradients")
        self.first_step()
        with torch.enable_grad():
            closure()
        self.second_step()

    def state_dict(self) -> dict:
        return self.base_optimizer.state_dict()

    def load_state_dict(self, state_dict: dict) -> None:
        self.base_optimizer.load_state_dict(state_dict)
        self.param_groups = self.base_optimizer.param_groups
