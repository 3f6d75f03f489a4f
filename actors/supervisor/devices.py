"""Devices the supervisor lends to worker processes: never more than ``n_gpus`` at once.

    pool = DevicePool.create(n_gpus=2, visible=os.environ.get("CUDA_VISIBLE_DEVICES"))
    lease = pool.acquire("seg-3", count=1)      # None while no device is free
    env = {**os.environ, **lease.env}           # CUDA_VISIBLE_DEVICES pins the worker to its GPU(s)
    pool.release(lease)

* ``n_gpus = 0``: the CPU counts as one device, lent to one holder at a time, and the
  worker sees no GPU (``CUDA_VISIBLE_DEVICES=""``).
* ``n_gpus = k``: the first k GPUs this process may use, by the ids it was given
  (``CUDA_VISIBLE_DEVICES`` of the coordinator: indices or UUIDs), else ``0..k-1``.
  Asking for more GPUs than are visible is a configuration error naming both numbers.
* A multi-device trial (DDP under torchrun) takes ``count`` devices in one lease, all or
  nothing, so two half-leases can never deadlock each other.

The pool is in-memory bookkeeping: leases die with the coordinator, as its workers do.
Imports the standard library only.
"""

from __future__ import annotations

from dataclasses import dataclass, field


class DeviceError(ValueError):
    """A device request that can never be met, or a lease the pool did not give."""


@dataclass(frozen=True, slots=True)
class Lease:
    holder: str
    devices: tuple[str, ...]  # GPU ids as the coordinator sees them, or ("cpu",)

    @property
    def is_cpu(self) -> bool:
        return self.devices == ("cpu",)

    @property
    def env(self) -> dict[str, str]:
        """Environment for the worker: it sees exactly its devices (as cuda:0, cuda:1, …)."""
        return {"CUDA_VISIBLE_DEVICES": "" if self.is_cpu else ",".join(self.devices)}

    @property
    def device(self) -> str:
        """What the worker should pass as ``--device``."""
        return "cpu" if self.is_cpu else "cuda"


def visible_gpus(n_gpus: int, visible: str | None) -> tuple[str, ...]:
    """The ids of the GPUs the pool may lend (see the module docstring)."""
    if n_gpus < 0:
        raise DeviceError(f"n_gpus must be >= 0, got {n_gpus}")
    if n_gpus == 0:
        return ()
    if visible is None:
        return tuple(str(i) for i in range(n_gpus))
    ids = tuple(part.strip() for part in visible.split(",") if part.strip())
    if len(set(ids)) != len(ids):
        raise DeviceError(f"CUDA_VISIBLE_DEVICES lists a device twice: {visible!r}")
    if n_gpus > len(ids):
        raise DeviceError(f"n_gpus is {n_gpus} but CUDA_VISIBLE_DEVICES={visible!r} makes only {len(ids)} visible")
    return ids[:n_gpus]


@dataclass
class DevicePool:
    devices: tuple[str, ...]
    _free: list[str] = field(default_factory=list)
    _leases: dict[str, Lease] = field(default_factory=dict)

    @classmethod
    def create(cls, n_gpus: int, visible: str | None = None) -> DevicePool:
        devices = visible_gpus(n_gpus, visible) or ("cpu",)
        return cls(devices, list(devices))

    @property
    def capacity(self) -> int:
        return len(self.devices)

    @property
    def in_use(self) -> int:
        return self.capacity - len(self._free)

    def acquire(self, holder: str, count: int = 1) -> Lease | None:
        """``count`` devices for ``holder`` (all or none), or None until enough are free."""
        if count < 1 or count > self.capacity:
            raise DeviceError(f"{holder} asks for {count} device(s); this pool has {self.capacity}")
        if holder in self._leases:
            raise DeviceError(f"{holder} already holds {self._leases[holder].devices}")
        if len(self._free) < count:
            return None
        taken, self._free = tuple(self._free[:count]), self._free[count:]
        lease = Lease(holder, taken)
        self._leases[holder] = lease
        return lease

    def release(self, lease: Lease) -> None:
        if self._leases.get(lease.holder) != lease:
            raise DeviceError(f"{lease.holder} does not hold {lease.devices}")
        del self._leases[lease.holder]
        # Back in the pool's order, so the next lease is predictable (lowest ids first).
        self._free = [d for d in self.devices if d in self._free or d in lease.devices]

    def held_by(self, holder: str) -> Lease | None:
        return self._leases.get(holder)
