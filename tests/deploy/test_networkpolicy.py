"""`kubectl kustomize deploy/` renders the NetworkPolicies, and they admit exactly who
docs/deploy.md says: evaluated by a small model of NetworkPolicy ingress semantics over the
rendered objects (no cluster here), for a table of senders and ports."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_kustomize_render import kustomize_command

ROOT = Path(__file__).resolve().parents[2]
Obj = dict[str, Any]


# -- the model: which pod may open a TCP connection to which pod's port --------------------
@dataclass(frozen=True)
class Pod:
    namespace: str
    labels: Mapping[str, str]
    ports: Mapping[str, int] = field(default_factory=dict)  # named container ports


def selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """A LabelSelector; an empty (or absent, where the field allows it) one matches all."""
    selector = selector or {}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In":
            ok = key in labels and labels[key] in values
        elif op == "NotIn":
            ok = key not in labels or labels[key] not in values
        elif op == "Exists":
            ok = key in labels
        elif op == "DoesNotExist":
            ok = key not in labels
        else:
            raise ValueError(f"unknown selector operator {op}")
        if not ok:
            return False
    return True


def policy_types(policy: Obj) -> list[str]:
    spec = policy["spec"]
    return spec.get("policyTypes") or (["Ingress", "Egress"] if "egress" in spec else ["Ingress"])


def peer_matches(
    peer: Obj, policy_ns: str, src: Pod, ns_labels: Mapping[str, Mapping[str, str]]
) -> bool:
    if "ipBlock" in peer:
        return False  # senders are pods, matched by labels, never by address here
    labels_of_ns = {
        "kubernetes.io/metadata.name": src.namespace,
        **ns_labels.get(src.namespace, {}),
    }
    if "namespaceSelector" in peer:
        in_ns = selector_matches(peer["namespaceSelector"], labels_of_ns)
    else:
        in_ns = src.namespace == policy_ns  # a bare podSelector: the policy's own namespace
    return in_ns and selector_matches(peer.get("podSelector"), src.labels)


def port_matches(entry: Obj, port: int, dst: Pod) -> bool:
    if entry.get("protocol", "TCP") != "TCP":
        return False
    want = entry.get("port")
    if want is None:
        return True
    if isinstance(want, str):
        if want not in dst.ports:
            return False
        want = dst.ports[want]
    return bool(want <= port <= entry.get("endPort", want))


def can_reach(
    policies: list[Obj],
    src: Pod,
    dst: Pod,
    port: int,
    ns_labels: Mapping[str, Mapping[str, str]] | None = None,
) -> bool:
    """Whether NetworkPolicies let ``src`` open TCP ``port`` on ``dst`` (ingress side).

    No policy selecting ``dst`` for Ingress: allowed. Otherwise allowed when any rule of
    any selecting policy admits both the port and the sender (policies add up).
    """
    ns_labels = ns_labels or {}
    selecting = [
        p
        for p in policies
        if p["metadata"]["namespace"] == dst.namespace
        and "Ingress" in policy_types(p)
        and selector_matches(p["spec"]["podSelector"], dst.labels)
    ]
    if not selecting:
        return True
    for policy in selecting:
        for rule in policy["spec"].get("ingress") or []:
            ports = rule.get("ports")
            if ports and not any(port_matches(e, port, dst) for e in ports):
                continue
            peers = rule.get("from")
            ns = policy["metadata"]["namespace"]
            if not peers or any(peer_matches(p, ns, src, ns_labels) for p in peers):
                return True
    return False


def egress_restricted(policies: list[Obj], src: Pod) -> bool:
    return any(
        p["metadata"]["namespace"] == src.namespace
        and "Egress" in policy_types(p)
        and selector_matches(p["spec"]["podSelector"], src.labels)
        for p in policies
    )


# -- the model against hand-written policies -----------------------------------------------
def policy(
    ns: str, selector: Obj, ingress: list[Obj] | None, types: list[str] | None = None
) -> Obj:
    spec: Obj = {"podSelector": selector}
    if ingress is not None:
        spec["ingress"] = ingress
    if types is not None:
        spec["policyTypes"] = types
    return {"kind": "NetworkPolicy", "metadata": {"name": "p", "namespace": ns}, "spec": spec}


WEB = Pod("app", {"role": "web"}, {"http": 8080})
CLIENT = Pod("app", {"role": "client"})
OUTSIDER = Pod("other", {"role": "client"})


def test_model_no_policy_allows_everything() -> None:
    assert can_reach([], OUTSIDER, WEB, 8080)
    other_ns = policy("elsewhere", {}, [])
    assert can_reach([other_ns], OUTSIDER, WEB, 8080)


def test_model_empty_ingress_denies_all() -> None:
    deny = policy("app", {}, None, ["Ingress"])
    assert not can_reach([deny], CLIENT, WEB, 8080)
    egress_only = policy("app", {}, None, ["Egress"])
    assert can_reach([egress_only], CLIENT, WEB, 8080)
    assert egress_restricted([egress_only], CLIENT) and not egress_restricted([deny], CLIENT)


def test_model_peers_ports_and_selectors() -> None:
    rule = {
        "from": [{"podSelector": {"matchLabels": {"role": "client"}}}],
        "ports": [{"port": "http"}],
    }
    pols = [policy("app", {"matchLabels": {"role": "web"}}, [rule])]
    assert can_reach(pols, CLIENT, WEB, 8080)
    assert not can_reach(pols, CLIENT, WEB, 9090)  # another port
    assert not can_reach(pols, OUTSIDER, WEB, 8080)  # same labels, other namespace
    assert can_reach(pols, OUTSIDER, CLIENT, 8080)  # CLIENT is selected by no policy
    ranged = [policy("app", {}, [{"ports": [{"port": 9000, "endPort": 9010}]}])]
    assert can_reach(ranged, OUTSIDER, WEB, 9005) and not can_reach(ranged, OUTSIDER, WEB, 9011)
    udp = [policy("app", {}, [{"ports": [{"port": 8080, "protocol": "UDP"}]}])]
    assert not can_reach(udp, CLIENT, WEB, 8080)


def test_model_namespace_and_pod_selector_in_one_peer_need_both() -> None:
    both = {
        "namespaceSelector": {"matchLabels": {"team": "a"}},
        "podSelector": {"matchLabels": {"role": "client"}},
    }
    pols = [policy("app", {}, [{"from": [both]}])]
    labels = {"other": {"team": "a"}}
    assert can_reach(pols, OUTSIDER, WEB, 1, labels)
    assert not can_reach(pols, Pod("other", {"role": "x"}), WEB, 1, labels)
    assert not can_reach(pols, OUTSIDER, WEB, 1, {})
    by_name = [
        policy(
            "app",
            {},
            [
                {
                    "from": [
                        {
                            "namespaceSelector": {
                                "matchLabels": {"kubernetes.io/metadata.name": "other"}
                            }
                        }
                    ]
                }
            ],
        )
    ]
    assert can_reach(by_name, OUTSIDER, WEB, 1) and not can_reach(by_name, CLIENT, WEB, 1)
    ip_only = [policy("app", {}, [{"from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}])]
    assert not can_reach(ip_only, CLIENT, WEB, 1)


@pytest.mark.parametrize(
    ("expr", "labels", "ok"),
    [
        ({"key": "a", "operator": "In", "values": ["1", "2"]}, {"a": "2"}, True),
        ({"key": "a", "operator": "In", "values": ["1"]}, {}, False),
        ({"key": "a", "operator": "NotIn", "values": ["1"]}, {}, True),
        ({"key": "a", "operator": "NotIn", "values": ["1"]}, {"a": "1"}, False),
        ({"key": "a", "operator": "Exists"}, {"a": ""}, True),
        ({"key": "a", "operator": "Exists"}, {}, False),
        ({"key": "a", "operator": "DoesNotExist"}, {}, True),
        ({"key": "a", "operator": "DoesNotExist"}, {"a": "1"}, False),
    ],
)
def test_model_match_expressions(expr: Obj, labels: dict[str, str], ok: bool) -> None:
    assert selector_matches({"matchExpressions": [expr]}, labels) is ok


def test_model_refuses_unknown_operators() -> None:
    with pytest.raises(ValueError):
        selector_matches({"matchExpressions": [{"key": "a", "operator": "Gt"}]}, {})


# -- the rendered deploy/ -----------------------------------------------------------------
@pytest.fixture(scope="module")
def rendered() -> list[Obj]:
    proc = subprocess.run(
        [*kustomize_command(), str(ROOT / "deploy")], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


@pytest.fixture(scope="module")
def policies(rendered: list[Obj]) -> list[Obj]:
    pols = [d for d in rendered if d["kind"] == "NetworkPolicy"]
    assert {p["metadata"]["name"] for p in pols} >= {
        "vigil-default-deny-ingress",
        "vigil-agent",
        "vigil-rollback-controller",
    }
    return pols


def workload_pod(rendered: list[Obj], kind: str, name: str) -> tuple[Pod, Obj]:
    (obj,) = [d for d in rendered if d["kind"] == kind and d["metadata"]["name"] == name]
    template = obj["spec"]["template"]
    ports = {
        p["name"]: p["containerPort"]
        for c in template["spec"]["containers"]
        for p in c.get("ports", [])
        if "name" in p
    }
    return Pod(obj["metadata"]["namespace"], template["metadata"]["labels"], ports), template[
        "spec"
    ]


@pytest.fixture(scope="module")
def agent(rendered: list[Obj]) -> Pod:
    return workload_pod(rendered, "DaemonSet", "vigil-agent")[0]


@pytest.fixture(scope="module")
def controller(rendered: list[Obj]) -> Pod:
    return workload_pod(rendered, "Deployment", "vigil-rollback-controller")[0]


def test_agent_keeps_host_pid_without_host_network(rendered: list[Obj]) -> None:
    """hostPID is what py-spy and the BPF pid maps need; hostNetwork would take port 9475
    off the pod network, where no NetworkPolicy applies."""
    _, spec = workload_pod(rendered, "DaemonSet", "vigil-agent")
    assert spec.get("hostPID") is True
    assert not spec.get("hostNetwork", False)
    _, spec = workload_pod(rendered, "Deployment", "vigil-rollback-controller")
    assert not spec.get("hostNetwork", False)


def test_agent_and_controller_listen_where_the_policies_open(agent: Pod, controller: Pod) -> None:
    assert 9475 in agent.ports.values()
    assert 9476 in controller.ports.values()


PROMETHEUS = Pod(
    "monitoring",
    {"app.kubernetes.io/name": "prometheus", "prometheus": "monitoring-kube-prometheus-prometheus"},
)
ALERTMANAGER = Pod(
    "monitoring",
    {
        "app.kubernetes.io/name": "alertmanager",
        "alertmanager": "monitoring-kube-prometheus-alertmanager",
    },
)
GRAFANA = Pod("monitoring", {"app.kubernetes.io/name": "grafana"})
STRANGER = Pod("default", {"app": "curl"})
# Right labels, wrong namespace: whoever can create pods somewhere is not Alertmanager.
FAKE_ALERTMANAGER = Pod("default", {"app.kubernetes.io/name": "alertmanager"})
INFERENCE = Pod("inference", {"app": "ranker"})
UNLABELLED_INFERENCE = Pod("batch", {"app": "ranker"})
NAMESPACES = {"inference": {"vigil.dev/drift-ingest": "enabled"}}

CASES = [
    # sender, target, port, allowed
    (PROMETHEUS, "agent", 9475, True),  # scrapes /metrics
    (GRAFANA, "agent", 9475, True),  # the monitoring namespace as a whole
    (STRANGER, "agent", 9475, False),
    (FAKE_ALERTMANAGER, "agent", 9475, False),
    (INFERENCE, "agent", 9475, True),  # drift samples, namespace opted in
    (UNLABELLED_INFERENCE, "agent", 9475, False),
    (PROMETHEUS, "agent", 9476, False),  # only the agent's port is open
    (ALERTMANAGER, "controller", 9476, True),  # the webhook
    (PROMETHEUS, "controller", 9476, True),  # the controller's ServiceMonitor
    (GRAFANA, "controller", 9476, False),
    (STRANGER, "controller", 9476, False),
    (FAKE_ALERTMANAGER, "controller", 9476, False),
    (INFERENCE, "controller", 9476, False),
]


@pytest.mark.parametrize(("src", "target", "port", "allowed"), CASES)
def test_who_reaches_which_port(
    policies: list[Obj],
    agent: Pod,
    controller: Pod,
    src: Pod,
    target: str,
    port: int,
    allowed: bool,
) -> None:
    dst = agent if target == "agent" else controller
    assert can_reach(policies, src, dst, port, NAMESPACES) is allowed


def test_nothing_in_the_namespace_reaches_the_controller(
    policies: list[Obj], agent: Pod, controller: Pod
) -> None:
    """A compromised agent (root on a node) gets no path to the rollback webhook."""
    assert not can_reach(policies, agent, controller, 9476, NAMESPACES)
    new_pod = Pod("vigil", {"app": "debug"})
    assert not can_reach(policies, PROMETHEUS, new_pod, 8080, NAMESPACES)  # default deny


def test_egress_to_the_api_server_stays_open(
    policies: list[Obj], agent: Pod, controller: Pod
) -> None:
    """The controller patches Deployments and the agent lists pods through the API server,
    whose address is the cluster's: no policy restricts their egress."""
    assert not egress_restricted(policies, controller)
    assert not egress_restricted(policies, agent)
