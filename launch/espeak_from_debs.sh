#!/usr/bin/env bash
# espeak-ng for a machine without apt or internet (e.g. a lent GPU box), from Debian packages fetched elsewhere.
#   on a Debian 12 machine with apt:  bash launch/espeak_from_debs.sh download DIR
#   copy DIR over, then on the target: bash launch/espeak_from_debs.sh install DIR PREFIX
#   and put PREFIX/bin on PATH (the install prints the line). PREFIX/bin/espeak-ng is a wrapper that sets
#   LD_LIBRARY_PATH and ESPEAK_DATA_PATH for espeak-ng alone, so no other program sees the extracted libraries.
# The list is espeak-ng's dependency closure minus what a CUDA Ubuntu 24.04 image already has (libc, libstdc++).
set -euo pipefail
PACKAGES=(espeak-ng espeak-ng-data libespeak-ng1 libpcaudio0 libsonic0 libasound2 libasound2-data libpulse0
          libasyncns0 libdbus-1-3 libsndfile1 libflac12 libogg0 libvorbis0a libvorbisenc2 libopus0 libmpg123-0
          libmp3lame0 libsystemd0 libcap2 libgcrypt20 liblz4-1 liblzma5 libzstd1 libgpg-error0 libx11-6 libx11-xcb1
          libxcb1 libxau6 libxdmcp6 libbsd0 libmd0 libx11-data)
case "${1:-}" in
  download)
    dir=${2:?usage: $0 download DIR}; mkdir -p "$dir"
    (cd "$dir" && apt-get download "${PACKAGES[@]}") ;;
  install)
    dir=${2:?usage: $0 install DIR PREFIX}; prefix=$(realpath -m "${3:?usage: $0 install DIR PREFIX}")
    ls "$dir"/espeak-ng_*.deb >/dev/null 2>&1 || { echo "error: no espeak-ng_*.deb in $dir; run '$0 download $dir' on a machine with apt first" >&2; exit 2; }
    mkdir -p "$prefix/bin"
    for deb in "$dir"/*.deb; do dpkg -x "$deb" "$prefix"; done
    lib=$prefix/usr/lib/x86_64-linux-gnu
    printf '#!/bin/sh\nLD_LIBRARY_PATH=%s ESPEAK_DATA_PATH=%s exec %s "$@"\n' \
      "$lib:$lib/pulseaudio:$prefix/lib/x86_64-linux-gnu" "$lib" "$prefix/usr/bin/espeak-ng" > "$prefix/bin/espeak-ng.tmp"
    chmod +x "$prefix/bin/espeak-ng.tmp" && mv "$prefix/bin/espeak-ng.tmp" "$prefix/bin/espeak-ng"
    "$prefix/bin/espeak-ng" -q "test" || { echo "error: the extracted espeak-ng does not run (missing libraries above)" >&2; exit 1; }
    echo "espeak-ng installed; use it with: export PATH=$prefix/bin:\$PATH" ;;
  *) echo "usage: $0 download DIR | install DIR PREFIX" >&2; exit 2 ;;
esac
