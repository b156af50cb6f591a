"""The Edge store's HNSW index builds: in a child process on a copy of the shard, then swapped in.

qdrant-edge-py 0.9.0 holds the GIL for the whole of `optimize()` (an HNSW build of 100k points takes about a minute
on 2 cores), so the build runs in a child process on a copy of the shard; writes arriving meanwhile are applied to
the live shard and replayed on the copy, a slice at a time between other engine calls, before it replaces the live
one. The swap's atomic step is meta.json naming the copy; disk.recover_swap cleans up after a crash on either side.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import sys
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import qdrant_edge as qe

from service.store.edge.collection import Collection
from service.store.edge.disk import META, SHARD, write_json

log = logging.getLogger(__name__)

# The replay of writes made during a build runs in slices of about this long on the store thread; searches queued
# meanwhile run between slices, so none waits much longer than a slice (or the final swap) for the replay.
_REPLAY_SLICE_S = 0.05
# The copy is flushed in a slice of its own whenever more replayed points than this are unflushed (a flush costs about
# its unflushed data), and the swap (flush, point meta.json at the copy) is taken only below it.
_SWAP_UNFLUSHED_POINTS = 5_000
# When the replay's backlog has not shrunk by a tenth over this many slices (writes outpace it), writes are held
# (searches are not) until the copy has caught up and is swapped in.
_REPLAY_SLICES_BEFORE_HOLD = 40
# The child process that builds the HNSW index: low priority, so that searches keep the CPU.
_BUILD_SCRIPT = (
    "import os, sys; os.nice(10); from qdrant_edge import EdgeShard; "
    "s = EdgeShard.load(sys.argv[1]); s.optimize(); s.close()"
)


class IndexBuilder:
    """The background index builds of one store's collections.

    `call` runs a function on the store thread (every step that touches a shard goes through it); `collections` is
    the store's open collections, in which a build finds its own (a collection dropped meanwhile is not there, or
    is of another generation: the build is given up); `get` opens a collection by name.
    """

    def __init__(
        self,
        call: Callable[..., Awaitable[Any]],
        collections: dict[str, Collection],
        get: Callable[[str], Collection],
        index_threshold: int,
    ) -> None:
        self._call = call
        self._open = collections
        self._get = get
        self._index_threshold = index_threshold
        # Collections whose writes wait for a replay that they outpaced (see _replay_and_swap).
        self._write_holds: dict[str, asyncio.Event] = {}

    async def writable(self, name: str) -> None:
        """Returns once writes to the collection are not held."""
        hold = self._write_holds.get(name)
        if hold is not None:
            await hold.wait()

    def due(self, collection: Collection) -> bool:
        """After a write, on the store thread: True when enough points are outside the HNSW index for a build
        (`build` is to be started) and none runs."""
        if collection.building:
            return False
        points, indexed = collection.dense_index()
        # Marked here, on the store thread, so that the next write does not start a second build.
        collection.building = points - indexed >= self._index_threshold
        return collection.building

    async def build(self, name: str) -> None:
        """Builds and swaps in the collection's index, again while the writes made meanwhile are enough for one."""
        try:
            again = True
            while again:
                again = await self._build_once(name)
        except asyncio.CancelledError:
            await asyncio.shield(self._call(self._abandon_build, name))
            raise
        except Exception:
            log.exception("HNSW build of %s failed; the collection stays searchable by full scan", name)
            await self._call(self._abandon_build, name)

    async def _build_once(self, name: str) -> bool:
        generation, build_dir = await self._call(self._start_build, name)
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _BUILD_SCRIPT,
            str(build_dir),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            _, stderr = await child.communicate()
        except asyncio.CancelledError:
            child.kill()
            await child.wait()
            raise
        opened = await self._call(self._open_built, name, generation, child.returncode == 0, stderr.decode()[-2000:])
        return opened and await self._replay_and_swap(name, generation)

    def _start_build(self, name: str) -> tuple[int, Path]:
        collection = self._get(name)
        collection.shard.flush()
        build = collection.folder / f"{SHARD}.{uuid.uuid4().hex[:8]}"
        live = collection.folder / collection.meta.get("shard", SHARD)
        shutil.copytree(live, build)
        collection.build_dir = build
        collection.pending = deque()
        log.info("building the HNSW index of %s in the background", name)
        return collection.generation, build

    def _open_built(self, name: str, generation: int, ok: bool, stderr: str) -> bool:
        """Opens the built copy for the replay; False when there is nothing to swap in."""
        collection = self._open.get(name)
        if collection is None or collection.generation != generation or collection.build_dir is None:
            return False  # dropped meanwhile
        if not ok:
            log.error("HNSW build of %s failed: %s", name, stderr)
            self._abandon_build(name)
            return False
        collection.built = qe.EdgeShard.load(str(collection.build_dir))
        collection.unflushed = 0
        return True

    async def _replay_and_swap(self, name: str, generation: int) -> bool:
        """Replays the writes made during the build on the copy, one slice per store-thread call, then swaps.

        Each call is queued behind whatever searches and writes are waiting, so they run between slices. Writes keep
        arriving (and queueing for the replay) meanwhile; if they outpace it, they are held until it has caught up.
        """
        slices, window_start = 0, float("inf")
        try:
            while True:
                done, again, backlog = await self._call(self._replay_slice, name, generation)
                if done:
                    await asyncio.to_thread(self._delete_retired, name)
                    return again
                slices += 1
                if slices % _REPLAY_SLICES_BEFORE_HOLD == 1:
                    window_start = backlog
                elif (
                    slices % _REPLAY_SLICES_BEFORE_HOLD == 0
                    and backlog > 0.9 * window_start
                    and name not in self._write_holds
                ):
                    log.warning("writes to %s outpace the replay after its index build: holding them", name)
                    self._write_holds[name] = asyncio.Event()
        finally:
            hold = self._write_holds.pop(name, None)
            if hold is not None:
                hold.set()

    def _replay_slice(self, name: str, generation: int) -> tuple[bool, bool, int]:
        """One slice of the replay; (swapped or given up, another build needed, operations left to replay)."""
        collection = self._open.get(name)
        if collection is None or collection.generation != generation or collection.built is None:
            return True, False, 0
        built, pending = collection.built, collection.pending
        assert pending is not None
        if collection.unflushed > _SWAP_UNFLUSHED_POINTS:
            built.flush()  # a slice of its own, so that no flush (the swap's included) has much to write
            collection.unflushed = 0
            return False, False, len(pending)
        deadline = time.perf_counter() + _REPLAY_SLICE_S
        while pending:  # at least one operation per slice, so that the replay always advances
            operation, points = pending[0]
            built.update(operation)
            pending.popleft()  # only once applied: an engine error leaves it queued (and the build is abandoned)
            collection.unflushed += points
            if time.perf_counter() >= deadline:
                break
        if pending or collection.unflushed > _SWAP_UNFLUSHED_POINTS:
            return False, False, len(pending)
        return True, self._swap(collection), 0

    def _swap(self, collection: Collection) -> bool:
        """Makes the caught-up copy the live shard; True when enough unindexed points came since for another build."""
        built, build_dir = collection.built, collection.build_dir
        assert built is not None and build_dir is not None
        built.flush()
        # From here the copy holds every acknowledged write. Pointing meta.json at it is the atomic step: a crash
        # before leaves the old live shard (with every write) and a leftover copy, after it the copy; opening the
        # collection deletes whichever is left over (disk.recover_swap).
        old = collection.folder / collection.meta.get("shard", SHARD)
        collection.meta["shard"] = build_dir.name
        write_json(collection.folder / META, collection.meta)
        # The copy is the live shard before anything else can fail: an abandoned build must not delete it.
        replaced, collection.shard, collection.built, collection.build_dir = collection.shard, built, None, None
        collection.pending = None
        replaced.close()
        collection.retired = old
        points, indexed = collection.dense_index()
        log.info("HNSW index of %s built: %d of %d points indexed", collection.name, indexed, points)
        collection.building = points - indexed >= self._index_threshold
        return collection.building

    def _delete_retired(self, name: str) -> None:
        collection = self._open.get(name)
        retired = collection.retired if collection else None
        if retired is not None:
            collection.retired = None
            shutil.rmtree(retired, ignore_errors=True)

    def _abandon_build(self, name: str) -> None:
        collection = self._open.get(name)
        if collection is not None:
            collection.building = False
            collection.pending = None
            if collection.built is not None:
                collection.built.close()
                collection.built = None
            if collection.build_dir is not None:
                shutil.rmtree(collection.build_dir, ignore_errors=True)
                collection.build_dir = None
