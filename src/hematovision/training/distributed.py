"""Training on several processes (DistributedDataParallel), started by ``torchrun``.

``hematovision train`` reads torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR/PORT): with one process nothing changes. With several, each process holds a copy
of the model, takes every WORLD_SIZE-th image of the epoch's seeded order (a distributed
sampler: equal shares, padded, so that no process waits for a batch that never comes), and
DDP averages the gradients: gloo on CPUs, NCCL on GPUs (one per process). Validation runs in
every process on the same images, so early stopping decides alike everywhere; rank 0 alone
writes the run folder and shows progress.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from ..models import pick_device


@dataclass(frozen=True)
class Processes:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, device: str = "auto") -> Processes:
        """One process, or join torchrun's group (and quieten every rank but 0's log)."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world == 1:
            return cls()
        procs = cls(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
        gpu = procs.device(device).type == "cuda"
        if gpu:
            torch.cuda.set_device(procs.local_rank)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if gpu else "gloo")
        if not procs.is_main:
            logging.getLogger("hematovision").setLevel(logging.WARNING)
        return procs

    def device(self, name: str = "auto") -> torch.device:
        chosen = pick_device(name)
        return torch.device("cuda", self.local_rank) if chosen.type == "cuda" else chosen

    def wrap(self, model: nn.Module) -> nn.Module:
        """The model for training steps: DDP over several processes, else the model itself."""
        if self.world == 1:
            return model
        on_gpu = next(model.parameters()).is_cuda
        return nn.parallel.DistributedDataParallel(
            model, device_ids=[self.local_rank] if on_gpu else None
        )

    def shard(self, order: np.ndarray) -> np.ndarray:
        """This process's share of an epoch's order: equal lengths (padded by wrapping)."""
        if self.world == 1:
            return order
        padded = np.resize(order, -(-len(order) // self.world) * self.world)
        return padded[self.rank :: self.world]

    def sum(self, *values: float) -> list[float]:
        """The sums over every process (for the epoch's loss and accuracy)."""
        if self.world == 1:
            return list(values)
        on = torch.device("cuda", self.local_rank) if dist.get_backend() == "nccl" else None
        total = torch.tensor(values, dtype=torch.float64, device=on)
        dist.all_reduce(total)
        return total.tolist()

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def close(self) -> None:
        if self.world > 1 and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


ONE_PROCESS = Processes()
