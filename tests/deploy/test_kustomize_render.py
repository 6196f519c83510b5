"""`kubectl kustomize deploy/` renders, and what it renders is what a cluster admin is promised:
an unprivileged agent with four capabilities, least-privilege RBAC, one rollback controller;
the overlays in deploy-overlays/ render too, and everything built in to Kubernetes passes
strict schema validation (unknown fields rejected)."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent import __version__
from agent.collectors import SPECS
from agent.config import from_env, resolve

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
OVERLAYS = ROOT / "deploy-overlays"
AGENT_CAPS = {"BPF", "PERFMON", "SYS_PTRACE", "SYS_RESOURCE"}
# mountPath in the agent -> hostPath on the node, all read-only.
HOST_MOUNTS = {"/host": "/", "/sys/kernel/tracing": "/sys/kernel/tracing",
               "/sys/kernel/debug": "/sys/kernel/debug"}  # fmt: skip
# Paths every Linux node has: a hostPath of type Directory elsewhere (/usr/src) keeps the
# pod from starting on images without it.
ON_EVERY_NODE = {"/", "/sys/kernel/tracing", "/sys/kernel/debug"}


def kustomize_command() -> list[str]:
    """A real kustomize: `kubectl kustomize` (built in since kubectl 1.14) or `kustomize build`."""
    kubectl = shutil.which("kubectl")
    if kubectl:
        return [kubectl, "kustomize"]
    kustomize = shutil.which("kustomize")
    if kustomize:
        return [kustomize, "build"]
    pytest.fail(
        "no kubectl or kustomize on PATH: install one (Debian: apt-get install "
        "kubernetes-client) to render deploy/"
    )


def render(path: Path) -> list[dict[str, Any]]:
    proc = subprocess.run(
        [*kustomize_command(), str(path)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    # "Renders cleanly": no deprecation or other warnings either.
    assert proc.stderr.strip() == "", proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    return render(DEPLOY)


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    for d in docs:
        if d["kind"] == kind and d["metadata"]["name"] == name:
            return d
    raise AssertionError(f"{kind}/{name} not rendered")


def containers(obj: dict[str, Any]) -> Iterator[dict[str, Any]]:
    spec = obj["spec"]["template"]["spec"]
    yield from spec.get("initContainers", [])
    yield from spec["containers"]


def test_nothing_is_privileged(rendered: list[dict[str, Any]]) -> None:
    def walk(node: Any, path: str) -> Iterator[str]:
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "privileged" and v is True:
                    yield path
                yield from walk(v, f"{path}.{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                yield from walk(v, f"{path}[{i}]")

    hits = [p for d in rendered for p in walk(d, f"{d['kind']}/{d['metadata']['name']}")]
    assert hits == []


def test_agent_daemonset_security(rendered: list[dict[str, Any]]) -> None:
    ds = find(rendered, "DaemonSet", "vigil-agent")
    pod = ds["spec"]["template"]["spec"]
    assert pod["hostPID"] is True
    assert not pod.get("hostNetwork")
    (agent,) = pod["containers"]
    sc = agent["securityContext"]
    assert sc.get("privileged", False) is False
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert set(sc["capabilities"]["add"]) == AGENT_CAPS
    # Each capability carries its reason next to it.
    text = (DEPLOY / "agent-daemonset.yaml").read_text()
    for cap in AGENT_CAPS:
        before = text[: text.index(f"- {cap}\n")].rstrip().splitlines()[-1].strip()
        assert before.startswith("#"), f"capability {cap} has no comment saying why"


def test_agent_runs_on_gpu_nodes_with_bcc_mounts(rendered: list[dict[str, Any]]) -> None:
    pod = find(rendered, "DaemonSet", "vigil-agent")["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]
    volumes = {v["name"]: v for v in pod["volumes"]}
    (agent,) = pod["containers"]
    mounts = {m["mountPath"]: m for m in agent["volumeMounts"]}
    for path, host_path in HOST_MOUNTS.items():
        assert mounts[path].get("readOnly") is True, path
        assert volumes[mounts[path]["name"]]["hostPath"]["path"] == host_path
    # Everything the agent writes goes to a volume: the root filesystem is read-only.
    assert "/tmp" in mounts and "/var/lib/vigil" in mounts


def test_agent_env_is_valid_configuration(rendered: list[dict[str, Any]]) -> None:
    (agent,) = find(rendered, "DaemonSet", "vigil-agent")["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in agent["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert env["VIGIL_KUBERNETES_NODE_NAME"]["value"] == "$(NODE_NAME)"
    # Every VIGIL_* variable is one the agent knows, with a value it accepts.
    plain = {k: e["value"] for k, e in env.items() if k.startswith("VIGIL_") and "value" in e}
    plain["VIGIL_KUBERNETES_NODE_NAME"] = "gpu-node-1"
    cfg = resolve(SPECS, env_values=from_env(plain, SPECS))
    assert cfg.get("kubernetes.mode") == "on"
    assert cfg.get("kubernetes.node-name") == "gpu-node-1"
    port = int(cfg.listen.rsplit(":", 1)[1])
    ports = {p["name"]: p["containerPort"] for p in agent["ports"]}
    assert ports["metrics"] == port
    assert agent["args"] == ["run"]


def test_agent_probes_and_resources(rendered: list[dict[str, Any]]) -> None:
    (agent,) = find(rendered, "DaemonSet", "vigil-agent")["spec"]["template"]["spec"]["containers"]
    assert agent["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert agent["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert agent["startupProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert agent[probe]["httpGet"]["port"] == "metrics"
    for kind in ("requests", "limits"):
        assert set(agent["resources"][kind]) == {"cpu", "memory"}


def test_images_are_this_version(rendered: list[dict[str, Any]]) -> None:
    for kind, name in (("DaemonSet", "vigil-agent"), ("Deployment", "vigil-rollback-controller")):
        for c in containers(find(rendered, kind, name)):
            assert c["image"] == f"ghcr.io/vigil-agent/vigil:{__version__}"


def rules_of(docs: list[dict[str, Any]], kind: str, name: str) -> set[tuple[str, str, str, str]]:
    out = set()
    for rule in find(docs, kind, name)["rules"]:
        for group in rule.get("apiGroups", [""]):
            for res in rule["resources"]:
                for verb in rule["verbs"]:
                    for rn in rule.get("resourceNames", ["*"]):
                        out.add((group, res, verb, rn))
    return out


def test_agent_rbac_is_read_only_pods(rendered: list[dict[str, Any]]) -> None:
    assert rules_of(rendered, "ClusterRole", "vigil-agent") == {
        ("", "pods", "get", "*"),
        ("", "pods", "list", "*"),
        ("", "pods", "watch", "*"),
    }
    binding = find(rendered, "ClusterRoleBinding", "vigil-agent")
    ds = find(rendered, "DaemonSet", "vigil-agent")
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": ds["spec"]["template"]["spec"]["serviceAccountName"],
            "namespace": ds["metadata"]["namespace"],
        }
    ]
    # No other binding grants the agent anything.
    for d in rendered:
        if d["kind"] in ("RoleBinding", "ClusterRoleBinding") and d["metadata"]["name"] != (
            "vigil-agent"
        ):
            assert all(s["name"] != "vigil-agent" for s in d["subjects"])


def test_rollback_controller_rbac_matches_its_actions(rendered: list[dict[str, Any]]) -> None:
    # Rights on Deployments are granted per namespace (tests/deploy/test_rollback_rbac.py).
    assert rules_of(rendered, "Role", "vigil-rollback-controller-lease") == {
        ("coordination.k8s.io", "leases", "create", "*"),
        ("coordination.k8s.io", "leases", "get", "vigil-rollback-controller"),
        ("coordination.k8s.io", "leases", "update", "vigil-rollback-controller"),
    }


def test_one_rollback_controller_at_a_time(rendered: list[dict[str, Any]]) -> None:
    dep = find(rendered, "Deployment", "vigil-rollback-controller")
    assert dep["spec"]["replicas"] == 1
    # RollingUpdate would run the new pod beside the old one for a while.
    assert dep["spec"]["strategy"]["type"] == "Recreate"
    pod = dep["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    (c,) = pod["containers"]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    # The journal survives the pod.
    volumes = {v["name"]: v for v in pod["volumes"]}
    journal = next(m for m in c["volumeMounts"] if m["mountPath"] == "/var/lib/vigil")
    claim = volumes[journal["name"]]["persistentVolumeClaim"]["claimName"]
    find(rendered, "PersistentVolumeClaim", claim)


def test_rollback_is_armed_end_to_end(rendered: list[dict[str, Any]]) -> None:
    """Alertmanager's route, the controller's Service and its token all line up."""
    dep = find(rendered, "Deployment", "vigil-rollback-controller")
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    token_mount = next(m for m in c["volumeMounts"] if volumes[m["name"]].get("secret"))
    secret_volume = volumes[token_mount["name"]]["secret"]
    secret = secret_volume["secretName"]
    config_map = find(rendered, "ConfigMap", "vigil-rollback-controller")
    config = yaml.safe_load(config_map["data"]["rollback.yaml"])
    assert config["token_file"].startswith(token_mount["mountPath"] + "/")
    file_name = config["token_file"][len(token_mount["mountPath"]) + 1 :]
    (token_key,) = [i["key"] for i in secret_volume["items"] if i["path"] == file_name]
    # The agent gets the ingest token of the same Secret, never the rollback token.
    agent_pod = find(rendered, "DaemonSet", "vigil-agent")["spec"]["template"]["spec"]
    for v in agent_pod["volumes"]:
        if v.get("secret", {}).get("secretName") == secret:
            assert [i["key"] for i in v["secret"]["items"]] == ["ingest"]
    amc = find(rendered, "AlertmanagerConfig", "vigil-rollback")
    assert {"name": "action", "value": "rollback"} in amc["spec"]["route"]["matchers"]
    (hook,) = amc["spec"]["receivers"][0]["webhookConfigs"]
    assert hook["httpConfig"]["authorization"]["credentials"] == {"name": secret, "key": token_key}
    svc = find(rendered, "Service", "vigil-rollback-controller")
    port = svc["spec"]["ports"][0]["port"]
    assert hook["url"] == f"http://{svc['metadata']['name']}.vigil.svc:{port}/v1/alerts"
    assert config["listen"] == f":{port}"
    assert svc["spec"]["selector"].items() <= pod_labels(dep).items()


def test_rollback_config_is_accepted_by_the_controller(
    rendered: list[dict[str, Any]], tmp_path: Path
) -> None:
    from agent.rollback.config import load

    config_map = find(rendered, "ConfigMap", "vigil-rollback-controller")
    doc = yaml.safe_load(config_map["data"]["rollback.yaml"])
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    token.chmod(0o400)  # as the Secret volume's defaultMode makes it
    doc["token_file"] = str(token)  # where the Secret is mounted in the pod
    path = tmp_path / "rollback.yaml"
    path.write_text(yaml.safe_dump(doc))
    cfg = load(file=str(path), env={})
    assert cfg.token == "s3cret"
    assert {t.action for t in cfg.targets.values()} == {"kubernetes_workload"}
    dep = find(rendered, "Deployment", "vigil-rollback-controller")
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert c["args"][:3] == ["rollback-controller", "--config", "/etc/vigil/rollback.yaml"]


def pod_labels(obj: dict[str, Any]) -> dict[str, str]:
    return dict(obj["spec"]["template"]["metadata"]["labels"])


def test_metrics_are_scraped_with_their_own_pod_labels(rendered: list[dict[str, Any]]) -> None:
    ds = find(rendered, "DaemonSet", "vigil-agent")
    svc = find(rendered, "Service", "vigil-agent")
    assert svc["spec"]["selector"].items() <= pod_labels(ds).items()
    sm = find(rendered, "ServiceMonitor", "vigil-agent")
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    (ep,) = sm["spec"]["endpoints"]
    assert ep["port"] in {p["name"] for p in svc["spec"]["ports"]}
    # The inference pod's pod/namespace/container labels win over the agent pod's.
    assert ep["honorLabels"] is True
    relabel = {r.get("targetLabel"): r for r in ep["relabelings"]}
    assert relabel["node"]["sourceLabels"] == ["__meta_kubernetes_pod_node_name"]
    assert "cluster" in relabel
    drop = next(r for r in ep["relabelings"] if r.get("action") == "labeldrop")
    assert set(drop["regex"].split("|")) >= {"pod", "namespace", "container"}


def test_generated_parts_are_included_verbatim(rendered: list[dict[str, Any]]) -> None:
    rule = yaml.safe_load((DEPLOY / "prometheusrule.yaml").read_text())
    assert find(rendered, "PrometheusRule", rule["metadata"]["name"])["spec"] == rule["spec"]
    for path in sorted((ROOT / "dashboards").glob("*.json")):
        cm = find(rendered, "ConfigMap", "grafana-dashboard-" + path.stem)
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert json.loads(cm["data"][path.name]) == json.loads(path.read_text())


def test_every_namespaced_object_is_in_vigil(rendered: list[dict[str, Any]]) -> None:
    cluster_scoped = {"Namespace", "ClusterRole", "ClusterRoleBinding"}
    for d in rendered:
        if d["kind"] not in cluster_scoped:
            assert d["metadata"].get("namespace") == "vigil", d["metadata"]["name"]


# --- the agent starts on every node image (docs/compatibility.md) ----------------------


def test_agent_starts_where_usr_src_is_absent(rendered: list[dict[str, Any]]) -> None:
    """kubelet refuses to start a pod whose hostPath of type Directory is missing: only
    paths every node has may be required, and the headers are found under the host root."""
    pod = find(rendered, "DaemonSet", "vigil-agent")["spec"]["template"]["spec"]
    for v in pod["volumes"]:
        host = v.get("hostPath")
        if host is None:
            continue
        assert not host["path"].startswith(("/usr/src", "/lib/modules")), v
        if host.get("type") == "Directory":
            assert host["path"] in ON_EVERY_NODE, v
    (agent,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in agent["env"]}
    host_root = next(m for m in agent["volumeMounts"] if m["mountPath"] == "/host")
    assert env["VIGIL_COLLECTOR_SCHED_HOST_ROOT"] == host_root["mountPath"]
    # bcc unpacks kheaders into /tmp: on disk, and big enough (docs/compatibility.md).
    from agent.collectors.sched.preflight import KHEADERS_UNPACKED_BYTES

    tmp = next(v for v in pod["volumes"] if v["name"] == "tmp")["emptyDir"]
    assert tmp.get("medium") != "Memory"
    assert int(tmp["sizeLimit"].removesuffix("Mi")) * 2**20 >= 2 * KHEADERS_UNPACKED_BYTES


def test_agent_runs_under_the_runtime_default_seccomp_profile(
    rendered: list[dict[str, Any]],
) -> None:
    (agent,) = find(rendered, "DaemonSet", "vigil-agent")["spec"]["template"]["spec"]["containers"]
    assert agent["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}


@pytest.fixture(scope="module")
def sys_admin() -> list[dict[str, Any]]:
    return render(OVERLAYS / "sys-admin")


@pytest.fixture(scope="module")
def cos_headers() -> list[dict[str, Any]]:
    return render(OVERLAYS / "cos-headers")


def test_sys_admin_overlay_adds_only_sys_admin(
    rendered: list[dict[str, Any]], sys_admin: list[dict[str, Any]]
) -> None:
    base = find(rendered, "DaemonSet", "vigil-agent")
    ds = find(sys_admin, "DaemonSet", "vigil-agent")
    (agent,) = ds["spec"]["template"]["spec"]["containers"]
    assert set(agent["securityContext"]["capabilities"]["add"]) == AGENT_CAPS | {"SYS_ADMIN"}
    agent["securityContext"]["capabilities"]["add"].remove("SYS_ADMIN")
    assert ds == base
    assert len(sys_admin) == len(rendered)
    assert "trade-off" in (OVERLAYS / "sys-admin" / "kustomization.yaml").read_text()


def test_cos_overlay_places_headers_where_the_agent_looks(
    rendered: list[dict[str, Any]], cos_headers: list[dict[str, Any]]
) -> None:
    from agent.collectors.sched.preflight import PLACED_HEADERS

    pod = find(cos_headers, "DaemonSet", "vigil-agent")["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in init["volumeMounts"]}
    assert volumes[mounts["/placed"]["name"]]["hostPath"]["path"] == PLACED_HEADERS
    assert mounts["/host"]["readOnly"] is True
    assert init["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert init["image"] == pod["containers"][0]["image"]
    base_pod = find(rendered, "DaemonSet", "vigil-agent")["spec"]["template"]["spec"]
    assert pod["containers"] == base_pod["containers"]


def test_the_cos_init_script_compiles(cos_headers: list[dict[str, Any]]) -> None:
    pod = find(cos_headers, "DaemonSet", "vigil-agent")["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    assert init["command"][-1] == "-c"
    compile(init["args"][0], "cos-headers init", "exec")


def kubernetes_validate() -> Any:
    """Kubernetes' OpenAPI schemas per release, offline (PyPI kubernetes-validate)."""
    try:
        import kubernetes_validate as kv
    except ImportError:
        pytest.fail("kubernetes-validate is missing: pip install -e '.[test]'")
    return kv


