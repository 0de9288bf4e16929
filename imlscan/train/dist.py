"""Training on several processes (``torchrun``): joining and leaving the process group, and
the few collective operations the loop needs (agreeing to stop, averaging logs, broadcasting a
step count)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

# -- distributed -----------------------------------------------------------------------------


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    created: bool = False  # this run joined the process group, so it leaves it at the end

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def on(self) -> bool:
        return self.world > 1


def init_distributed(device: str) -> Dist:
    """Join the process group when started by ``torchrun`` (``WORLD_SIZE`` > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch.distributed as dist

    local = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and not device.startswith("cpu")
    if use_cuda:
        torch.cuda.set_device(local)
    created = not dist.is_initialized()
    if created:
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), local, created)


def leave_distributed(d: Dist) -> None:
    """Leave a process group this run joined. Why: a rank that exits with the group still open
    tears gloo down in interpreter shutdown while its peer may still be closing, which aborted a
    rank (SIGABRT) once in a fresh-clone test run; PyTorch asks for ``destroy_process_group`` before exit."""
    if d.created:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def agree_stop(reason: str | None, device: torch.device) -> str | None:
    """All ranks stop together: rank 0's clock decides for everyone."""
    import torch.distributed as dist

    codes = {None: 0, "max_steps": 1, "max_minutes": 2}
    t = torch.tensor([codes[reason]], device=device)
    dist.broadcast(t, src=0)
    return {v: k for k, v in codes.items()}[int(t.item())]


def mean_over_ranks(window: dict, keys: tuple[str, ...], device: torch.device) -> dict:
    """The logged losses are averaged over all processes, not rank 0's alone."""
    import torch.distributed as dist

    t = torch.tensor([float(window[k]) for k in keys], device=device, dtype=torch.float64)
    dist.all_reduce(t)
    return {k: float(v) / dist.get_world_size() for k, v in zip(keys, t.tolist())}


def broadcast_int(v: int, device: torch.device) -> int:
    import torch.distributed as dist

    t = torch.tensor([v], device=device)
    dist.broadcast(t, src=0)
    return int(t.item())
