"""The frozen authorization snapshot: intersection rules and call checks (SPEC §3)."""
import time

import pytest

from actors.core.authz import ResourceCatalog, compute_access
from protocol.agents import AgentBinding, AgentConfig, ResourcePolicy, StatePolicy
from protocol.errors import ErrorCode, RunnerHostError
from protocol.manifest import Capabilities, Permissions, RunnerManifest
from protocol.read_scope import ReadScope

CATALOG = ResourceCatalog(models={"gpt": {"provider": "openai"}, "small": {}},
                          tools={"calculator": {"description": "math", "parameters": {"type": "object"}},
                                 "shell": {}},
                          knowledge_bases=["docs", "hr"])


def manifest(**perms):
    return RunnerManifest(id="plugin:t/r/default", label="t",
                          capabilities=Capabilities(steering=True),
                          permissions=Permissions(**perms))


def binding(**policy):
    cfg = AgentConfig(runner_id="plugin:t/r/default", resource_policy=ResourcePolicy(**policy))
    return AgentBinding.from_agent("a", cfg)


def snap(m=None, b=None, conversation_id="c1", **kw):
    return compute_access(run_id="r1", manifest=m or manifest(), binding=b or binding(),
                          conversation_id=conversation_id, thread_id=None, catalog=CATALOG, **kw)


def test_models_are_the_intersection_of_manifest_policy_and_catalog():
    s = snap(manifest(models=["invoke"]), binding(models=["gpt", "missing"]))
    assert s.models == {"gpt": frozenset({"invoke"})}
    s.check_model("gpt", "invoke")
    with pytest.raises(RunnerHostError) as e:
        s.check_model("gpt", "stream")
    assert e.value.code is ErrorCode.UNAUTHORIZED
    with pytest.raises(RunnerHostError):
        s.check_model("small", "invoke")


def test_none_policy_means_everything_the_host_has_but_manifest_still_caps():
    s = snap(manifest(tools=["call"]), binding(tools=None))
    assert set(s.tools) == {"calculator", "shell"}
    assert snap(manifest(), binding(tools=None)).tools == {}


def test_runner_config_selection_narrows():
    cfg = AgentConfig(runner_id="plugin:t/r/default", runner_config={"knowledge_bases": ["docs"]},
                      resource_policy=ResourcePolicy(knowledge_bases=None))
    s = snap(manifest(knowledge_bases=["retrieve"]), AgentBinding.from_agent("a", cfg))
    assert set(s.knowledge_bases) == {"docs"}


def test_history_of_another_conversation_is_unauthorized_unless_granted():
    s = snap(manifest(history=["page"]))
    assert s.check_history("page", None) == "c1"
    with pytest.raises(RunnerHostError) as e:
        s.check_history("page", "other")
    assert e.value.code is ErrorCode.UNAUTHORIZED
    with pytest.raises(RunnerHostError):
        s.check_history("search", None)
    wide = snap(manifest(history=["page"]), binding(cross_conversation_history=True))
    assert wide.check_history("page", "other") == "other"


def test_state_needs_permission_policy_and_scope():
    s = snap(manifest(state=["read"]))
    s.check_state("conversation", "read")
    with pytest.raises(RunnerHostError):
        s.check_state("conversation", "write")
    cfg = AgentConfig(runner_id="plugin:t/r/default", state_policy=StatePolicy(state_scopes=["actor"]))
    narrow = snap(manifest(state=["read", "write"]), AgentBinding.from_agent("a", cfg))
    with pytest.raises(RunnerHostError):
        narrow.check_state("conversation", "read")
    off = AgentConfig(runner_id="plugin:t/r/default", state_policy=StatePolicy(enable_state=False))
    assert snap(manifest(state=["read"]), AgentBinding.from_agent("a", off)).state_scopes == frozenset()


def test_steering_needs_capability_permission_and_policy():
    assert snap(manifest(steering=["pull"])).steering is True
    assert snap(manifest()).steering is False
    assert snap(manifest(steering=["pull"]), binding(steering=False)).steering is False


def test_available_apis_and_resources_mirror_the_snapshot():
    s = snap(manifest(history=["page"], tools=["call", "detail"], steering=["pull"]), binding(tools=["calculator"]))
    apis = s.available_apis()
    assert apis.history_page and not apis.history_search and apis.steering_pull and not apis.storage
    res = s.resources(CATALOG)
    assert [t.tool_name for t in res.tools] == ["calculator"]
    assert res.tools[0].parameters == {"type": "object"}
    assert res.tools[0].operations == ["call", "detail"]


def test_deadline_and_payload_checks():
    s = snap(deadline_at=time.time() - 1)
    with pytest.raises(RunnerHostError) as e:
        s.check_deadline()
    assert e.value.code is ErrorCode.DEADLINE_EXCEEDED
    with pytest.raises(RunnerHostError) as e:
        snap().check_payload(10 << 20)
    assert e.value.code is ErrorCode.PAYLOAD_TOO_LARGE


def test_snapshot_is_frozen():
    s = snap()
    with pytest.raises(Exception):
        s.models = {}  # type: ignore[misc]


def test_a_conversation_less_run_reads_only_its_own_run():
    s = snap(manifest(events=["get", "page"], history=["page"]), conversation_id=None)
    assert s.history == frozenset()  # no conversation, no history
    own = s.check_events("page", None, bot_id="b1")
    assert own == ReadScope.of_run("r1", bot_id="b1")  # never "no filter"
    assert not own.admits(conversation_id=None, run_id="r2")
    assert not own.admits(conversation_id="c1", run_id=None)
    assert own.admits(conversation_id=None, run_id="r1", bot_id="b1")
    with pytest.raises(RunnerHostError) as e:
        s.check_events("page", "c1")  # naming a conversation needs the cross-conversation grant
    assert e.value.code is ErrorCode.UNAUTHORIZED
    assert s.lookup_scope() == ReadScope(run_id="r1")


def test_read_scopes_stay_inside_the_bot_and_need_the_grant_for_other_conversations():
    s = snap(manifest(events=["page"]))
    scope = s.read_scope(None, bot_id="b1", workspace_id="w1")
    assert scope.admits(conversation_id="c1", bot_id="b1") and scope.admits(conversation_id="c1")
    assert not scope.admits(conversation_id="c1", bot_id="b2")
    assert not scope.admits(conversation_id="c1", workspace_id="w2")
    with pytest.raises(RunnerHostError):
        s.read_scope("c2")
    wide = snap(manifest(events=["page"]), binding(cross_conversation_history=True))
    assert wide.read_scope("c2") == ReadScope.of_conversation("c2")
    assert wide.lookup_scope().admits(conversation_id="c9")
    assert not wide.lookup_scope(cross_conversation=False).admits(conversation_id="c9")


def test_a_read_scope_must_name_what_it_reads():
    with pytest.raises(ValueError):
        ReadScope()
    assert ReadScope.host().admits(conversation_id="anything")
