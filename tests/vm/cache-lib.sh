# tests/vm/cache-lib.sh: sourced by tests/vm/fetch-kernel and
# tests/vm/fetch-headers, which keep what they download in a cache under
# /var/cache/spillway.
#
# An entry CACHE/NAME is only ever created by renaming a finished staging
# directory, so a reader that finds it complete needs no lock; writers of
# one entry are serialised by flock on CACHE/.lock-NAME. The caller defines
# `complete DIR`, true when DIR is a finished entry, and checks it again
# after cache_lock: another writer may have finished while it waited.

# cache_lock CACHE NAME: take the entry's lock (fd 9, held until exit).
cache_lock() {
    mkdir -p "$1"
    exec 9>"$1/.lock-$2"
    flock 9
}

# cache_stage CACHE NAME: set $stage, a staging directory inside CACHE, and
# $download, a temporary directory that `apt-get download` can write; both
# are removed at exit.
cache_stage() {
    stage=$(mktemp -d "$1/.stage-$2.XXXXXX")
    chmod 755 "$stage"   # mktemp makes it 0700; the cache is shared
    download=$(mktemp -d "${TMPDIR:-/tmp}/spw-dl.XXXXXX")
    trap 'rm -rf "$stage" "$download"' EXIT
    # apt-get download drops to the _apt user; give it a directory it can
    # write, otherwise it falls back to root and warns.
    if getent passwd _apt >/dev/null; then chown _apt "$download"; fi
}

# cache_commit CACHE NAME WHO: rename the staged entry into place, if the
# caller's `complete` accepts it; else WHO says so and the script fails.
cache_commit() {
    complete "$stage" || { echo "$3: incomplete cache entry $1/$2" >&2; exit 1; }
    rm -rf "${1:?}/$2"
    mv "$stage" "$1/$2"
}
