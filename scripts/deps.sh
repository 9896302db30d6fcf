# Sourced by scripts/test.sh and scripts/run.sh: install what is missing
# from Debian's packages (as root, with apt-get), or say what is needed.

# need_packages CMD PKG [CMD PKG ...]: for each CMD not found, install PKG
# (CMD `_`: install PKG).
need_packages() {
    local missing=()
    while [ $# -ge 2 ]; do
        if [ "$1" = _ ] || ! command -v "$1" >/dev/null 2>&1; then
            missing+=("$2")
        fi
        shift 2
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update </dev/null && apt-get install -y -q "${missing[@]}" </dev/null
    else
        echo "clinit: these packages are needed: ${missing[*]}" >&2
        exit 1
    fi
}

# The build: a C compiler (rusqlite's bundled SQLite) and protoc (the etcd
# client crate compiles etcd's .proto files when it is built).
need_build_tools() {
    command -v cc >/dev/null 2>&1 || need_packages _ gcc _ libc6-dev
    need_packages protoc protobuf-compiler
}
