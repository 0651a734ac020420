"""deploy/k8s: the kustomize base and its example overlay, rendered by `kubectl
kustomize`, each document validated against the Kubernetes API schemas
(kubernetes-validate, strict: an unknown or misspelt field fails), then checked
against what the server, its settings and the committed Envoy config need: probes and
ports, the PDBs' and HPAs' targets, resource requests, the migration Job, the Envoy
config, the drain, the security context and the Secret's placeholders."""

from __future__ import annotations

import base64
import copy
import re
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tahoe_auth.config import ConfigError, Settings, decode_master_key
from tahoe_auth.server import GRACE_SECONDS
from tests.support import unavailable

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
BASE, EXAMPLE = K8S / "base", K8S / "overlays" / "example"
ENVOY_CONFIG = ROOT / "envoy" / "envoy.compose.yaml"
ENVOY_COPY = BASE / "envoy.compose.yaml"
# The oldest Kubernetes these manifests are written for: every field must exist there.
KUBERNETES_VERSION = "1.31"
IMAGE_UID = 10001  # Dockerfile: useradd --uid 10001 tahoe
NAMESPACE, IMAGE = "tahoe", "registry.example.com/tahoe-auth:0.1.0"  # overlays/example
# Measured for the requests' comments (auth-deployment.yaml, envoy-deployment.yaml,
# migrate-job.yaml): peak RSS in MiB. A request below its figure is a mistake.
MEASURED_MIB = {"auth": 182, "wait-for-migrations": 53, "envoy": 73, "migrate": 62}

Doc = dict[str, Any]


class Rendered:
    """The documents `kubectl kustomize` printed for one directory."""

    def __init__(self, name: str, docs: list[Doc]) -> None:
        self.name, self.docs = name, docs

    def all(self, kind: str) -> list[Doc]:
        return [d for d in self.docs if d["kind"] == kind]

    def one(self, kind: str, name: str) -> Doc:
        (doc,) = [d for d in self.all(kind) if d["metadata"]["name"] == name]
        return doc

    def generated(self, kind: str, name: str) -> Doc:
        """A generated ConfigMap or Secret: `name-<hash>`."""
        (doc,) = [d for d in self.all(kind) if re.fullmatch(rf"{name}-[a-z0-9]{{10}}", d["metadata"]["name"])]
        return doc

    def workloads(self) -> list[Doc]:
        return self.all("Deployment") + self.all("Job")

    def secret_data(self, name: str) -> dict[str, str]:
        data = self.generated("Secret", name)["data"]
        return {key: base64.b64decode(value).decode() for key, value in data.items()}

    def settings(self) -> Settings:
        """What the auth server's Settings make of its ConfigMap and Secret, with a real
        key in place of the placeholder (which Settings rightly refuses)."""
        env = dict(self.generated("ConfigMap", "tahoe-auth-config")["data"])
        env |= self.secret_data("tahoe-auth-secrets")
        env["TAHOE_MASTER_KEY"] = base64.urlsafe_b64encode(bytes(32)).decode()
        return Settings.from_env(env)


