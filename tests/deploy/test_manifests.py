"""deploy/ checked here, without a Docker engine or a cluster: the Kubernetes manifests against the
Kubernetes schemas (kubernetes-validate, strict) and the rules a production reviewer checks, with a
broken copy of each failing; compose's references. (tests/test_deploy.py runs the shipped Redis and
Mosquitto configs for real; tests/scale runs the HAProxy topology.)"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
K8S_VERSION = "1.30.0"
WORKLOADS = {"Deployment", "StatefulSet"}


def manifests() -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((DEPLOY / "k8s" / "evfleet.yaml").read_text()) if doc]


def schema_errors(docs: list[dict[str, Any]]) -> list[str]:
    errors = []
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as err:
            errors.append(f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}: {err.message}")
    return errors


def policy_errors(docs: list[dict[str, Any]]) -> list[str]:
    """What the schemas cannot say: non-root, read-only root fs, resources, probes, references."""
    errors = []
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    # Secrets the header tells the operator to create (`kubectl ... create secret generic NAME`)
    header = (DEPLOY / "k8s" / "evfleet.yaml").read_text().split("\napiVersion", 1)[0]
    names |= {("Secret", n) for n in re.findall(r"create secret (?:generic|tls) (\S+)", header)}
    labels = [d["spec"]["template"]["metadata"]["labels"] for d in docs if d["kind"] in WORKLOADS]
    for doc in docs:
        kind, name = doc["kind"], doc["metadata"]["name"]
        if kind == "Service":
            selector = doc["spec"].get("selector", {})
            if not any(selector.items() <= lab.items() for lab in labels):
                errors.append(f"Service/{name} selects no workload")
        if kind not in WORKLOADS:
            continue
        pod = doc["spec"]["template"]["spec"]
        errors += [f"{kind}/{name}: Secret volume {v['secret']['secretName']} not defined"
                   for v in pod.get("volumes", []) if "secret" in v
                   and ("Secret", v["secret"]["secretName"]) not in names]
        if not pod.get("securityContext", {}).get("runAsNonRoot"):
            errors.append(f"{kind}/{name}: pod may run as root")
        for c in pod.get("initContainers", []) + pod["containers"]:
            where = f"{kind}/{name}/{c['name']}"
            sc = c.get("securityContext", {})
            if not sc.get("readOnlyRootFilesystem") or sc.get("allowPrivilegeEscalation", True):
                errors.append(f"{where}: writable root fs or privilege escalation")
            if "limits" not in c.get("resources", {}) or "requests" not in c.get("resources", {}):
                errors.append(f"{where}: no resource requests/limits")
            refs = [e["valueFrom"]["secretKeyRef"]["name"] for e in c.get("env", [])
                    if "secretKeyRef" in e.get("valueFrom", {})]
            refs += [s["secretRef"]["name"] for s in c.get("envFrom", []) if "secretRef" in s]
            errors += [f"{where}: Secret {r} not defined" for r in refs if ("Secret", r) not in names]
            maps = [s["configMapRef"]["name"] for s in c.get("envFrom", []) if "configMapRef" in s]
            errors += [f"{where}: ConfigMap {m} not defined" for m in maps if ("ConfigMap", m) not in names]
        for c in pod["containers"]:
            probed = c.get("readinessProbe") and c.get("livenessProbe")
            if c["name"] in ("csms", "redis", "mosquitto") and not probed:
                errors.append(f"{kind}/{name}/{c['name']}: no readiness/liveness probe")
    return errors


def test_the_kubernetes_manifests_validate_and_follow_the_rules() -> None:
    docs = manifests()
    assert not schema_errors(docs)
    assert not policy_errors(docs)
    kinds = {d["kind"] for d in docs}
    assert {"PodDisruptionBudget", "Ingress", "StatefulSet", "Deployment", "NetworkPolicy"} <= kinds
    csms = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "csms")
    probe = csms["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
    assert probe["httpGet"]["path"] == "/healthz"  # the real health endpoint, not a TCP check
    assert any(d["kind"] == "Deployment" and d["metadata"]["name"] == "mosquitto" for d in docs)


@pytest.mark.parametrize("breakage", ["bad field", "root", "no limits", "missing secret", "orphan service"])
def test_a_broken_manifest_fails(breakage: str) -> None:
    docs = copy.deepcopy(manifests())
    csms = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "csms")
    pod = csms["spec"]["template"]["spec"]
    container = pod["containers"][0]
    if breakage == "bad field":
        container["readinessProbe"]["httpGet"]["port"] = {"name": "api"}  # not int-or-string
    elif breakage == "root":
        pod["securityContext"]["runAsNonRoot"] = False
    elif breakage == "no limits":
        del container["resources"]["limits"]
    elif breakage == "missing secret":
        refs = [e for e in container["env"] if "secretKeyRef" in e.get("valueFrom", {})]
        refs[0]["valueFrom"]["secretKeyRef"]["name"] = "evfleet-secret"
    else:
        next(d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == "redis")["spec"][
            "selector"] = {"app": "rediss"}
    assert schema_errors(docs) + policy_errors(docs)


def compose() -> dict[str, Any]:
    return dict(yaml.safe_load((DEPLOY / "compose.yaml").read_text()))


def test_compose_references_resolve() -> None:
    doc = compose()
    services = doc["services"]
    for name, svc in services.items():
        for dep in svc.get("depends_on", {}):
            assert dep in services, f"{name} depends on unknown {dep}"
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (DEPLOY / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in doc["volumes"], f"{name} uses undeclared volume {source}"
    assert "ports" not in services["redis"]  # Redis is reached inside the network only
    haproxy = (DEPLOY / "haproxy" / "haproxy.cfg").read_text()
    servers = {line.split()[1] for line in haproxy.splitlines() if line.strip().startswith("server ")}
    assert servers and servers <= set(services), "HAProxy points at services compose does not run"
    prometheus = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    targets = [t.split(":")[0] for job in prometheus["scrape_configs"] for sc in job["static_configs"]
               for t in sc["targets"]]
    assert targets and set(targets) <= set(services)
    assert {"csms-1", "csms-2", "optimizer-1", "optimizer-2", "haproxy", "grafana"} <= set(services)


def test_profiles_2_and_3_pass_tls_through_to_nodes_that_end_it() -> None:
    """HAProxy, compose and Kubernetes each give wss:// stations a TCP path to a csms that ends TLS
    (it must see the client certificate); tests/scale/test_haproxy_tls.py runs it with HAProxy."""
    cfg = (DEPLOY / "haproxy" / "haproxy.cfg").read_text()
    sections = {b.split("\n", 1)[0].strip(): b for b in re.split(r"\n(?=frontend |backend )", cfg)}
    front, back = sections["frontend ocpp_tls"], sections["backend csms_tls"]
    assert "mode tcp" in front and "bind :9443" in front and "mode tcp" in back
    assert "option httpchk GET /healthz" in back and "check port 8080" in back
    services = compose()["services"]
    assert "9443:9443" in services["haproxy"]["ports"]
    tls_nodes = {n: s for n, s in services.items() if n.startswith("csms-tls-")}
    servers = set(re.findall(r"server (csms-tls-\d+) ", back))
    assert servers and servers == set(tls_nodes)
    for svc in tls_nodes.values():
        assert svc["environment"]["EVFLEET_PORT"] == "9443" and svc["environment"]["EVFLEET_TLS_CLIENT_CA"]
    docs = manifests()
    lb = next(d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == "csms-ocpp-tls")
    assert lb["spec"]["type"] == "LoadBalancer" and lb["spec"]["ports"][0]["port"] == 9443
    pods = next(d for d in docs if d["kind"] == "Deployment"
                and d["spec"]["template"]["metadata"]["labels"] == lb["spec"]["selector"])
    env = {e["name"] for e in pods["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert {"EVFLEET_TLS_CERT", "EVFLEET_TLS_KEY", "EVFLEET_TLS_CLIENT_CA"} <= env
    policy = next(d for d in docs if d["metadata"]["name"] == "redis-clients")
    clients = [p["podSelector"]["matchLabels"] for p in policy["spec"]["ingress"][0]["from"]]
    assert {"app": "csms-tls"} in clients
