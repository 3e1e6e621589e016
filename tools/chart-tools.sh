#!/usr/bin/env bash
# Install the chart tooling into <repo>/.local/bin (gitignored), idempotently:
#   helm                 built from the Go module proxy (HELM_VERSION)
#   promtool             the binary only, taken out of Debian's prometheus package
#   kubernetes-validate  pip-installed into the project venv (.venv)
# Works as root on a fresh Debian machine (CI). Tools already present are left alone.
set -euo pipefail

HELM_VERSION="${HELM_VERSION:-v3.21.4}"
KUBERNETES_VALIDATE_VERSION="${KUBERNETES_VALIDATE_VERSION:-1.37.0}"

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="$REPO/.local/bin"
VENV="${VENV:-$REPO/.venv}"
mkdir -p "$BIN"

say() { echo "chart-tools: $*"; }

# --- helm -------------------------------------------------------------------------------------
install_helm() {
    # helm built without release ldflags reports only "v3.21": a stamp file records the exact version.
    local stamp="$BIN/.helm-version"
    if [[ -x "$BIN/helm" && -f "$stamp" && "$(cat "$stamp")" == "$HELM_VERSION" ]] \
        && "$BIN/helm" version --short >/dev/null 2>&1; then
        say "helm $HELM_VERSION already in $BIN"
        return
    fi
    local go=""
    if command -v go >/dev/null 2>&1; then
        go="$(command -v go)"
    elif [[ -x /usr/local/go/bin/go ]]; then
        go=/usr/local/go/bin/go
    else
        say "no Go toolchain found; installing Debian's golang-go"
        apt-get install -y --no-install-recommends golang-go >/dev/null \
            || { apt-get update -qq && apt-get install -y --no-install-recommends golang-go >/dev/null; }
        go="$(command -v go)"
    fi
    say "building helm $HELM_VERSION with $("$go" version | cut -d' ' -f3) (cold: a few minutes; cached after)"
    local start=$SECONDS
    # The release build's ldflags: the version, and Kubernetes 1.36 (client-go v0.36) as the
    # default --kube-version instead of 1.20. Tests pass --kube-version explicitly anyway.
    local ld="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
    local k
    for k in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
        ld+=" -X $k.k8sVersionMajor=1 -X $k.k8sVersionMinor=36"
    done
    GOBIN="$BIN" CGO_ENABLED=0 "$go" install -trimpath -ldflags "$ld" \
        "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
    echo "$HELM_VERSION" >"$stamp"
    say "helm built in $((SECONDS - start)) s: $("$BIN/helm" version --short)"
}

# --- promtool ---------------------------------------------------------------------------------
install_promtool() {
    if [[ -x "$BIN/promtool" ]] && "$BIN/promtool" --version >/dev/null 2>&1; then
        say "promtool already in $BIN ($("$BIN/promtool" --version 2>&1 | head -n1))"
        return
    fi
    local tmp
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' RETURN
    say "downloading Debian's prometheus package for its promtool binary"
    if ! (cd "$tmp" && apt-get download prometheus >/dev/null 2>&1); then
        say "apt-get download failed; running apt-get update and retrying"
        apt-get update -qq
        (cd "$tmp" && apt-get download prometheus >/dev/null)
    fi
    dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/x"
    install -m 0755 "$tmp/x/usr/bin/promtool" "$BIN/promtool"
    say "installed $("$BIN/promtool" --version 2>&1 | head -n1)"
}

# --- kubernetes-validate ----------------------------------------------------------------------
install_kubernetes_validate() {
    if [[ -x "$VENV/bin/kubernetes-validate" ]]; then
        say "kubernetes-validate already in $VENV"
    else
        if [[ ! -x "$VENV/bin/python" ]]; then
            say "creating the venv $VENV"
            python3 -m venv "$VENV"
        fi
        say "pip installing kubernetes-validate==$KUBERNETES_VALIDATE_VERSION into $VENV"
        "$VENV/bin/pip" install -q "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
    fi
    # The tests look for every tool in .local/bin.
    ln -sf "$VENV/bin/kubernetes-validate" "$BIN/kubernetes-validate"
}

start=$SECONDS
install_promtool
install_kubernetes_validate
install_helm
say "done in $((SECONDS - start)) s; tools in $BIN"
