"""The no-op baseline: a trivial FastAPI ingress on Ray Serve, deployed beside RunnerHost in the same run.

Same Serve proxy, same Ray instance, same load client; it answers
``POST /noop/v1/events`` with a small JSON line and does nothing else. It gets
the same deployment options as the RunnerHost ingress (one replica, ``num_cpus=0``,
``max_ongoing_requests=256``), so the ratio e2e/no-op prices exactly what
RunnerHost adds on top of Serve.
"""
# no ``from __future__ import annotations``: FastAPI must see the real ``Request`` class
from fastapi import FastAPI, Request
from ray import serve

NOOP_APP = "bench-noop"
NOOP_PREFIX = "/noop"

api = FastAPI()


@serve.deployment(name="bench-noop", ray_actor_options={"num_cpus": 0}, max_ongoing_requests=256)
@serve.ingress(api)
class NoopIngress:
    @api.post("/v1/events")
    async def events(self, request: Request) -> dict:
        await request.body()
        return {"run_id": None, "type": "run.completed", "data": {}, "sequence": 0}


def noop_app():
    return NoopIngress.bind()
