"""k8s/: every overlay renders, validates against the Kubernetes schemas offline, agrees with flow.yml
and with `jina export kubernetes`, and its containers' commands really serve when run as processes.

No cluster is needed: the rendering is the real kustomize (`kubectl kustomize`, kustomize v5;
scripts/test.sh installs kubectl where it is missing), the schemas come with kubernetes-validate,
and the last test runs each Deployment's command line, env and ports from the rendered manifests
on loopback.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from conftest import REPO, free_ports, patched_env, png_bytes

from qbank.config import (
    FLOW_ENV_DEFAULTS,
    EncoderSettings,
    GatewaySettings,
    IndexerSettings,
    ServeSettings,
    env_names,
)

K8S = REPO / "k8s"
OVERLAYS = {"cpu": K8S / "overlays" / "cpu", "gpu": K8S / "overlays" / "gpu"}
RENDERED = [K8S / "base", *OVERLAYS.values(), K8S / "milvus"]
# grpc probes are GA from 1.27; check the oldest supported minor we claim and the newest schemas.
K8S_VERSIONS = ["1.29.0", kubernetes_validate.latest_version()]
BIN = Path(sys.executable).parent
FLOW = yaml.safe_load((REPO / "flow.yml").read_text())


KUSTOMIZE = ["kustomize", "build"] if shutil.which("kustomize") else ["kubectl", "kustomize"]


@functools.cache
def _rendered(folder: str) -> tuple[dict, ...]:
    if not shutil.which(KUSTOMIZE[0]):
        pytest.fail("neither kustomize nor kubectl is installed: run scripts/test.sh, which installs kubectl")
    out = subprocess.run([*KUSTOMIZE, folder], capture_output=True, text=True, check=True, timeout=120).stdout
    return tuple(o for o in yaml.safe_load_all(out) if o)


def build(folder: Path) -> list[dict]:
    """The objects kustomize renders from ``folder`` (a fresh copy: tests may change them)."""
    return copy.deepcopy(list(_rendered(str(folder))))


def objects(folder: Path, kind: str | None = None) -> list[dict]:
    rendered = build(folder)
    return [o for o in rendered if kind is None or o["kind"] == kind]


def named(folder: Path, kind: str, name: str) -> dict:
    (found,) = [o for o in objects(folder, kind) if o["metadata"]["name"] == name]
    return found


def main_container(deployment: dict) -> dict:
    return deployment["spec"]["template"]["spec"]["containers"][0]


def arg_value(args: list[str], flag: str, count: int = 1) -> list[str]:
    index = args.index(flag)
    return args[index + 1 : index + 1 + count]


def dockerfile_for(image: str) -> Path:
    name, _, tag = image.rpartition(":")
    role = name.removeprefix("qbank-")
    if role == "encoder":
        role += "-gpu" if tag.endswith("gpu") else "-cpu"
    return K8S / "images" / f"{role}.Dockerfile"


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", path.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


# --- rendering and schemas ---------------------------------------------------------------------


@pytest.mark.parametrize("folder", RENDERED, ids=lambda p: str(p.relative_to(K8S)))
def test_every_object_validates_against_the_kubernetes_schemas(folder):
    rendered = build(folder)
    assert rendered
    for obj in rendered:
        if obj["apiVersion"].startswith("milvus.io/"):
            continue  # a custom resource: checked against the operator's fields below
        for version in K8S_VERSIONS:
            kubernetes_validate.validate(obj, version, strict=True)


def test_schema_validation_catches_a_broken_manifest():
    deployment = named(OVERLAYS["cpu"], "Deployment", "encoder")
    main_container(deployment)["ports"][0]["containerPort"] = "eight thousand"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[0], strict=True)
    deployment = named(OVERLAYS["cpu"], "Deployment", "encoder")
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[0], strict=True)


# --- agreement between the pieces and with flow.yml --------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS.values(), ids=OVERLAYS.keys())
def test_services_select_one_deployment_and_name_its_ports(overlay):
    deployments = objects(overlay, "Deployment")
    for service in objects(overlay, "Service"):
        selector = service["spec"]["selector"]
        chosen = [d for d in deployments if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()]
        assert len(chosen) == 1, service["metadata"]["name"]
        template_labels = chosen[0]["spec"]["template"]["metadata"]["labels"]
        assert chosen[0]["spec"]["selector"]["matchLabels"].items() <= template_labels.items()
        container_ports = {p["name"]: p["containerPort"] for p in main_container(chosen[0])["ports"]}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in container_ports, (service["metadata"]["name"], port)


def selects(selector: dict, labels: dict) -> bool:
    """Whether a Kubernetes label selector (matchLabels, matchExpressions) selects these labels."""
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for rule in selector.get("matchExpressions", []):
        present, value = rule["key"] in labels, labels.get(rule["key"])
        ok = {
            "In": present and value in rule.get("values", []),
            "NotIn": not present or value not in rule.get("values", []),
            "Exists": present,
            "DoesNotExist": not present,
        }[rule["operator"]]
        if not ok:
            return False
    return True


def who_may_reach(overlay: Path, deployment: dict, port_name: str) -> list[dict] | None:
    """The pod selectors that may reach ``port_name`` of the deployment's pods under the rendered
    NetworkPolicies; None when no policy selects them (anyone may)."""
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    number = {p["name"]: p["containerPort"] for p in main_container(deployment)["ports"]}[port_name]
    policies = [
        p
        for p in objects(overlay, "NetworkPolicy")
        if selects(p["spec"]["podSelector"], labels) and "Ingress" in p["spec"].get("policyTypes", ["Ingress"])
    ]
    if not policies:
        return None
    peers: list[dict] = []
    for policy in policies:
        for rule in policy["spec"].get("ingress", []):
            ports = rule.get("ports")
            if ports and not any(p.get("port") in (port_name, number) for p in ports):
                continue
            if "from" not in rule:
                return [{}]  # a rule without peers: everyone
            peers += rule["from"]
    return peers


@pytest.mark.parametrize("overlay", OVERLAYS.values(), ids=OVERLAYS.keys())
def test_only_the_gateway_reaches_the_executors(overlay):
    """The executors take no token: the NetworkPolicy lets only the gateway's pods reach their gRPC
    port (their metrics port stays open to the cluster); the gateway itself stays reachable."""
    gateway = named(overlay, "Deployment", "gateway")
    gateway_labels = gateway["spec"]["template"]["metadata"]["labels"]
    for name in ("reader", "encoder", "indexer"):
        executor = named(overlay, "Deployment", name)
        peers = who_may_reach(overlay, executor, "grpc")
        assert peers, f"{name}: no NetworkPolicy closes its gRPC port"
        for peer in peers:
            assert set(peer) == {"podSelector"}, (name, peer)  # no namespaceSelector, no ipBlock
            assert selects(peer["podSelector"], gateway_labels), (name, peer)
            for other in ("reader", "encoder", "indexer"):
                other_labels = named(overlay, "Deployment", other)["spec"]["template"]["metadata"]["labels"]
                assert not selects(peer["podSelector"], other_labels), (name, peer, other)
        assert who_may_reach(overlay, executor, "metrics") == [{}], name
    assert who_may_reach(overlay, gateway, "http") is None


@pytest.mark.parametrize("overlay", OVERLAYS.values(), ids=OVERLAYS.keys())
def test_gateway_serves_flow_yml_protocols_and_reaches_every_executor(overlay):
    gateway = main_container(named(overlay, "Deployment", "gateway"))
    args = gateway["args"]
    protocols = FLOW["gateway"]["protocol"]
    assert [p.lower() for p in arg_value(args, "--protocol", len(protocols))] == protocols
    ports = [int(p) for p in arg_value(args, "--port", len(protocols))]
    assert ports == [int(FLOW_ENV_DEFAULTS[f"QBANK_{n}_PORT"]) for n in ("GRPC", "HTTP", "WS")]
    assert arg_value(args, "--uses")[0] == FLOW["gateway"]["uses"]
    assert arg_value(args, "--py-modules")[0] == FLOW["gateway"]["py_modules"][0]
    service_ports = {p["name"]: p["port"] for p in named(overlay, "Service", "gateway")["spec"]["ports"]}
    assert [service_ports[n] for n in ("grpc", "http", "websocket")] == ports

    # The executors of flow.yml, in its order, each a Deployment running the same config.yml.
    names = [e["name"] for e in FLOW["executors"]]
    graph = json.loads(arg_value(args, "--graph-description")[0])
    chain = ["start-gateway", *names, "end-gateway"]
    assert graph == {a: [b] for a, b in zip(chain, chain[1:], strict=False)}
    addresses = json.loads(arg_value(args, "--deployments-addresses")[0])
    assert sorted(addresses) == sorted(names)
    for executor in FLOW["executors"]:
        container = main_container(named(overlay, "Deployment", executor["name"]))
        assert arg_value(container["args"], "--uses")[0] == executor["uses"]
        assert arg_value(container["args"], "--name")[0] == executor["name"]
        ((address,),) = [addresses[executor["name"]]]
        host, port = address.removeprefix("grpc://").split(":")
        service = named(overlay, "Service", host)
        (grpc_port,) = [p for p in service["spec"]["ports"] if p["port"] == int(port)]
        container_port = {p["name"]: p["containerPort"] for p in container["ports"]}[grpc_port["targetPort"]]
        assert arg_value(container["args"], "--port")[0] == str(container_port)
        probe = container["readinessProbe"]["grpc"]["port"]
        assert probe == container_port


@pytest.mark.parametrize("overlay", OVERLAYS.values(), ids=OVERLAYS.keys())
def test_env_names_are_settings_the_code_reads(overlay):
    known = env_names()
    config = named(overlay, "ConfigMap", "qbank-config")["data"]
    names = set(config)
    for deployment in objects(overlay, "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        for container in [*pod.get("initContainers", []), *pod["containers"]]:
            names |= {e["name"] for e in container.get("env", [])}
            assert [r["configMapRef"]["name"] for r in container.get("envFrom", [])] in ([], ["qbank-config"])
    assert {n for n in names if n.startswith("QBANK_")} <= known
    # The settings as the executors will parse them.
    with_env = {k: v for k, v in config.items() if k.startswith("QBANK_")}
    for settings in (EncoderSettings, IndexerSettings, ServeSettings, GatewaySettings):
        fields = settings.env_names()
        with patched_env({k: v for k, v in with_env.items() if k in fields}):
            settings.resolve()


def test_gpu_overlay_gives_each_encoder_replica_one_gpu_and_cpu_overlay_none():
    gpu = named(OVERLAYS["gpu"], "Deployment", "encoder")
    container = main_container(gpu)
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert gpu["spec"]["replicas"] >= 1 and container["image"].endswith("-gpu")
    assert named(OVERLAYS["gpu"], "ConfigMap", "qbank-config")["data"]["QBANK_DEVICE"] == "cuda"
    # A pod sees only its own GPU: the Flow's CUDA_VISIBLE_DEVICES=RR must not travel here.
    for overlay in OVERLAYS.values():
        text = yaml.safe_dump_all(build(overlay))
        assert "CUDA_VISIBLE_DEVICES" not in text
    cpu = main_container(named(OVERLAYS["cpu"], "Deployment", "encoder"))
    assert "nvidia.com/gpu" not in json.dumps(cpu) and cpu["image"].endswith("-cpu")
    cpu_config = named(OVERLAYS["cpu"], "ConfigMap", "qbank-config")["data"]
    assert cpu_config["QBANK_ENGINE"] == "onnx" and cpu_config["QBANK_ONNX_PATH"].startswith("/models/")


def test_indexer_points_at_the_milvus_cluster_of_k8s_milvus():
    (milvus,) = objects(K8S / "milvus", "Milvus")
    meta = milvus["metadata"]
    expected = f"http://{meta['name']}-milvus.{meta['namespace']}.svc.cluster.local:19530"
    for overlay in OVERLAYS.values():
        assert named(overlay, "ConfigMap", "qbank-config")["data"]["QBANK_MILVUS_URI"] == expected
        # On a server the indexer may scale; on Milvus Lite it could not.
        assert named(overlay, "Deployment", "indexer")["spec"]["replicas"] >= 2
    # The operator's fields (milvus.io/v1beta1): cluster mode, the server line of the pinned pymilvus.
    assert milvus["apiVersion"] == "milvus.io/v1beta1" and milvus["spec"]["mode"] == "cluster"
    assert set(milvus["spec"]) <= {"mode", "components", "config", "dependencies"}
    assert set(milvus["spec"]["dependencies"]) <= {"etcd", "storage", "msgStreamType", "pulsar", "kafka"}
    image_tag = milvus["spec"]["components"]["image"].rpartition(":v")[2]
    pymilvus_pin = re.search(r"^pymilvus==(\d+\.\d+)", (REPO / "constraints.txt").read_text(), re.M).group(1)
    assert image_tag.startswith(pymilvus_pin + ".")
    helm = yaml.safe_load((K8S / "milvus" / "helm-values.yaml").read_text())
    assert helm["cluster"]["enabled"] is True and helm["image"]["all"]["tag"] == "v" + image_tag
    assert "helm install " + meta["name"] + " " in (K8S / "milvus" / "helm-values.yaml").read_text()


def test_secrets_are_referenced_never_committed():
    for folder in RENDERED:
        assert not objects(folder, "Secret")
    gateway = main_container(named(OVERLAYS["cpu"], "Deployment", "gateway"))
    (token,) = [e for e in gateway["env"] if e["name"] == "QBANK_AUTH_TOKEN"]
    assert token["valueFrom"]["secretKeyRef"] == {"name": "qbank-auth", "key": "token", "optional": True}


# --- images -------------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS.values(), ids=OVERLAYS.keys())
def test_every_image_has_a_dockerfile_that_copies_what_its_command_uses(overlay):
    ignored = [line for line in (REPO / ".dockerignore").read_text().splitlines() if line and line[0] != "#"]
    for deployment in objects(overlay, "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        for container in [*pod.get("initContainers", []), *pod["containers"]]:
            dockerfile = dockerfile_for(container["image"])
            assert dockerfile.is_file(), container["image"]
            steps = dockerfile_instructions(dockerfile)
            copied = []
            for op, rest in steps:
                if op == "COPY":
                    *sources, _ = rest.split()
                    for source in sources:
                        assert (REPO / source).exists(), (dockerfile.name, source)
                        assert source.split("/")[0] not in ignored, (dockerfile.name, source)
                        copied.append(source)
            assert ("WORKDIR", "/app") in steps
            # The server package alone: no client, no devtools, no jina client patch in a server image.
            assert not [c for c in copied if c.startswith(("src/qbank_", "compat"))], (
                dockerfile.name,
                copied,
            )
            args = container.get("args", [])
            uses = arg_value(args, "--uses")[0] if "--uses" in args else ""
            modules = arg_value(args, "--py-modules") if "--py-modules" in args else []
            if uses.endswith((".yml", ".yaml")):
                assert uses in copied, (dockerfile.name, uses)
                modules += yaml.safe_load((REPO / uses).read_text()).get("py_modules", [])
            for module in modules:  # importable from the installed package: its source was copied
                path = "src/" + module.replace(".", "/") + ".py"
                assert (REPO / path).is_file(), (dockerfile.name, module)
                assert any(path.startswith(c.rstrip("/") + "/") for c in copied), (dockerfile.name, path)
            entry = json.loads(dict(steps)["ENTRYPOINT"]) if "command" not in container else container["command"]
            assert (BIN / entry[0]).exists(), entry  # the console script the image installs
            installs = " ".join(rest for op, rest in steps if op == "RUN")
            assert "-c constraints.txt" in installs or "-c /tmp/constraints-gpu.txt" in installs
            if dockerfile.name == "encoder-gpu.Dockerfile":
                assert "+cpu" not in installs and "[encoder-gpu]" in installs
            if dockerfile.name == "encoder-cpu.Dockerfile":
                assert "torch==2.13.0+cpu" in installs


@pytest.mark.service
@pytest.mark.parametrize("dockerfile", sorted((K8S / "images").glob("*.Dockerfile")), ids=lambda p: p.stem)
def test_an_image_installs_the_server_package_alone(dockerfile, tmp_path):
    """What an image's COPY steps bring, built as pip builds it there: the wheel holds qbank and
    nothing else (no client, no devtools, no jina patch or its .pth), and every console script the
    images run points into it."""
    for op, rest in dockerfile_instructions(dockerfile):
        if op == "COPY":
            *sources, target = rest.split()
            for source in sources:
                assert target in ("./", f"./{source}"), (dockerfile.name, rest)  # WORKDIR /app mirrors the repo
                destination = tmp_path / "ctx" / source
                if (REPO / source).is_dir():
                    shutil.copytree(
                        REPO / source, destination, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
                    )
                else:
                    destination.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy(REPO / source, destination)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path / "dist"),
            ".",
        ],
        cwd=tmp_path / "ctx",
        check=True,
        capture_output=True,
        timeout=120,
    )
    import zipfile

    (wheel,) = (tmp_path / "dist").glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names if not n.startswith("qbank_search-")} == {"qbank"}, wheel
    assert "qbank/service/encoder.py" in names and "qbank/service/indexer.py" in names
    assert "qbank/service/gateway.py" in names and "qbank/cli/fetch_model.py" in names


@pytest.mark.service
def test_jina_export_kubernetes_draws_the_same_graph(tmp_path):
    """`jina export kubernetes` on flow.yml (executors swapped for our images, as it requires) gives
    the same executors, graph, ports and protocols; k8s/ differs where docs/kubernetes.md explains why."""
    flow_text = (REPO / "flow.yml").read_text()
    for executor in FLOW["executors"]:
        flow_text = flow_text.replace(f"uses: {executor['uses']}", f"uses: docker://qbank-{executor['name']}:0.1.0")
    flow_text = flow_text.replace("uses: QbankGateway", "uses: docker://qbank-gateway:0.1.0")
    (tmp_path / "flow.yml").write_text(flow_text)
    env = {**os.environ, **FLOW_ENV_DEFAULTS, "QBANK_ENCODER_REPLICAS": "2", "JINA_LOG_LEVEL": "ERROR"}
    subprocess.run(
        [
            str(BIN / "jina"),
            "export",
            "kubernetes",
            str(tmp_path / "flow.yml"),
            str(tmp_path / "out"),
            "--k8s-namespace",
            "qbank",
        ],
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    exported = {}
    for file in (tmp_path / "out").rglob("*.yml"):
        for obj in yaml.safe_load_all(file.read_text()):
            exported[(obj["kind"], obj["metadata"]["name"])] = obj
    ours = main_container(named(OVERLAYS["cpu"], "Deployment", "gateway"))["args"]
    theirs = exported[("Deployment", "gateway")]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert json.loads(arg_value(ours, "--graph-description")[0]) == json.loads(
        arg_value(theirs, "--graph-description")[0]
    )
    their_addresses = json.loads(arg_value(theirs, "--deployments-addresses")[0])
    our_addresses = json.loads(arg_value(ours, "--deployments-addresses")[0])
    assert sorted(their_addresses) == sorted(our_addresses)
    for name, (address,) in their_addresses.items():
        assert address.rsplit(":", 1)[1] == our_addresses[name][0].rsplit(":", 1)[1]  # same port
    assert arg_value(theirs, "--protocol", 3) == arg_value(ours, "--protocol", 3)
    deployments = {n for k, n in exported if k == "Deployment"}
    assert deployments == {d["metadata"]["name"] for d in objects(OVERLAYS["cpu"], "Deployment")}
    # What we do differently: the export copies the Flow's CUDA_VISIBLE_DEVICES=RR into the pod.
    assert exported[("ConfigMap", "encoder-configmap")]["data"].get("CUDA_VISIBLE_DEVICES") == "RR"


# --- the manifests' commands, run -------------------------------------------------------------


def test_fetch_model_is_idempotent_and_says_what_is_missing(tiny_model, tiny_onnx, tmp_path, capsys):
    from qbank.cli.fetch_model import main as fetch_main

    assert fetch_main(["--model", str(tiny_model), "--onnx-out", str(tiny_onnx)]) == 0
    assert "ready" in capsys.readouterr().out
    with patched_env({"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}):
        assert fetch_main(["--model", "nobody/no-such-clip"]) == 2
    assert "'nobody/no-such-clip' is not in the cache and HF_HUB_OFFLINE is set" in capsys.readouterr().err


def _container_env(config: dict, container: dict, secrets: dict, overrides: dict) -> dict[str, str]:
    env = {**os.environ, **config}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            if (ref["name"], ref["key"]) in secrets:
                env[item["name"]] = secrets[(ref["name"], ref["key"])]
            else:
                assert ref.get("optional"), ref
    env.update(overrides)
    return env


def _command(container: dict, port_map: dict[int, int], addresses: dict[str, str]) -> list[str]:
    if "command" in container:
        entry = container["command"]
    else:
        entry = json.loads(dict(dockerfile_instructions(dockerfile_for(container["image"])))["ENTRYPOINT"])
    args = []
    for arg in container.get("args", []):
        if arg.isdigit() and int(arg) in port_map:
            arg = str(port_map[int(arg)])
        for service, local in addresses.items():
            arg = arg.replace(f"grpc://{service}", f"grpc://{local}")
        args.append(arg)
    return [str(BIN / entry[0]), *entry[1:], *args]


def _wait_grpc_health(port: int, deadline: float) -> None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    while True:
        try:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                return
        except grpc.RpcError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"gRPC health on port {port} never answered SERVING")
        time.sleep(0.5)


EXECUTORS = ("reader", "encoder", "indexer")


@pytest.mark.service
def test_the_cpu_overlay_runs_as_processes_and_serves(tiny_model, tiny_onnx, tmp_path):
    """Each Deployment's command, args, env and probes from the rendered cpu overlay, run on loopback:
    the init step, the three executors, the gateway with a token from the (simulated) Secret."""
    overlay = OVERLAYS["cpu"]
    config = named(overlay, "ConfigMap", "qbank-config")["data"]
    token = "k8s-test-token"
    secrets = {("qbank-auth", "token"): token}
    # What the models volume and the Milvus Service bring in a cluster, brought locally.
    overrides = {
        "QBANK_MODEL": str(tiny_model),
        "QBANK_ONNX_PATH": str(tiny_onnx),
        "HF_HOME": str(tmp_path / "hf"),
        "QBANK_MILVUS_URI": str(tmp_path / "milvus.db"),
        "JINA_LOG_LEVEL": "WARNING",
    }
    deployments = {d["metadata"]["name"]: d for d in objects(overlay, "Deployment")}
    port_map: dict[int, int] = {}
    local_ports: dict[str, dict[int, int]] = {}
    for name, deployment in deployments.items():
        container = main_container(deployment)
        ports = [p["containerPort"] for p in container["ports"]]
        local_ports[name] = dict(zip(ports, free_ports(len(ports)), strict=True))
    addresses = {}
    for name in EXECUTORS:
        service = named(overlay, "Service", name)
        (grpc_port,) = [p for p in service["spec"]["ports"] if p["name"] == "grpc"]
        target = {p["name"]: p["containerPort"] for p in main_container(deployments[name])["ports"]}[
            grpc_port["targetPort"]
        ]
        addresses[f"{name}:{grpc_port['port']}"] = f"127.0.0.1:{local_ports[name][target]}"

    # The init container first, as the kubelet would: model and ONNX export are already there.
    (init,) = deployments["encoder"]["spec"]["template"]["spec"]["initContainers"]
    done = subprocess.run(
        _command(init, {}, {}),
        env=_container_env(config, init, secrets, overrides),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr
    assert "left as it is" in done.stderr

    processes = []
    try:
        for name in (*EXECUTORS, "gateway"):
            container = main_container(deployments[name])
            port_map = local_ports[name]
            processes.append(
                subprocess.Popen(
                    _command(container, port_map, addresses),
                    env=_container_env(config, container, secrets, overrides),
                    cwd=REPO,  # the images' WORKDIR /app holds the same layout
                    start_new_session=True,
                    stdout=subprocess.DEVNULL,
                    stderr=(tmp_path / f"{name}.log").open("wb"),
                )
            )
        deadline = time.monotonic() + 180
        for name in (*EXECUTORS, "gateway"):
            container = main_container(deployments[name])
            probe_port = container["startupProbe"]["grpc"]["port"]
            _wait_grpc_health(local_ports[name][probe_port], deadline)

        gateway_ports = local_ports["gateway"]
        grpc_url = f"grpc://127.0.0.1:{gateway_ports[51000]}"
        http_base = f"http://127.0.0.1:{gateway_ports[51001]}"
        readiness = main_container(deployments["gateway"])["readinessProbe"]["httpGet"]
        assert readiness["port"] == "http"
        with urllib.request.urlopen(http_base + readiness["path"], timeout=10) as response:
            assert response.status == 200

        from clip_client import Client
        from docarray import Document, DocumentArray

        with pytest.raises(Exception, match="(?i)unauthenticated|token"):
            Client(grpc_url).encode(["没有令牌"])
        client = Client(grpc_url, credential={"Authorization": token})
        docs = DocumentArray(
            [
                Document(id="k8s-1", text="已知三角形两边长为3和4，求斜边", tags={"subject": "数学"}),
                Document(id="k8s-2", text="电路中电阻串联的总电阻", tags={"subject": "物理"}),
                Document(id="k8s-3", blob=png_bytes(7), mime_type="image/png", tags={"subject": "数学"}),
            ]
        )
        client.index(docs)
        found = client.search(["电路中电阻串联的总电阻"], limit=2)
        assert found[0].matches[0].id == "k8s-2"
        by_image = client.search(DocumentArray([Document(blob=png_bytes(7), mime_type="image/png")]), limit=1)
        assert by_image[0].matches[0].id == "k8s-3"
        from qbank_devtools.photos import photo_bytes  # the reader pod reads a photo's text

        by_photo = client.search(
            [Document(blob=photo_bytes("电路中电阻串联的总电阻"))], limit=1, parameters={"ocr": True}
        )
        assert by_photo[0].matches[0].id == "k8s-2"

        # Metrics where Jina offers them: each pod's monitoring port (prometheus.io/port).
        for name in ("gateway", "encoder"):
            annotations = deployments[name]["spec"]["template"]["metadata"]["annotations"]
            metrics_port = local_ports[name][int(annotations["prometheus.io/port"])]
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/", timeout=10) as response:
                assert "jina_" in response.read().decode()
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        for log in tmp_path.glob("*.log"):
            print(f"--- {log.name}\n" + log.read_text(errors="replace")[-3000:])