def kustomize(directory: Path) -> Rendered:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        unavailable("kubectl is not installed: it renders deploy/k8s (`kubectl kustomize`, kustomize v5)")
    done = subprocess.run(
        [kubectl, "kustomize", str(directory)], check=False, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, f"kubectl kustomize {directory} failed:\n{done.stderr}"
    return Rendered(directory.name, [doc for doc in yaml.safe_load_all(done.stdout) if doc])


@pytest.fixture(scope="module")
def base() -> Rendered:
    return kustomize(BASE)


@pytest.fixture(scope="module")
def example() -> Rendered:
    return kustomize(EXAMPLE)


@pytest.fixture(scope="module", params=["base", "example"])
def rendered(request: pytest.FixtureRequest) -> Rendered:
    """Each test that takes it runs on the base and on the example overlay."""
    result: Rendered = request.getfixturevalue(request.param)
    return result


@pytest.fixture(scope="module")
def kubernetes_validate() -> Any:
    try:
        import kubernetes_validate
    except ImportError:
        unavailable("kubernetes-validate is not installed (the dev extra): it holds the Kubernetes schemas")
    return kubernetes_validate


def pod_spec(workload: Doc) -> Doc:
    spec: Doc = workload["spec"]["template"]["spec"]
    return spec


def containers(workload: Doc) -> list[Doc]:
    spec = pod_spec(workload)
    return [*spec.get("initContainers", []), *spec["containers"]]


def container(workload: Doc, name: str) -> Doc:
    (found,) = [c for c in containers(workload) if c["name"] == name]
    return found


def pod_labels(workload: Doc) -> dict[str, str]:
    labels: dict[str, str] = workload["spec"]["template"]["metadata"]["labels"]
    return labels


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def port_of(address: str) -> int:
    return int(address.rpartition(":")[2])


def container_port(workload: Doc, port: int | str) -> int:
    """A probe's or Service's port (a number or a container port's name) as a number."""
    declared = {
        p["name"]: p["containerPort"] for c in workload["spec"]["template"]["spec"]["containers"] for p in c["ports"]
    }
    if isinstance(port, int):
        assert port in declared.values(), f"{port} is no container port of {workload['metadata']['name']}"
        return port
    assert port in declared, f"no container port named {port!r} in {workload['metadata']['name']}"
    return declared[port]


def seconds(duration: str) -> float:
    assert duration.endswith("s"), duration
    return float(duration.removesuffix("s"))


def mebibytes(quantity: str) -> float:
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "M": 1e6 / 2**20, "G": 1e9 / 2**20}
    for unit, factor in units.items():
        if quantity.endswith(unit):
            return float(quantity.removesuffix(unit)) * factor
    return float(quantity) / 2**20


def cores(quantity: str) -> float:
    return float(quantity.removesuffix("m")) / 1000 if quantity.endswith("m") else float(quantity)


def envoy_config() -> Doc:
    config: Doc = yaml.safe_load(ENVOY_CONFIG.read_text())
    return config


def envoy_endpoints() -> Iterator[tuple[str, str, int]]:
    """(cluster, host, port) of every endpoint of the Envoy config, health-check ports too."""
    for cluster in envoy_config()["static_resources"]["clusters"]:
        for group in cluster["load_assignment"]["endpoints"]:
            for entry in group["lb_endpoints"]:
                address = entry["endpoint"]["address"]["socket_address"]
                yield cluster["name"], address["address"], address["port_value"]
                if "health_check_config" in entry["endpoint"]:
                    yield cluster["name"], address["address"], entry["endpoint"]["health_check_config"]["port_value"]


# --- the schemas -------------------------------------------------------------------


def test_every_document_is_valid_against_the_kubernetes_schemas(rendered: Rendered, kubernetes_validate: Any) -> None:
    kinds = {d["kind"] for d in rendered.docs}
    assert {"Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler", "Job"} <= kinds
    assert {"ConfigMap", "Secret", "NetworkPolicy"} <= kinds
    for doc in rendered.docs:
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            path = ".".join(str(p) for p in error.path)
            pytest.fail(f"{where} is not valid Kubernetes {KUBERNETES_VERSION}: {path}: {error.message}")
        except kubernetes_validate.SchemaNotFoundError as error:
            pytest.fail(f"{where}: {error.message}")


def test_strict_validation_refuses_a_misspelt_field_and_a_wrong_type(
    example: Rendered, kubernetes_validate: Any
) -> None:
    # The guard on the test above: a schema check that let these through would prove nothing.
    misspelt = copy.deepcopy(example.one("Deployment", "tahoe-auth"))
    pod_spec(misspelt)["containers"][0]["readinessProbes"] = pod_spec(misspelt)["containers"][0].pop("readinessProbe")
    wrong_type = copy.deepcopy(example.one("HorizontalPodAutoscaler", "tahoe-auth"))
    wrong_type["spec"]["minReplicas"] = "3"
    for doc in (misspelt, wrong_type):
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


# --- the auth server ---------------------------------------------------------------


