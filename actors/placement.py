"""Where the host's actors go on a (possibly multi-node) Ray cluster.

Plain functions returning keyword arguments for ``ActorClass.options(...)``.

* **Control plane** — the StorageActor, RegistryActor and ProviderActor — is
  pinned to the *head* node, so losing a worker node never takes them down.
  The pin is a resource request on ``node:__internal_head__``, the resource
  Ray itself puts on the head node of every cluster (single-node ``ray.init()``
  included; it is how Ray Serve pins its own controller). A resource pin, not
  ``NodeAffinitySchedulingStrategy(head_node_id)``: these actors restart on
  death (``max_restarts=-1``), and a node-id pin would make a restart
  unschedulable forever once the head comes back with a new node id (GCS
  fault tolerance, a replaced KubeRay head pod); the resource is always on
  whatever node is the head now. If a cluster somehow has no head resource
  (none seen among alive nodes), the pin is dropped rather than leaving the
  actor pending.
* **Pools** — RunActors and runner workers — and **session actors** use
  ``SPREAD``: many cheap, replaceable actors; a node loss fails only the runs
  they were serving (retryable) and the pools create replacements elsewhere.
  Session actors are rebuilt from Postgres on the next turn.
"""
from __future__ import annotations

import os
from typing import Any

HEAD_RESOURCE = "node:__internal_head__"
# A sliver of the head's 1.0 unit: every control actor fits (1000 of them), none is starved.
HEAD_SLIVER = 0.001


def _head_resource_available() -> bool:
    import ray
    try:
        return HEAD_RESOURCE in ray.cluster_resources()
    except Exception:  # not connected / GCS hiccup: better unpinned than never scheduled
        return False


def head_pin() -> dict[str, Any]:
    """Unconditionally on the head node (every Ray cluster has one)."""
    return {"resources": {HEAD_RESOURCE: HEAD_SLIVER}}


def control_plane_options() -> dict[str, Any]:
    """Options for the storage, registry and provider actors: on the head node when there is one."""
    return head_pin() if _head_resource_available() else {}


#: The custom resource a RunActor claims: one unit per RunActor process (see ``node_run_slots``).
#: Every RunActor claims one, always; node types declare how many they offer (cluster.yaml,
#: deploy/rayservice.yaml), so a RunActor that finds none free stays PENDING_CREATION — the demand
#: the Ray autoscaler answers by adding a node of a type that declares slots.
RUN_SLOT_RESOURCE = "runnerhost_run_slot"
#: Memory one RunActor process takes, for sizing a node's slots (PSS measured by ``make bench``).
RUN_ACTOR_MEMORY_BYTES = 160 * 1024 * 1024
#: Share of a node's memory its RunActors may take (the rest: Ray, Serve, the storage actor, the OS).
RUN_ACTOR_MEMORY_SHARE = 0.6


def run_slot_claim() -> dict[str, Any]:
    """The resource request of every RunActor: one run slot."""
    return {"resources": {RUN_SLOT_RESOURCE: 1}}


def run_slots_for_memory(memory_bytes: int) -> int:
    """The slot rule: ``floor(memory × RUN_ACTOR_MEMORY_SHARE / RUN_ACTOR_MEMORY_BYTES)``, at least 1 —
    one slot per ~160 MiB of a RunActor budget that is 60 % of the node's memory (16 GiB → 61,
    4 GiB → 15). The node types of cluster.yaml and deploy/rayservice.yaml declare what it gives."""
    return max(1, int(memory_bytes * RUN_ACTOR_MEMORY_SHARE // RUN_ACTOR_MEMORY_BYTES))


def node_run_slots(configured: int = 0) -> int:
    """How many RunActors a node offers (``runnerhost_run_slot``): ``configured``, or, for 0, as many
    as fit in ``RUN_ACTOR_MEMORY_SHARE`` of this machine's memory (``run_slots_for_memory``)."""
    if configured > 0:
        return configured
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # no sysconf: a modest default
        return 16
    return run_slots_for_memory(total)


def local_ray_resources(configured: int = 0) -> dict[str, float]:
    """Custom resources of a single-node Ray that ``runnerhost serve`` (or a test, a bench) starts."""
    return {RUN_SLOT_RESOURCE: float(node_run_slots(configured))}


def pool_options(spread: bool = True) -> dict[str, Any]:
    """Scheduling of pooled RunActors and runner workers: spread over the nodes (``HostConfig.spread``)."""
    return {"scheduling_strategy": "SPREAD"} if spread else {}


def session_options() -> dict[str, Any]:
    """Scheduling of ConversationSessionActors: spread; a lost one is rebuilt from Postgres."""
    return {"scheduling_strategy": "SPREAD"}
