"""Checks on rendered Kubernetes manifests (stack/test-kubernetes.sh renders them; no cluster runs here).

    python kubernetes_check.py NAME RENDERED.yaml

For one kustomization's output: custom resources validated against the vendored CRD schemas in
deploy/kubernetes/schemas (strict: no property the CRD does not define); then what the issue asks of
the service's objects: 3 replicas, /healthz liveness, /readyz readiness, a startup probe, resources,
non-root read-only security contexts, a grace period longer than the server's own drain, a
Service, an Ingress, an HPA, a PodDisruptionBudget, the migration Job, a ConfigMap, and Secrets only
referenced, never included. Prints one line per check; exits 1 if one failed.
"""

import gzip
import json
import sys
from pathlib import Path

import jsonschema
import yaml

SCHEMAS = Path(__file__).resolve().parents[1] / "deploy" / "kubernetes" / "schemas"
SERVER_GRACEFUL_TIMEOUT_DEFAULT = 20  # serve.py's defaults
SERVER_DRAIN_TIMEOUT_DEFAULT = 10


def strict(schema):
    """An OpenAPI v3 structural schema as JSON Schema that rejects unknown properties, as
    kubernetes-validate --strict does for the built-in kinds."""
    if isinstance(schema, dict):
        schema = {k: strict(v) for k, v in schema.items()}
        if "properties" in schema and "additionalProperties" not in schema \
                and not schema.get("x-kubernetes-preserve-unknown-fields"):
            schema["additionalProperties"] = False
        if schema.get("nullable"):
            schema.pop("nullable")
            if "type" in schema:
                schema["type"] = [schema["type"], "null"]
    elif isinstance(schema, list):
        schema = [strict(v) for v in schema]
    return schema


def custom_schema(doc):
    group = doc["apiVersion"].replace("/", "-")
    path = SCHEMAS / f"{group}-{doc['kind']}.json.gz"
    return strict(json.loads(gzip.decompress(path.read_bytes()))) if path.exists() else None


def main(name, rendered):
    docs = [d for d in yaml.safe_load_all(Path(rendered).read_text()) if d]
    by_kind = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], []).append(doc)
    results = []

    def check(passed, what):
        results.append(passed)
        print(f"  {'ok' if passed else 'FAILED'}: {name}: {what}")

    builtin = {"ConfigMap", "Deployment", "Service", "Ingress", "HorizontalPodAutoscaler",
               "PodDisruptionBudget", "Job", "NetworkPolicy"}
    for doc in docs:
        if doc["kind"] in builtin:
            continue  # kubernetes-validate --strict has checked them
        schema = custom_schema(doc)
        if schema is None:
            check(False, f"{doc['kind']} {doc['apiVersion']}: no schema in {SCHEMAS.name}/ to validate it with")
            continue
        errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(doc), key=str)
        check(not errors, f"{doc['kind']}/{doc['metadata']['name']} ({doc['apiVersion']}) valid against the "
              f"vendored CRD schema, strict{': ' + '; '.join(e.message for e in errors[:3]) if errors else ''}")

    check(not by_kind.get("Secret"), "no Secret rendered (they are referenced, created outside the repository)")
    for kind in ("Deployment", "Service", "Ingress", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Job",
                 "ConfigMap"):
        check(any(d["metadata"]["name"].startswith("starter-api") for d in by_kind.get(kind, [])),
              f"a {kind} for starter-api")

    deployment = next(d for d in by_kind["Deployment"] if d["metadata"]["name"] == "starter-api")
    pod = deployment["spec"]["template"]["spec"]
    api = next(c for c in pod["containers"] if c["name"] == "starter-api")
    config = next(d for d in by_kind["ConfigMap"] if d["metadata"]["name"].startswith("starter-api"))["data"]
    graceful = int(config.get("SERVER_GRACEFUL_TIMEOUT", SERVER_GRACEFUL_TIMEOUT_DEFAULT))
    drain = int(config.get("SERVER_DRAIN_TIMEOUT", SERVER_DRAIN_TIMEOUT_DEFAULT))
    pre_stop = api.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    pre_stop_seconds = int(pre_stop[-1]) if pre_stop[:1] == ["sleep"] else 0
    check(deployment["spec"]["replicas"] == 3, f"Deployment: {deployment['spec']['replicas']} replicas")
    check(api.get("livenessProbe", {}).get("httpGet", {}).get("path") == "/healthz", "liveness probe /healthz")
    check(api.get("readinessProbe", {}).get("httpGet", {}).get("path") == "/readyz", "readiness probe /readyz")
    check("startupProbe" in api, "a startup probe")
    grace = pod.get("terminationGracePeriodSeconds", 30)
    check(grace > pre_stop_seconds + drain + graceful,
          f"terminationGracePeriodSeconds {grace} > preStop {pre_stop_seconds} s + SERVER_DRAIN_TIMEOUT {drain} s "
          f"+ SERVER_GRACEFUL_TIMEOUT {graceful} s")

    job = next(d for d in by_kind["Job"] if d["metadata"]["name"] == "starter-api-migrate")
    job_pod = job["spec"]["template"]["spec"]
    check(job_pod["containers"][0]["command"] == ["python", "manage.py", "bootstrap"],
          "the migration Job runs python manage.py bootstrap")
    check(all("bootstrap" not in " ".join(c.get("command", []) + c.get("args", []))
              for c in pod["containers"] + pod.get("initContainers", [])),
          "the Deployment's pods run no migration themselves")

    for owner, spec in (("Deployment", pod), ("Job", job_pod)):
        pod_sc = spec.get("securityContext", {})
        for c in spec["containers"] + spec.get("initContainers", []):
            sc = c.get("securityContext", {})
            res = c.get("resources", {})
            check(pod_sc.get("runAsNonRoot") is True and pod_sc.get("runAsUser", 0) != 0
                  and sc.get("readOnlyRootFilesystem") is True and sc.get("allowPrivilegeEscalation") is False
                  and sc.get("capabilities", {}).get("drop") == ["ALL"]
                  and {"cpu", "memory"} <= set(res.get("requests", {})) and "memory" in res.get("limits", {}),
                  f"{owner} container {c['name']}: non-root, read-only root, no privilege escalation, no "
                  f"capabilities, CPU/memory requests and a memory limit")
            check(not c.get("image", "").endswith(":latest") or name == "base",
                  f"{owner} container {c['name']}: image {c.get('image')} pinned")
            check(not any("value" in e and any(w in e["name"] for w in ("PASSWORD", "SECRET", "TOKEN"))
                          for e in c.get("env", [])),
                  f"{owner} container {c['name']}: no secret value in env")

    hpa = by_kind["HorizontalPodAutoscaler"][0]
    pdb = by_kind["PodDisruptionBudget"][0]
    check(hpa["spec"]["minReplicas"] >= 3 and pdb["spec"].get("maxUnavailable") == 1,
          f"HPA {hpa['spec']['minReplicas']}-{hpa['spec']['maxReplicas']} replicas; PDB maxUnavailable 1")

    referenced = sorted({src["secret"]["name"] for v in pod.get("volumes", [])
                         for src in v.get("projected", {}).get("sources", []) if "secret" in src}
                        | {t["secretName"] for i in by_kind.get("Ingress", []) for t in i["spec"].get("tls", [])})
    print(f"  {name}: Secrets referenced (to be created in the cluster): {', '.join(referenced)}")
    kinds = ", ".join(f"{k} x{len(v)}" if len(v) > 1 else k for k, v in sorted(by_kind.items()))
    print(f"  {name}: {len(docs)} objects: {kinds}")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