def test_the_config_parses_and_the_container_listens_where_it_says(rendered: Rendered) -> None:
    settings = rendered.settings()  # a ConfigError here names the bad variable
    auth = container(rendered.one("Deployment", "tahoe-auth"), "auth")
    ports = {p["name"]: p["containerPort"] for p in auth["ports"]}
    assert ports == {
        "grpc": port_of(settings.grpc_addr),
        "http": port_of(settings.http_addr),
        "authz": port_of(settings.authz_http_addr),
    }
    assert ports == {"grpc": 9200, "http": 9201, "authz": 9202}  # the README's, Envoy's and compose's
    # Envoy and the kubelet's probes come from other addresses than the pod's loopback.
    for address in (settings.grpc_addr, settings.http_addr, settings.authz_http_addr):
        assert address.startswith("0.0.0.0:"), address
    assert settings.database_url.startswith("postgresql+psycopg://")
    assert settings.redis_url, "more than one instance needs TAHOE_REDIS_URL"
    assert settings.database_role == "tahoe_app"  # row-level security, as in compose
    # os.cpu_count() is the node's in a container: the hashing pool must be set, and small.
    config = rendered.generated("ConfigMap", "tahoe-auth-config")["data"]
    assert "TAHOE_HASH_CONCURRENCY" in config and "TAHOE_HASH_QUEUE" in config
    assert settings.hash_concurrency <= 2


def test_probes_ask_the_side_port_for_readyz_and_healthz(rendered: Rendered) -> None:
    deployment = rendered.one("Deployment", "tahoe-auth")
    auth = container(deployment, "auth")
    side_port = port_of(rendered.settings().http_addr)
    expected = {"readinessProbe": "/readyz", "livenessProbe": "/healthz", "startupProbe": "/healthz"}
    for probe, path in expected.items():
        get = auth[probe]["httpGet"]
        assert get["path"] == path, probe
        assert container_port(deployment, get["port"]) == side_port, probe
        assert get.get("scheme", "HTTP") == "HTTP", probe


def test_the_server_does_not_migrate_the_job_does_and_the_pods_wait_for_it(rendered: Rendered) -> None:
    deployment, job = rendered.one("Deployment", "tahoe-auth"), rendered.one("Job", "tahoe-auth-migrate")
    auth = container(deployment, "auth")
    assert auth["command"] == ["tahoe-auth", "serve"]  # several replicas must not migrate at once
    (migrate,) = pod_spec(job)["containers"]
    assert migrate["command"] == ["tahoe-auth", "migrate"]
    assert pod_spec(job)["restartPolicy"] in ("Never", "OnFailure")
    assert job["spec"]["backoffLimit"] >= 1
    # The same settings and secrets, and the image's /app (alembic.ini, migrations/).
    assert migrate["envFrom"] == auth["envFrom"]
    assert migrate["workingDir"] == auth["workingDir"] == "/app"
    assert migrate["image"] == auth["image"]
    (wait,) = pod_spec(deployment)["initContainers"]
    assert wait["envFrom"] == auth["envFrom"] and wait["image"] == auth["image"]
    assert "pending_revisions" in wait["command"][-1]  # what `serve` checks before it starts
    compile(wait["command"][-1], "wait-for-migrations", "exec")


def test_the_pdbs_select_their_deployments_pods_and_nothing_else(rendered: Rendered) -> None:
    assert {p["metadata"]["name"] for p in rendered.all("PodDisruptionBudget")} == {"tahoe-auth", "envoy"}
    for pdb in rendered.all("PodDisruptionBudget"):
        selector = pdb["spec"]["selector"]["matchLabels"]
        matched = [w["metadata"]["name"] for w in rendered.workloads() if selects(selector, pod_labels(w))]
        assert matched == [pdb["metadata"]["name"]], f"PDB {pdb['metadata']['name']} selects {matched}"
        deployment = rendered.one("Deployment", pdb["metadata"]["name"])
        assert selector == deployment["spec"]["selector"]["matchLabels"]
        # One pod at a time, and never all of them.
        assert pdb["spec"].get("maxUnavailable") == 1 or pdb["spec"]["minAvailable"] >= 1


