"""Storage ops of platform delivery, interactions, schedules and intake claims (SPEC §13).

Mixed into :class:`actors.core.storage_service.StorageService`, so the storage actor serves
them like every other op: ``write("delivery_record", {...})``, ``read("delivery_list", {...})``.
Each write is idempotent on its natural key or a compare-and-set, so a retried batch changes
nothing twice.
"""
from __future__ import annotations

from typing import Any

from protocol.schedules import ScheduleSpec
from store.claims import ClaimStore
from store.deliveries import DeliveryStore
from store.interactions import InteractionStore
from store.schedules import ScheduleStore

from .cron import next_tick


def _dump_all(models: list[Any]) -> list[dict[str, Any]]:
    return [m.model_dump(mode="json") for m in models]


class PlatformStorageOps:
    # -- delivery --------------------------------------------------------------------------
    async def w_delivery_open(self, session, *, run_id, target_key, part, platform, connection, target):
        return await DeliveryStore(session).open_part(run_id, target_key, part, platform=platform,
                                                      connection=connection, target=target)

    async def w_delivery_record(self, session, *, run_id, target_key, part, status, platform_message_id=None,
                                content=None, attempt=False, error=None) -> None:
        await DeliveryStore(session).record(run_id, target_key, part, status=status,
                                            platform_message_id=platform_message_id, content=content,
                                            attempt=attempt, error=error)

    async def r_delivery_parts(self, session, *, run_id, target_key):
        return await DeliveryStore(session).parts(run_id, target_key)

    async def r_delivery_list(self, session, *, run_id):
        return _dump_all(await DeliveryStore(session).list(run_id))

    # -- interactions ---------------------------------------------------------------------------
    async def w_interaction_create(self, session, **kwargs):
        return (await InteractionStore(session).create(**kwargs)).model_dump(mode="json")

    async def w_interaction_answer(self, session, *, id, answer, event_id):
        return (await InteractionStore(session).answer(id, answer=answer, event_id=event_id)).model_dump(mode="json")

    async def r_interaction_get(self, session, *, id):
        return await InteractionStore(session).get(id)

    async def r_interaction_origin(self, session, *, id):
        return await InteractionStore(session).origin(id)

    async def r_interaction_list(self, session, *, status=None, conversation_id=None, run_id=None, limit=50):
        return _dump_all(await InteractionStore(session).list(status=status, conversation_id=conversation_id,
                                                              run_id=run_id, limit=limit))

    # -- schedules --------------------------------------------------------------------------------
    async def w_schedule_replace(self, session, *, agent_id, schedules):
        specs = [ScheduleSpec.model_validate(s) for s in schedules]
        return _dump_all(await ScheduleStore(session).replace(agent_id, specs, next_tick))

    async def r_schedule_list(self, session, *, agent_id):
        return _dump_all(await ScheduleStore(session).list(agent_id))

    async def r_schedule_due(self, session, *, at, limit=100):
        return _dump_all(await ScheduleStore(session).due(at, limit))

    async def w_schedule_claim_tick(self, session, *, agent_id, schedule_id, tick, next_fire_at, owner,
                                    lease_s=60.0) -> bool:
        """Claim one tick of one schedule and move the schedule past it, in one transaction."""
        claimed = await ClaimStore(session).claim(f"schedule:{agent_id}/{schedule_id}", str(int(tick)),
                                                  owner, lease_s=lease_s)
        await ScheduleStore(session).advance(agent_id, schedule_id, next_fire_at=next_fire_at,
                                             fired_at=tick if claimed else None)
        return claimed

    # -- intake claims -------------------------------------------------------------------------------
    async def w_intake_claim(self, session, *, scope, key, owner, lease_s=60.0) -> bool:
        return await ClaimStore(session).claim(scope, key, owner, lease_s=lease_s)

    async def w_intake_finish(self, session, *, scope, key, owner, result=None) -> bool:
        return await ClaimStore(session).finish(scope, key, owner, result)

    async def w_intake_release(self, session, *, scope, key, owner) -> bool:
        return await ClaimStore(session).release(scope, key, owner)

    async def r_intake_get(self, session, *, scope, key):
        return await ClaimStore(session).get(scope, key)

    async def r_intake_unfinished(self, session, *, prefix, older_than):
        return await ClaimStore(session).unfinished(prefix, older_than)

    async def r_intake_count(self, session, *, scope):
        return await ClaimStore(session).count(scope)
