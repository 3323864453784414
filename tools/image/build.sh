#!/usr/bin/env bash
# `make image`: the controller image as an OCI image layout, built without a container
# engine or daemon, from what a Debian machine reaches: the release binary and a
# distroless-"cc"-like base made of Debian packages (tools/image/debian-packages).
#
#   tools/image/build.sh           build the binary and the layout (prints its path)
#   tools/image/build.sh --pins    print debian-packages lines for the versions apt offers
#
# Output: $POOLWARDEN_IMAGE_OUT, default $CARGO_TARGET_DIR/image/oci (target/image/oci
# without CARGO_TARGET_DIR), an OCI layout whose tag is the crate version (0.1.0) and
# `dev`: `umoci ls --layout <dir>`, `skopeo copy oci:<dir>:dev docker-archive:x.tar`.
#
# The image (the Dockerfile describes the same one; tests/image.rs checks they agree):
#   layer 1  the base: libc6, libgcc-s1 (+ gcc-12-base, its copyright), ca-certificates
#            (the bundle /etc/ssl/certs/ca-certificates.crt, concatenated as
#            update-ca-certificates would), /etc/os-release from base-files,
#            /etc/passwd and /etc/group with nonroot 65532, /tmp (1777),
#            /home/nonroot, /var/lib/dpkg/status.d/<package> (how distroless records
#            its packages, so SBOM tools and scanners see them). No shell, no package
#            manager: no maintainer script runs (dpkg-deb -x only), and
#            update-ca-certificates (a shell script) is left out, as are the manuals,
#            lintian overrides and glibc's gconv modules (iconv; Rust never calls it).
#   layer 2  /poolwarden, the release binary (`cargo build --release --locked --bin
#            poolwarden`, what the Dockerfile builds).
#   config   Entrypoint ["/poolwarden"], Cmd ["controller"], User 65532:65532, port
#            8080/tcp, WorkingDir /home/nonroot, Env PATH and SSL_CERT_FILE (as
#            distroless sets them), OCI labels; a history entry per layer.
#
# Reproducible: every file's mtime, the config's `created` and the layer timestamps are
# SOURCE_DATE_EPOCH (default: the last commit's time), owners are fixed, the packages
# are pinned by version and hash; the same binary gives the same layout digests.
#
# Tools: Debian's umoci (installed with apt-get when missing) and dpkg-deb. The .deb
# files are cached under /var/tmp/poolwarden-image/debs (keyed by name and version), the
# binary under $CARGO_TARGET_DIR/release.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD
cache="${POOLWARDEN_IMAGE_CACHE:-/var/tmp/poolwarden-image}"
pins=tools/image/debian-packages

as_root() {
  if [[ $(id -u) == 0 ]]; then
    "$@"
  elif command -v sudo >/dev/null; then
    sudo "$@"
  else
    echo "image: need root to run: $*" >&2
    exit 1
  fi
}

apt_install() {
  echo "image: installing Debian's $*" >&2
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

if [[ "${1:-}" == --pins ]]; then
  awk '/^[a-z]/ { print $1 }' "$pins" | while read -r name; do
    apt-cache show "$name" | awk -v n="$name" '/^Version:/ { v = $2 } /^SHA256:/ { print n, v, $2; exit }'
  done
  exit 0
fi

command -v umoci >/dev/null || apt_install umoci
command -v dpkg-deb >/dev/null || { echo "image: needs dpkg-deb (a Debian system)" >&2; exit 1; }
# umoci keeps file owners only when it runs as root (else it maps them to the caller).
[[ $(id -u) == 0 ]] || { echo "image: run as root (umoci records file owners as root only)" >&2; exit 1; }

version=$(awk -F'"' '/^version = / { print $2; exit }' Cargo.toml)
# Not exported: the cc crate (jemalloc's build) reruns when SOURCE_DATE_EPOCH changes,
# so giving cargo the commit's time would rebuild the binary at every commit.
epoch=${SOURCE_DATE_EPOCH:-$(git -C "$repo" log -1 --format=%ct 2>/dev/null || echo 0)}
created=$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)
target="${CARGO_TARGET_DIR:-$repo/target}"
out="${POOLWARDEN_IMAGE_OUT:-$target/image/oci}"

