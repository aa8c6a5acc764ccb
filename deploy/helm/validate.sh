#!/usr/bin/env bash
# Validate the Helm chart offline with real tools (run by `./dev test` before pytest):
#   helm lint --strict, helm template, and kubeconform -strict against Kubernetes' JSON schemas.
# helm and kubeconform are Go modules built here once (cached under ~/.cache/classpulse); the
# schemas come from the kubernetes-validate wheel of the dev extras (PyPI), so nothing is fetched
# at validation time. Writes .cache/tools.env (CLASSPULSE_TEST_HELM) for the chart's tests.
#   deploy/helm/validate.sh            PYTHON=... to choose the interpreter that has kubernetes-validate
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
chart="$root/deploy/helm/classpulse"
HELM_VERSION=v3.22.0
KUBECONFORM_VERSION=v0.8.0
# Oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest schemas we ship.
KUBE_VERSIONS=(1.29.0 1.37.0)
cache="${XDG_CACHE_HOME:-$HOME/.cache}/classpulse"
python=${PYTHON:-python}
t0=$(date +%s.%N)

log() { printf '\033[1m[chart]\033[0m %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

go_bin() {
  if command -v go >/dev/null; then command -v go
  elif [ -x /usr/local/go/bin/go ]; then echo /usr/local/go/bin/go
  fi
}

# go_tool NAME PACKAGE MODULE VERSION: prints the path of NAME built from PACKAGE@VERSION.
go_tool() {
  local name=$1 pkg=$2 module=$3 version=$4 dir="$cache/tools/$1-$4" go
  go=$(go_bin)
  if [ -x "$dir/$name" ]; then
    # the module version recorded in the binary, not a name on disk, decides
    if [ -z "$go" ] || "$go" version -m "$dir/$name" | grep -qE "^[[:space:]]+mod[[:space:]]+${module}[[:space:]]+${version}[[:space:]]"; then
      echo "$dir/$name"; return
    fi
  fi
  [ -n "$go" ] || die "building $name $version needs Go (>= 1.24; e.g. /usr/local/go/bin/go from https://go.dev/dl)"
  log "building $name $version with $("$go" env GOVERSION) (once; cached in $cache)"
  mkdir -p "$dir"
  GOBIN="$dir" GOPATH="$cache/go" GOMODCACHE="$cache/go/mod" GOCACHE="$cache/go/build" GOFLAGS=-modcacherw \
    CGO_ENABLED=0 "$go" install "$pkg@$version" >&2
  echo "$dir/$name"
}

# Kubernetes JSON schemas from the kubernetes-validate wheel, made loadable offline: its files
# carry https://kubernetes.io/... ids and refs to /api/_definitions.json, which kubeconform would
# resolve over the network; drop the ids and make the refs relative to the folder.
schemas() {
  "$python" - "$cache/k8s-schemas" "${KUBE_VERSIONS[@]}" <<'PY'
import json, pathlib, sys
from importlib.metadata import PackageNotFoundError, version
from importlib.util import find_spec

spec = find_spec("kubernetes_validate")  # located, not imported: only its data files are used
try:
    version("kubernetes-validate")
except PackageNotFoundError:
    spec = None
if spec is None or not spec.submodule_search_locations:
    sys.exit("error: kubernetes-validate is not installed (the dev extras have it: ./dev setup)")
src_root = pathlib.Path(list(spec.submodule_search_locations)[0]) / "kubernetes-json-schema"
out_root = pathlib.Path(sys.argv[1]) / f"kubernetes-validate-{version('kubernetes-validate')}"
for kube in sys.argv[2:]:
    name = f"v{kube}-local-strict"
    src, out = src_root / name, out_root / name
    if not src.is_dir():
        sys.exit(f"error: kubernetes-validate {version('kubernetes-validate')} has no schemas for Kubernetes {kube}")
    if not (out / ".complete").exists():
        out.mkdir(parents=True, exist_ok=True)
        for f in src.glob("*.json"):
            doc = json.loads(f.read_text().replace('"/api/_definitions.json#', '"_definitions.json#'))
            doc.pop("$id", None)
            (out / f.name).write_text(json.dumps(doc))
        (out / ".complete").touch()
print(out_root)
PY
}

helm=$(go_tool helm helm.sh/helm/v3/cmd/helm helm.sh/helm/v3 "$HELM_VERSION")
kubeconform=$(go_tool kubeconform github.com/yannh/kubeconform/cmd/kubeconform github.com/yannh/kubeconform "$KUBECONFORM_VERSION")
schema_root=$(schemas)
location="$schema_root/{{ .NormalizedKubernetesVersion }}-local{{ .StrictSuffix }}/{{ .ResourceKind }}{{ .KindSuffix }}.json"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
export HELM_CACHE_HOME="$out/helm-cache" HELM_CONFIG_HOME="$out/helm-config" HELM_DATA_HOME="$out/helm-data"

validate() {  # validate KUBE-VERSION FILE...: kubeconform -strict, every kind must have a schema
  "$kubeconform" -strict -summary -kubernetes-version "$1" -schema-location "$location" "${@:2}"
}

# The validator must be able to fail: an unknown field in a Deployment is rejected.
cat >"$out/canary.yaml" <<'YAML'
apiVersion: apps/v1
kind: Deployment
metadata: {name: canary}
spec:
  selector: {matchLabels: {app: canary}}
  template:
    metadata: {labels: {app: canary}}
    spec:
      containers: [{name: canary, image: canary, imagePolicy: Always}]
YAML
if validate "${KUBE_VERSIONS[0]}" "$out/canary.yaml" >/dev/null 2>&1; then
  die "kubeconform accepted an invalid Deployment: the schemas under $schema_root are not being used"
fi

values_files=("")
for f in "$chart"/ci/*-values.yaml; do values_files+=("$f"); done
for kube in "${KUBE_VERSIONS[@]}"; do
  rendered=()
  for values in "${values_files[@]}"; do
    label=${values:+$(basename "$values" .yaml)}; label=${label:-default-values}
    # the chart requires a token secret; the default values get one (a ci/ file brings its own or a Secret)
    args=(${values:+-f "$values"})
    [ -n "$values" ] || args=(--set secret.tokenSecret=validate-only-not-a-real-secret-0123456789)
    "$helm" lint --strict --quiet --kube-version "$kube" "${args[@]}" "$chart" >&2
    rendered+=("$out/$label-k8s-$kube.yaml")
    "$helm" template classpulse "$chart" --namespace classpulse --kube-version "$kube" "${args[@]}" >"${rendered[-1]}"
  done
  log "helm lint + template, kubeconform -strict (Kubernetes $kube): ${rendered[*]##*/}"
  validate "$kube" "${rendered[@]}" >&2
done

mkdir -p "$root/.cache"
echo "export CLASSPULSE_TEST_HELM=$helm" >"$root/.cache/tools.env"
log "chart valid ($(printf '%.1f' "$(echo "$(date +%s.%N) - $t0" | bc)") s)"