def test_the_hpas_scale_their_deployments_on_cpu(rendered: Rendered) -> None:
    assert {h["metadata"]["name"] for h in rendered.all("HorizontalPodAutoscaler")} == {"tahoe-auth", "envoy"}
    for hpa in rendered.all("HorizontalPodAutoscaler"):
        assert hpa["apiVersion"] == "autoscaling/v2"
        target = hpa["spec"]["scaleTargetRef"]
        assert target == {"apiVersion": "apps/v1", "kind": "Deployment", "name": hpa["metadata"]["name"]}
        deployment = rendered.one("Deployment", target["name"])
        metrics = [(m["type"], m["resource"]["name"], m["resource"]["target"]["type"]) for m in hpa["spec"]["metrics"]]
        assert metrics == [("Resource", "cpu", "Utilization")]
        assert 0 < hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] <= 100
        # Utilization is relative to the requests: every container of the pod needs one.
        for c in pod_spec(deployment)["containers"]:
            assert "cpu" in c["resources"]["requests"], c["name"]
        # A rolling restart and a drain need another pod to send traffic to.
        assert 2 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
        assert hpa["spec"]["minReplicas"] <= deployment["spec"]["replicas"] <= hpa["spec"]["maxReplicas"]
    # While Redis is unreachable, each instance's share of the limits is 1 / this: the
    # replica count, the HPA's floor and TAHOE_INSTANCE_COUNT go together.
    instances = rendered.generated("ConfigMap", "tahoe-auth-config")["data"]["TAHOE_INSTANCE_COUNT"]
    floor = rendered.one("HorizontalPodAutoscaler", "tahoe-auth")["spec"]["minReplicas"]
    assert int(instances) == floor == rendered.one("Deployment", "tahoe-auth")["spec"]["replicas"]


def test_every_container_requests_cpu_and_memory(rendered: Rendered) -> None:
    for workload in rendered.workloads():
        for c in containers(workload):
            where = f"{workload['metadata']['name']}/{c['name']}"
            requests = c.get("resources", {}).get("requests", {})
            assert set(requests) >= {"cpu", "memory"}, f"{where} requests {requests}"
            assert cores(requests["cpu"]) > 0, where
            limit = c["resources"].get("limits", {}).get("memory")
            assert limit is not None, f"{where}: no memory limit"
            assert mebibytes(limit) >= mebibytes(requests["memory"]), where
            if c["name"] in MEASURED_MIB:
                assert mebibytes(requests["memory"]) >= MEASURED_MIB[c["name"]], f"{where} below its measured RSS"
    # One `serve` process answers Checks on about one core (docs/operations.md).
    auth = container(rendered.one("Deployment", "tahoe-auth"), "auth")
    assert cores(auth["resources"]["requests"]["cpu"]) >= 1