# The binary, as the Dockerfile builds it. Without the variables cargo sets for a
# build script or a test (tests/image.rs runs this script): ring's build script watches
# CARGO_PKG_NAME, CARGO_MANIFEST_DIR, ..., so inheriting them from a test would make the
# release build differ from `make image`'s and be redone each time the caller changes.
harness=()
for var in $(compgen -e); do
  case $var in
    CARGO_MANIFEST_* | CARGO_PKG_* | CARGO_CFG_* | CARGO_CRATE_NAME | CARGO_BIN_NAME | \
      CARGO_PRIMARY_PACKAGE | CARGO_TARGET_TMPDIR | CARGO_MAKEFLAGS | OUT_DIR)
      harness+=(-u "$var")
      ;;
  esac
done
env "${harness[@]}" "${CARGO:-cargo}" build --release --locked --bin poolwarden
binary="$target/release/poolwarden"

# The pinned packages, downloaded once per version and checked against their hash.
mkdir -p "$cache/debs"
debs=()
while read -r name pinned sha; do
  deb="$cache/debs/${name}_${pinned}.deb"
  if [[ ! -f "$deb" ]] || ! echo "$sha  $deb" | sha256sum --check --status; then
    tmp=$(mktemp -d "$cache/debs/.fetch.XXXXXX")
    chmod 755 "$tmp"
    if ! (cd "$tmp" && apt-get download -qq "$name=$pinned" 2>/dev/null); then
      as_root apt-get update -qq
      (cd "$tmp" && apt-get download -qq "$name=$pinned" 2>/dev/null) || {
        echo "image: apt offers no $name $pinned (a point release replaced it?);" \
          "update $pins from: tools/image/build.sh --pins" >&2
        rm -rf "$tmp"
        exit 1
      }
    fi
    mv "$tmp"/*.deb "$deb"
    rm -rf "$tmp"
    if ! echo "$sha  $deb" | sha256sum --check --status; then
      echo "image: $deb does not have the sha256 $pins pins ($sha)" >&2
      rm -f "$deb"
      exit 1
    fi
  fi
  debs+=("$name:$deb")
done < <(grep '^[a-z]' "$pins")

# One build at a time per output directory; the layout appears whole (rename).
mkdir -p "$(dirname "$out")"
exec 9>"$out.lock"
flock 9
work=$(mktemp -d "$(dirname "$out")/.image.XXXXXX")
trap 'rm -rf "$work"' EXIT
base="$work/base"
mkdir -p "$base"

for entry in "${debs[@]}"; do
  name=${entry%%:*}
  deb=${entry#*:}
  if [[ "$name" == base-files ]]; then
    # Only what names the distribution; the rest of base-files is a shell's world.
    dpkg-deb -x "$deb" "$work/base-files"
    install -D -m 0644 "$work/base-files/usr/lib/os-release" "$base/usr/lib/os-release"
    install -D -m 0644 "$work/base-files/etc/debian_version" "$base/etc/debian_version"
    ln -s ../usr/lib/os-release "$base/etc/os-release"
  else
    dpkg-deb -x "$deb" "$base"
  fi
  # The package's record, as distroless writes it, for SBOM tools and scanners.
  mkdir -p "$base/var/lib/dpkg/status.d"
  {
    dpkg-deb -f "$deb" Package
    echo "Status: install ok installed"
    dpkg-deb -f "$deb" | grep -v '^Package:'
  } | sed '1s/^/Package: /' >"$base/var/lib/dpkg/status.d/$name"
done

# Left out: a shell script, manuals, lintian's notes, iconv's modules. Copyright
# files stay (the licences travel with the binaries).
rm -rf "$base/usr/sbin/update-ca-certificates" "$base/etc/ca-certificates" \
  "$base/usr/share/lintian" "$base/usr/share/man" "$base/usr/share/info" \
  "$base/usr/lib/x86_64-linux-gnu/gconv"
find "$base/usr/share/doc" -mindepth 2 ! -name copyright ! -type d -delete
rmdir "$base/usr/sbin" 2>/dev/null || true

# The CA bundle update-ca-certificates would write: every certificate of the package,
# in name order, each ending with a newline.
mkdir -p "$base/etc/ssl/certs"
(
  export LC_ALL=C
  for crt in "$base"/usr/share/ca-certificates/mozilla/*.crt; do
    cat "$crt"
    [[ -z "$(tail -c1 "$crt")" ]] || echo
  done
) >"$base/etc/ssl/certs/ca-certificates.crt"
[[ $(grep -c 'BEGIN CERTIFICATE' "$base/etc/ssl/certs/ca-certificates.crt") -gt 100 ]] || {
  echo "image: the CA bundle has too few certificates" >&2
  exit 1
}

cp -r tools/image/rootfs/. "$base/"
install -d -m 1777 "$base/tmp"
install -d -m 0700 "$base/root"
install -d -m 0700 -o 65532 -g 65532 "$base/home/nonroot"
chown -R root:root "$base"
chown 65532:65532 "$base/home/nonroot"
chmod -R go-w,a+rX "$base"
chmod 1777 "$base/tmp"
chmod 0700 "$base/root" "$base/home/nonroot"
chmod 0644 "$base/etc/passwd" "$base/etc/group" "$base/etc/nsswitch.conf"

find "$base" -exec touch -h -d "@$epoch" {} +

# Two layers, base then binary, each made by umoci's repack of an unpacked bundle
# (umoci 0.4.7's `insert` writes layers without the tar end-of-archive blocks).
layout="$work/oci"
bundle="$work/bundle"
history=(--history.created "$created" --history.author poolwarden)
umoci init --layout "$layout"
umoci new --image "$layout:$version"
umoci unpack --image "$layout:$version" "$bundle"
cp -a "$base/." "$bundle/rootfs/"
chmod 0755 "$bundle/rootfs"
touch -h -d "@$epoch" "$bundle/rootfs"
umoci repack "${history[@]}" --history.created_by "tools/image/build.sh: base ($(grep '^[a-z]' "$pins" | awk '{ printf "%s%s=%s", sep, $1, $2; sep = " " }'))" \
  --image "$layout:$version" "$bundle"
# A repack's next repack starts from the image the bundle was unpacked from: unpack anew.
rm -rf "$bundle"
umoci unpack --image "$layout:$version" "$bundle"
install -m 0755 -o 0 -g 0 "$binary" "$bundle/rootfs/poolwarden"
touch -h -d "@$epoch" "$bundle/rootfs/poolwarden" "$bundle/rootfs"
umoci repack "${history[@]}" --history.created_by "tools/image/build.sh: cargo build --release --locked --bin poolwarden" \
  --image "$layout:$version" "$bundle"
umoci config --no-history --image "$layout:$version" \
  --created "$created" --os linux --architecture amd64 \
  --config.entrypoint /poolwarden --config.cmd controller \
  --config.user 65532:65532 --config.exposedports 8080/tcp \
  --config.workingdir /home/nonroot \
  --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  --config.env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
  --config.label org.opencontainers.image.title=poolwarden \
  --config.label org.opencontainers.image.version="$version" \
  --config.label org.opencontainers.image.licenses=Apache-2.0
umoci tag --image "$layout:$version" dev
umoci gc --layout "$layout"

rm -rf "$out.old"
[[ -e "$out" ]] && mv "$out" "$out.old"
mv "$layout" "$out"
rm -rf "$out.old"
echo "$out"
