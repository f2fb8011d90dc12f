#!/usr/bin/env bash
# Container images without a registry: podman (runc) and a Debian base built locally, so
# deploy/Dockerfile* build and run on machines that can reach only Debian's mirrors and
# PyPI. Used by tests/deploy (the image and compose tests) and by hand:
#   scripts/containers.sh setup            podman, runc, mmdebstrap, podman-compose; checks
#   scripts/containers.sh base             localhost/voxwire-base:bookworm (mmdebstrap)
#   scripts/containers.sh build cpu|cuda   localhost/voxwire:cpu or :cuda on that base
# Every subcommand points podman at deploy/local/containers.conf (runc, lowered ulimits).
# VOXWIRE_BASE_IMAGE names another base (e.g. python:3.11-slim-bookworm where a registry
# is reachable: then `base` builds nothing).
source "$(dirname "$0")/common.sh"

export CONTAINERS_CONF="$ROOT/deploy/local/containers.conf"
LOCAL_BASE="localhost/voxwire-base:bookworm"
BASE_IMAGE="${VOXWIRE_BASE_IMAGE:-$LOCAL_BASE}"
SUITE=bookworm

say() { echo "containers.sh: $*" >&2; }

# timed NAME CMD...: run CMD and print how long it took.
timed() {
  local name="$1" t0 t1
  shift
  t0=$(date +%s.%N)
  "$@"
  t1=$(date +%s.%N)
  say "$name took $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }') s"
}

do_setup() {
  # dnsname: podman 4.3 here networks through CNI, and without this plugin compose's
  # services cannot find each other by name (the nodes cannot reach "redis")
  local pkgs=(podman runc mmdebstrap podman-compose
    golang-github-containernetworking-plugin-dnsname)
  # rootless podman maps users through newuidmap and networks through slirp4netns
  [ "$(id -u)" = 0 ] || pkgs+=(uidmap slirp4netns)
  apt_need "${pkgs[@]}"
  local runtime
  runtime=$(podman info --format '{{.Host.OCIRuntime.Name}}')
  if [ "$runtime" != runc ]; then
    say "podman uses '$runtime', not runc: is $CONTAINERS_CONF read?"
    return 1
  fi
  podman-compose version >/dev/null
  say "$(podman --version), runtime $runtime, $(podman-compose version 2>/dev/null \
    | grep -m1 -o 'podman-compose.*')"
}

# The machine's own Debian mirrors, as one-line sources for $SUITE (main, updates,
# security): read from its apt sources so that no host name is written into the project.
debian_sources() {
  python3 - "$SUITE" /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
    /etc/apt/sources.list.d/*.sources <<'PY'
import os, re, sys

suite, paths = sys.argv[1], [p for p in sys.argv[2:] if os.path.isfile(p)]
found = []  # (uri, suites) of every enabled "deb" entry
for path in paths:
    text = open(path, encoding="utf-8").read()
    if path.endswith(".sources"):  # deb822 stanzas
        for stanza in re.split(r"\n\s*\n", text):
            fields = dict(
                (k.strip().lower(), v.strip())
                for k, v in re.findall(r"^([A-Za-z-]+):(.*)$", stanza, re.M)
            )
            if "deb" in fields.get("types", "").split() and fields.get("enabled", "yes") != "no":
                for uri in fields.get("uris", "").split():
                    found.append((uri, fields.get("suites", "").split()))
    else:
        for line in text.splitlines():
            words = re.sub(r"\[[^]]*\]", "", line.split("#")[0]).split()
            if len(words) >= 3 and words[0] == "deb":
                found.append((words[1], [words[2]]))

# Debian's archives only (a third-party list needs keys the base does not have): the
# main archive serves "<codename>", the security archive "<codename>-security".
debian = [(u, s) for u, s in found if "debian" in u]
main = [u for u, s in debian if any(re.fullmatch(r"[a-z]+(-updates)?", x) for x in s)
        and "security" not in u]
security = [u for u, s in debian if any(x.endswith("-security") for x in s)]
if not main:
    sys.exit("no Debian mirror in the apt sources: set VOXWIRE_DEBIAN_SOURCES")
print(f"deb {main[0]} {suite} main")
print(f"deb {main[0]} {suite}-updates main")
if security:
    print(f"deb {security[0]} {suite}-security main")
PY
}

do_base() {
  if podman image exists "$BASE_IMAGE"; then
    say "$BASE_IMAGE is present"
  elif [ "$BASE_IMAGE" != "$LOCAL_BASE" ]; then
    timed "pull $BASE_IMAGE" podman pull "$BASE_IMAGE"
  else
    build_base
  fi
  # a container runs (runtime, ulimits, storage), with what the Dockerfiles need
  [ "$BASE_IMAGE" != "$LOCAL_BASE" ] || podman run --rm "$BASE_IMAGE" python3 -c 'import venv'
}

build_base() {
  apt_need mmdebstrap
  local sources=()
  if [ -n "${VOXWIRE_DEBIAN_SOURCES:-}" ]; then
    mapfile -t sources <<<"$VOXWIRE_DEBIAN_SOURCES"
  else
    mapfile -t sources < <(debian_sources)
  fi
  say "building $BASE_IMAGE from: ${sources[*]}"
  # The host's extra CA certificates go in too: where outgoing HTTPS is intercepted, pip
  # in a build fails with CERTIFICATE_VERIFY_FAILED without them (none elsewhere).
  local hook='for c in /usr/local/share/ca-certificates/*.crt; do
      [ -e "$c" ] && cp "$c" "$1/usr/local/share/ca-certificates/"; done
    chroot "$1" update-ca-certificates >/dev/null'
  local_base() {
    mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,ca-certificates \
      --customize-hook="$hook" "$SUITE" - "${sources[@]}" \
      | podman import --quiet \
        --change 'ENV LANG=C.UTF-8' \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["/bin/bash"]' - "$BASE_IMAGE" >/dev/null
  }
  timed "base image $BASE_IMAGE" local_base
}

# build KIND [podman build options]: localhost/voxwire:KIND from deploy/Dockerfile(.cuda);
# the options go to podman build (e.g. --build-arg PIP_OPTIONS=... for the CUDA image).
do_build() {
  local kind="${1:-}" file
  shift || true
  case "$kind" in
    cpu) file=deploy/Dockerfile ;;
    cuda) file=deploy/Dockerfile.cuda ;;
    *) say "build: cpu or cuda, not '$kind'"; return 2 ;;
  esac
  do_base
  # docker format: the OCI image format has no HEALTHCHECK, and podman would drop it
  timed "image localhost/voxwire:$kind" podman build --format docker \
    --build-arg "BASE_IMAGE=$BASE_IMAGE" "$@" \
    -f "$file" -t "localhost/voxwire:$kind" . >&2
  # each build leaves the last one's stages untagged; drop those older than a day, so a
  # long-lived CI machine does not fill up yet the layer cache of recent runs stays
  podman image prune -f --filter until=24h >/dev/null || true
  say "localhost/voxwire:$kind: $(podman image inspect --format '{{.Size}}' \
    "localhost/voxwire:$kind" | awk '{ printf "%.0f MB", $1 / 1e6 }')"
}

cmd="${1:-}"
shift || true
case "$cmd" in
  setup) timed setup do_setup ;;
  base) do_base ;;
  build) do_build "$@" ;;
  *) echo "usage: $0 setup | base | build cpu|cuda [podman build options]" >&2; exit 2 ;;
esac