BUILT_IN = ("v1", "apps/v1", "rbac.authorization.k8s.io/v1", "policy/v1",
            "networking.k8s.io/v1", "coordination.k8s.io/v1", "batch/v1")  # fmt: skip


@pytest.mark.parametrize("version", ["1.25", "1.37"])
@pytest.mark.parametrize("tree", ["deploy", "sys-admin", "cos-headers"])
def test_strict_schema_validation(tree: str, version: str) -> None:
    """Every built-in object against Kubernetes' own OpenAPI schema, unknown fields
    rejected (the operator CRDs' objects have no schema there)."""
    kv = kubernetes_validate()
    docs = render(DEPLOY if tree == "deploy" else OVERLAYS / tree)
    checked = 0
    for d in docs:
        if d["apiVersion"] not in BUILT_IN:
            continue
        kv.validate(d, version, strict=True)
        checked += 1
    assert checked >= 8


def test_strict_validation_rejects_an_unknown_field(rendered: list[dict[str, Any]]) -> None:
    kv = kubernetes_validate()
    ds = json.loads(json.dumps(find(rendered, "DaemonSet", "vigil-agent")))
    ds["spec"]["template"]["spec"]["containers"][0]["securityContext"]["seccompProfil"] = {}
    with pytest.raises(kv.ValidationError):
        kv.validate(ds, "1.37", strict=True)