def test_termination_grace_covers_the_drain_and_the_drain_outlasts_detection(rendered: Rendered) -> None:
    settings = rendered.settings()
    deployment = rendered.one("Deployment", "tahoe-auth")
    grace = pod_spec(deployment)["terminationGracePeriodSeconds"]
    # SIGTERM: the drain, then up to GRACE_SECONDS for in-flight calls, then exit.
    assert grace > settings.drain_seconds + GRACE_SECONDS
    # The drain must outlast Envoy's health checks (interval x unhealthy + timeout) ...
    (authz,) = [c for c in envoy_config()["static_resources"]["clusters"] if c["name"] == "tahoe_authz_http"]
    (check,) = authz["health_checks"]
    envoy_detection = seconds(check["interval"]) * check["unhealthy_threshold"] + seconds(check["timeout"])
    assert settings.drain_seconds > envoy_detection
    # ... and the readiness probe's, for balancers that follow it.
    ready = container(deployment, "auth")["readinessProbe"]
    probe_detection = ready["periodSeconds"] * ready["failureThreshold"] + ready["timeoutSeconds"]
    assert settings.drain_seconds > probe_detection
    # Envoy's own pods: the preStop drain ends before the kubelet's SIGKILL.
    envoy_pod = pod_spec(rendered.one("Deployment", "envoy"))
    (envoy,) = envoy_pod["containers"]
    (sleep,) = re.findall(r"time\.sleep\((\d+)\)", envoy["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert envoy_pod["terminationGracePeriodSeconds"] > int(sleep)
    drain_time = envoy["command"][envoy["command"].index("--drain-time-s") + 1]
    assert int(drain_time) <= int(sleep)


def test_pods_run_unprivileged_on_a_read_only_root(rendered: Rendered) -> None:
    assert f"--uid {IMAGE_UID} " in (ROOT / "Dockerfile").read_text()
    for workload in rendered.workloads():
        name, spec = workload["metadata"]["name"], pod_spec(workload)
        pod_security = spec["securityContext"]
        # The image's USER is a name: runAsNonRoot is verifiable only with a numeric uid.
        assert pod_security["runAsNonRoot"] is True and pod_security["runAsUser"] == IMAGE_UID, name
        assert pod_security["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert spec["automountServiceAccountToken"] is False, name
        for c in containers(workload):
            context = c["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, c["name"]
            assert context["readOnlyRootFilesystem"] is True, c["name"]
            assert context["capabilities"] == {"drop": ["ALL"]}, c["name"]
            assert "privileged" not in context, c["name"]
    # What the server writes goes to emptyDirs: TAHOE_VAR_DIR (mail files) and /tmp.
    deployment = rendered.one("Deployment", "tahoe-auth")
    mounts = {m["mountPath"]: m["name"] for m in container(deployment, "auth")["volumeMounts"]}
    empty_dirs = {v["name"] for v in pod_spec(deployment)["volumes"] if "emptyDir" in v}
    assert {mounts[str(rendered.settings().var_dir)], mounts["/tmp"]} <= empty_dirs


# --- Services and NetworkPolicies --------------------------------------------------


def test_service_ports_match_container_ports(rendered: Rendered) -> None:
    for service in rendered.all("Service"):
        name, selector = service["metadata"]["name"], service["spec"]["selector"]
        (workload,) = [d for d in rendered.all("Deployment") if selects(selector, pod_labels(d))]
        for port in service["spec"]["ports"]:
            number = container_port(workload, port["targetPort"])
            assert port["port"] == number, f"Service {name} port {port['name']}: {port['port']} -> {number}"
            assert port.get("protocol", "TCP") == "TCP"
    # Envoy's STRICT_DNS clusters must see every auth pod, not one ClusterIP.
    assert rendered.one("Service", "auth")["spec"]["clusterIP"] == "None"


def test_only_envoy_reaches_check_and_nobody_envoys_admin(rendered: Rendered) -> None:
    envoy_pods = pod_labels(rendered.one("Deployment", "envoy"))
    auth_policy = rendered.one("NetworkPolicy", "tahoe-auth")
    assert selects(
        auth_policy["spec"]["podSelector"]["matchLabels"], pod_labels(rendered.one("Deployment", "tahoe-auth"))
    )
    for rule in auth_policy["spec"]["ingress"]:
        ports = {p["port"] for p in rule.get("ports", [])} or {"any port"}
        if ports & {"authz", 9202, "any port"}:
            (peer,) = rule["from"]
            assert set(peer) == {"podSelector"}, peer  # pods of this namespace only
            allowed = [
                w["metadata"]["name"]
                for w in rendered.workloads()
                if selects(peer["podSelector"].get("matchLabels", {}), pod_labels(w))
            ]
            assert allowed == ["envoy"], f"Check's port is open to {allowed}"
    gateway_policy = rendered.one("NetworkPolicy", "envoy")
    assert selects(gateway_policy["spec"]["podSelector"]["matchLabels"], envoy_pods)
    opened = {p["port"] for rule in gateway_policy["spec"]["ingress"] for p in rule.get("ports", [{"port": "any"}])}
    assert opened == {"http"}  # never 9901 (/quitquitquit, /runtime_modify)


# --- Envoy -------------------------------------------------------------------------


def test_envoy_runs_the_committed_config(rendered: Rendered) -> None:
    assert ENVOY_COPY.read_bytes() == ENVOY_CONFIG.read_bytes(), (
        "deploy/k8s/base/envoy.compose.yaml is stale: run scripts/envoy_configs.py"
    )
    config_map = rendered.generated("ConfigMap", "envoy-config")
    assert config_map["data"] == {"envoy.compose.yaml": ENVOY_CONFIG.read_text()}
    deployment = rendered.one("Deployment", "envoy")
    (envoy,) = pod_spec(deployment)["containers"]
    command = envoy["command"]
    assert command[0] == "envoy"
    config_path = Path(command[command.index("-c") + 1])
    (mount,) = [m for m in envoy["volumeMounts"] if m["mountPath"] == str(config_path.parent)]
    (volume,) = [v for v in pod_spec(deployment)["volumes"] if v["name"] == mount["name"]]
    assert volume["configMap"]["name"] == config_map["metadata"]["name"]
    assert config_path.name in config_map["data"]
    # The config's descriptor set and OpenAPI document are paths relative to the image's
    # /app (Dockerfile: COPY envoy ./envoy).
    assert envoy["workingDir"] == "/app"
    assert "proto_descriptor: envoy/tahoe_auth.pb" in ENVOY_CONFIG.read_text()
    assert "filename: envoy/openapi.json" in ENVOY_CONFIG.read_text()
    # The listener and the admin interface are where the container and probes say.
    config = envoy_config()
    ports = {p["name"]: p["containerPort"] for p in envoy["ports"]}
    listener = config["static_resources"]["listeners"][0]["address"]["socket_address"]
    assert ports == {
        "http": listener["port_value"],
        "admin": config["admin"]["address"]["socket_address"]["port_value"],
    }
    assert envoy["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container_port(deployment, envoy["readinessProbe"]["httpGet"]["port"]) == ports["admin"]


def test_envoys_clusters_reach_the_auth_pods_by_service_name(rendered: Rendered) -> None:
    # No address of the committed config is rewritten: each cluster's host is a Service
    # of the same namespace and each port one of its ports, on the right container port.
    for cluster, host, port in envoy_endpoints():
        services = [s for s in rendered.all("Service") if s["metadata"]["name"] == host]
        if not services and (rendered.name, host) == ("base", "transcription"):
            continue  # the base has no upstream: each overlay brings its own
        assert services, f"cluster {cluster}: no Service {host} in {rendered.name}"
        (service,) = services
        (workload,) = [d for d in rendered.all("Deployment") if selects(service["spec"]["selector"], pod_labels(d))]
        (service_port,) = [p for p in service["spec"]["ports"] if p["port"] == port]
        assert container_port(workload, service_port["targetPort"]) == port, (cluster, host, port)
    assert {host for _, host, _ in envoy_endpoints()} == {"auth", "transcription"}


def test_the_example_deploys_an_upstream_and_the_trusted_proxies(example: Rendered) -> None:
    upstream = example.one("Service", "transcription")
    assert [p["port"] for p in upstream["spec"]["ports"]] == [9300]
    demo = container(example.one("Deployment", "transcription"), "transcription")
    env = {e["name"]: e["value"] for e in demo["env"]}
    assert env["TAHOE_JWKS_URL"] == "http://auth:9201/.well-known/jwks.json"
    assert env["TAHOE_GRPC_TARGET"] == "auth:9200"
    assert port_of(env["TRANSCRIPTION_ADDR"]) == 9300
    # Envoy's pods have no fixed address: the pod network is trusted, and the edge
    # Service keeps the client's address (use_remote_address) instead of a node's.
    assert example.settings().trusted_proxies
    assert example.one("Service", "envoy")["spec"]["externalTrafficPolicy"] == "Local"


# --- the overlay -------------------------------------------------------------------


def test_the_example_sets_namespace_image_and_replicas(example: Rendered) -> None:
    namespace = example.one("Namespace", NAMESPACE)
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for doc in example.docs:
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == NAMESPACE, f"{doc['kind']}/{doc['metadata']['name']}"
    for workload in example.workloads():
        for c in containers(workload):
            assert c["image"] == IMAGE, f"{workload['metadata']['name']}/{c['name']}"
    assert example.one("Deployment", "tahoe-auth")["spec"]["replicas"] == 3
    assert example.one("HorizontalPodAutoscaler", "tahoe-auth")["spec"]["minReplicas"] == 3
    assert example.generated("ConfigMap", "tahoe-auth-config")["data"]["TAHOE_INSTANCE_COUNT"] == "3"


# --- the master key ----------------------------------------------------------------


def test_no_master_key_is_rendered_only_placeholders(rendered: Rendered) -> None:
    (secret,) = rendered.all("Secret")
    values = rendered.secret_data("tahoe-auth-secrets")
    # A placeholder, and one the server refuses: it can never pass for a key.
    assert "REPLACE-ME" in values["TAHOE_MASTER_KEY"]
    with pytest.raises(ConfigError):
        decode_master_key(values["TAHOE_MASTER_KEY"], "TAHOE_MASTER_KEY")
    for url in ("TAHOE_DATABASE_URL", "TAHOE_REDIS_URL"):
        assert "REPLACE-ME" in values[url] or "@" not in values[url], url
    # Secrets live in the Secret only, and every pod reads that one.
    for config_map in rendered.all("ConfigMap"):
        assert not set(values) & set(config_map["data"]), config_map["metadata"]["name"]
    for workload in rendered.workloads():
        for c in containers(workload):
            refs = [e["secretRef"]["name"] for e in c.get("envFrom", []) if "secretRef" in e]
            assert refs in ([], [secret["metadata"]["name"]]), c["name"]


def test_no_committed_file_holds_a_key() -> None:
    # Anything that decodes as 32 bytes of base64 (a master key's shape) is refused.
    files = [p for p in K8S.rglob("*") if p.is_file()]
    files += [p for p in (ROOT / "docs" / "kubernetes.md",) if p.exists()]
    assert ENVOY_COPY in files
    for path in files:
        for token in re.findall(r"[A-Za-z0-9_+/-]{42,}={0,2}", path.read_text()):
            try:
                decode_master_key(token, str(path))
            except ConfigError:
                continue
            pytest.fail(f"{path.relative_to(ROOT)} holds something shaped like a master key: {token}")


def test_an_operators_secrets_replace_the_placeholders(tmp_path: Path, example: Rendered) -> None:
    # What docs/kubernetes.md tells an operator: write overlays/<theirs>/secrets.env
    # at deploy time. The generator puts it in the one Secret the pods read, under a
    # new name (a rolling restart).
    tree = tmp_path / "k8s"
    shutil.copytree(K8S, tree)
    key = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
    database_url = f"postgresql+psycopg://tahoe:{secrets.token_urlsafe(16)}@db.internal:5432/tahoe"
    (tree / "overlays" / "example" / "secrets.env").write_text(
        f"TAHOE_MASTER_KEY={key}\nTAHOE_DATABASE_URL={database_url}\nTAHOE_REDIS_URL=redis://redis.internal:6379/0\n"
    )
    operator = kustomize(tree / "overlays" / "example")
    (secret,) = operator.all("Secret")
    values = operator.secret_data("tahoe-auth-secrets")
    assert values == {
        "TAHOE_MASTER_KEY": key,
        "TAHOE_DATABASE_URL": database_url,
        "TAHOE_REDIS_URL": "redis://redis.internal:6379/0",
    }  # replaced, not merged: no placeholder survives
    assert len(decode_master_key(values["TAHOE_MASTER_KEY"], "TAHOE_MASTER_KEY")) == 32
    assert secret["metadata"]["name"] != example.generated("Secret", "tahoe-auth-secrets")["metadata"]["name"]
    for workload in operator.workloads():
        for c in containers(workload):
            for ref in c.get("envFrom", []):
                if "secretRef" in ref:
                    assert ref["secretRef"]["name"] == secret["metadata"]["name"]
