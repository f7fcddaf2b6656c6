# Common helpers for xenvmm's scripts. Source it; do not run it.
# shellcheck shell=bash

set -euo pipefail

XENVMM_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Everything fetched at test time lives under the build directory, never in git.
XENVMM_CACHE="${XENVMM_CACHE:-$XENVMM_ROOT/target/cache}"
export XENVMM_ROOT XENVMM_CACHE

log() { printf '%s\n' "xenvmm: $*" >&2; }
die() { printf '%s\n' "xenvmm: error: $*" >&2; exit 1; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_updated=0
# apt_install PKG... installs the Debian packages that are missing.
apt_install() {
    local missing=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ $apt_updated -eq 0 ]; then
        log "apt-get update"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
        apt_updated=1
    fi
    log "installing ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# True when /dev/kvm is backed by hardware virtualization (VMX or SVM).
have_hw_kvm() {
    [ -c /dev/kvm ] && [ -w /dev/kvm ] || return 1
    [ -d /sys/module/kvm_pvm ] && return 1
    [ -d /sys/module/kvm_intel ] || [ -d /sys/module/kvm_amd ]
}

# xen_note_types VMLINUX prints the type numbers of the Xen ELF notes (owner "Xen") in the ELF
# file's .notes section, one a line, in file order (2 is XEN_ELFNOTE_HYPERCALL_PAGE).
xen_note_types() {
    local tmp words i n namesz descsz
    tmp=$(mktemp)
    objcopy -O binary --only-section=.notes "$1" "$tmp" || { rm -f "$tmp"; return 1; }
    mapfile -t words < <(od -An -v -tu4 -w4 "$tmp" | tr -d ' ')
    rm -f "$tmp"
    i=0
    n=${#words[@]}
    while [ $((i + 3)) -lt "$n" ]; do
        namesz=${words[i]}
        descsz=${words[i + 1]}
        # 7234904 is "Xen\0" read as a little-endian 32-bit word.
        if [ "$namesz" -eq 4 ] && [ "${words[i + 3]}" -eq 7234904 ]; then echo "${words[i + 2]}"; fi
        i=$((i + 3 + (namesz + 3) / 4 + (descsz + 3) / 4))
    done
}
