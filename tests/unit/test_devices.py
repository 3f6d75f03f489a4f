"""The supervisor's device pool on fake device lists: n_gpus is never exceeded, pinning is exact."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smart_tuner.actors.supervisor.devices import DeviceError, DevicePool, Lease, visible_gpus


def test_cpu_only_is_one_device_lent_to_one_holder_that_sees_no_gpu() -> None:
    pool = DevicePool.create(n_gpus=0, visible="0,1")
    lease = pool.acquire("s1")
    assert lease is not None and lease.devices == ("cpu",) and lease.device == "cpu"
    assert lease.env == {"CUDA_VISIBLE_DEVICES": ""}
    assert pool.acquire("s2") is None
    pool.release(lease)
    assert pool.acquire("s2") is not None


def test_gpus_are_pinned_by_the_ids_the_coordinator_was_given() -> None:
    pool = DevicePool.create(n_gpus=2, visible="5, 7,9")
    a, b = pool.acquire("a"), pool.acquire("b")
    assert a is not None and b is not None
    assert (a.env, b.env) == ({"CUDA_VISIBLE_DEVICES": "5"}, {"CUDA_VISIBLE_DEVICES": "7"})
    assert a.device == "cuda" and pool.acquire("c") is None and pool.in_use == 2
    pool.release(b)
    c = pool.acquire("c")
    assert c is not None and c.devices == ("7",)


def test_a_ddp_trial_takes_all_its_devices_or_none() -> None:
    pool = DevicePool.create(n_gpus=4)
    single = pool.acquire("fork")
    assert single is not None
    assert pool.acquire("ddp", count=4) is None  # three free: not enough, and nothing is taken
    assert pool.in_use == 1
    pool.release(single)
    ddp = pool.acquire("ddp", count=4)
    assert ddp is not None and ddp.env == {"CUDA_VISIBLE_DEVICES": "0,1,2,3"}


def test_impossible_requests_and_foreign_leases_are_errors() -> None:
    with pytest.raises(DeviceError, match="n_gpus is 3 but CUDA_VISIBLE_DEVICES='0,1' makes only 2 visible"):
        visible_gpus(3, "0,1")
    with pytest.raises(DeviceError, match="twice"):
        visible_gpus(2, "1,1")
    with pytest.raises(DeviceError, match="n_gpus must be >= 0"):
        visible_gpus(-1, None)
    pool = DevicePool.create(n_gpus=2)
    with pytest.raises(DeviceError, match="asks for 3 device"):
        pool.acquire("x", count=3)
    lease = pool.acquire("x")
    assert lease is not None
    with pytest.raises(DeviceError, match="already holds"):
        pool.acquire("x")
    with pytest.raises(DeviceError, match="does not hold"):
        pool.release(Lease("y", ("1",)))
    assert visible_gpus(2, "GPU-aa,GPU-bb") == ("GPU-aa", "GPU-bb")  # UUIDs work as ids


@settings(max_examples=200, deadline=None)
@given(
    n_gpus=st.integers(0, 4),
    ops=st.lists(st.tuples(st.booleans(), st.integers(0, 5), st.integers(1, 4)), max_size=60),
)
def test_random_acquire_and_release_never_exceed_the_pool(n_gpus: int, ops: list[tuple[bool, int, int]]) -> None:
    pool = DevicePool.create(n_gpus=n_gpus)
    held: dict[str, Lease] = {}
    for acquire, who, count in ops:
        holder = f"h{who}"
        if acquire and holder not in held and count <= pool.capacity:
            lease = pool.acquire(holder, count)
            if lease is not None:
                held[holder] = lease
        elif not acquire and holder in held:
            pool.release(held.pop(holder))
        in_use = [d for lease in held.values() for d in lease.devices]
        assert len(in_use) == len(set(in_use)) == pool.in_use <= pool.capacity == max(1, n_gpus)
