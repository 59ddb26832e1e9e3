"""Several processes, one result (after NVlabs/edm torch_utils/distributed.py): the rank, world size and local
device of a process that torchrun started, a barrier, the gathering of small Python values across ranks, the sending
of large ones (a level's float64 moments) to rank 0 alone, and flags and counts in torchrun's key-value store.

A process that torchrun did not start (no WORLD_SIZE in its environment) is rank 0 of a world of one, and nothing
here imports torch for it. Under torchrun, `init` joins the process group (NCCL with CUDA, else gloo); a rank that
dies makes the others' next collective fail, which `_collective` turns into a message that says so (and that the
same command resumes: every finished chunk is kept).
"""

from __future__ import annotations

import os
from contextlib import contextmanager

from icrcli.errors import UserError


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def who() -> str:
    """' (rank R of W)' under torchrun, '' for one process: for messages a rank prints."""
    return f" (rank {rank()} of {world_size()})" if world_size() > 1 else ""


def _initialized() -> bool:
    if world_size() == 1:
        return False
    import torch.distributed as dist
    return dist.is_available() and dist.is_initialized()


def init() -> None:
    """Join torchrun's process group (once); nothing for one process."""
    if world_size() == 1 or _initialized():
        return
    import torch
    import torch.distributed as dist
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(local_rank())
    try:
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    except (RuntimeError, ValueError) as e:
        raise UserError(f"joining the torchrun process group failed{who()} ({e}). Start icr with `torchrun "
                        "--nproc-per-node N -m icrcli ...` (MASTER_ADDR, MASTER_PORT, RANK and WORLD_SIZE set).") \
            from None


def close() -> None:
    if _initialized():
        import torch.distributed as dist
        dist.destroy_process_group()


STOPPED = ("torchrun stopped this process{who}, most likely because another rank failed (its error is above). Every "
           "finished chunk is kept: run the same command again to resume.")


@contextmanager
def session():
    """The with-block a command that splits its work across ranks runs in: the process group joined, and
    torchrun's SIGTERM (sent to every rank when one fails; icr's CLI raises it as icrcli.errors.Terminated, which
    unwinds like Ctrl-C so what is finished is kept) said as what it most likely means here."""
    if world_size() == 1:
        yield
        return
    from icrcli.errors import Terminated
    init()
    try:
        yield
    except Terminated:
        import sys
        print(f"icr: {STOPPED.format(who=who())}", file=sys.stderr, flush=True)
        raise       # leaving the group would wait on the dead peer: the process ends right after
    close()


def _collective(what: str, fn):
    try:
        return fn()
    except RuntimeError as e:   # gloo/NCCL: a peer closed its connection (it died) or timed out
        raise UserError(f"another process of this torchrun job stopped while {what}{who()} ({e}). Every finished "
                        "chunk is kept: run the same command again to resume.") from None


def barrier(what: str = "waiting for the other ranks") -> None:
    if _initialized():
        import torch.distributed as dist
        _collective(what, dist.barrier)


def all_gather(value, what: str = "gathering results") -> list:
    """[value of rank 0, value of rank 1, ...] on every rank (Python objects; [value] for one process)."""
    if not _initialized():
        return [value]
    import torch.distributed as dist
    out = [None] * world_size()
    _collective(what, lambda: dist.all_gather_object(out, value))
    return out


def broadcast(value, what: str = "sharing a result"):
    """Rank 0's value, on every rank."""
    if not _initialized():
        return value
    import torch.distributed as dist
    box = [value]
    _collective(what, lambda: dist.broadcast_object_list(box, src=0))
    return box[0]


def reduce_to_root(value, merge, what: str = "merging results"):
    """Rank 0: merge(...merge(merge(value of rank 0, value of rank 1), value of rank 2)..., value of rank W-1),
    received one rank at a time, so rank 0 holds two values at once and no other rank receives any (large float64
    moments go to the one rank that scores them). The other ranks send theirs and get None. One process: value."""
    if not _initialized():
        return value
    import torch.distributed as dist
    if rank() != 0:
        _collective(what, lambda: dist.send_object_list([value], dst=0))
        return None
    out = value
    for r in range(1, world_size()):
        box = [None]
        _collective(what, lambda: dist.recv_object_list(box, src=r))
        out = merge(out, box[0])
    return out


def on_root(fn, what: str = "sharing a result"):
    """fn() on rank 0 alone, its value on every rank; a UserError it raises is raised on every rank (the others
    would otherwise wait for a value that never comes)."""
    if not _initialized():
        return fn()
    value, error = None, None
    if rank() == 0:
        try:
            value = fn()
        except UserError as e:
            error = str(e)
    value, error = broadcast((value, error), what)
    if error is not None:
        raise UserError(error)
    return value


def _store():
    """The process group's key-value store, or None (one process; or torch's private call failed: then each rank
    counts and flags alone, nothing breaks)."""
    if not _initialized():
        return None
    try:
        from torch.distributed import distributed_c10d
        return distributed_c10d._get_default_store()
    except Exception:
        return None


class Counter:
    """A count that every rank adds to and any rank reads, kept in the process group's key-value store (the one
    torchrun's rendezvous already runs): no collective, so ranks doing unequal work never wait on each other, and a
    rank that dies leaves the others' adds answered by the store (torchrun's agent holds it). For one process, a
    plain integer. `name` must be the same on every rank (each rank makes its counters in the same order)."""

    def __init__(self, name: str, shared: bool = True):
        self.name, self._n = name, 0
        self._store = _store() if shared else None

    @property
    def shared(self) -> bool:
        return self._store is not None

    def add(self, n: int) -> int:
        """Add n (0 reads); the count after it."""
        if self._store is None:
            self._n += n
            return self._n
        return int(self._store.add(f"icr/{self.name}", int(n)))


class StopFlag:
    """A job-wide stop that any rank raises with a number (a timeline's failing step) and every rank reads, without
    waiting: each rank's lowest value under a key of its own in the process group's key-value store (as Counter), so
    no collective and no rank blocks on another. For one process (or without the store), this process's own."""

    def __init__(self, name: str):
        self.name, self._mine = name, None
        self._store = _store()

    def _key(self, r: int) -> str:
        return f"icr/{self.name}/{r}"

    def raise_(self, value: int) -> None:
        if self._mine is None or value < self._mine:
            self._mine = value
            self._ask(lambda: self._store.set(self._key(rank()), str(value)))

    def lowest(self) -> int | None:
        """The lowest value any rank has raised so far (None: none has)."""
        keys = [self._key(r) for r in range(world_size())]
        got = self._ask(lambda: [int(self._store.get(k)) for k in keys if self._store.check([k])])
        got = [*(got or []), *([] if self._mine is None else [self._mine])]
        return min(got) if got else None

    def _ask(self, fn):
        if self._store is None:
            return None
        try:
            return fn()
        except Exception:       # the store is gone (its host died): flag alone; the next collective says why
            self._store = None
            return None
