#!/bin/sh
# make-certs.sh DIR: the certificates sluice's tests use, made with the openssl command.
#   ca.crt ca.key              test CA
#   server.crt server.key      CN=localhost, subjectAltName DNS:localhost, IP:127.0.0.1, IP:::1
#   client.crt client.key      CN=app, for client-certificate logins
#   other-ca.crt other-ca.key  an unrelated CA, for certificates that must not be trusted
#   other-client.crt other-client.key  CN=app signed by the unrelated CA
# ECDSA P-256 keys, so a full run takes a fraction of a second. Quiet unless openssl fails.
# Idempotent: a complete set is left alone; an incomplete one is replaced as a whole.
# Concurrent runs on the same DIR wait for each other.
set -eu

if [ $# -ne 1 ]; then
    echo "usage: $0 DIR" >&2
    exit 2
fi
dir=$1
files="ca.crt ca.key server.crt server.key client.crt client.key other-ca.crt other-ca.key
       other-client.crt other-client.key"
days=3650

umask 077
mkdir -p "$dir"

have_all_files() {
    for f in $files; do
        [ -s "$dir/$f" ] || return 1
    done
}

# Runs openssl, showing its output only when it fails.
run() {
    if ! out=$(openssl "$@" 2>&1); then
        echo "make-certs.sh: openssl $1 failed:" >&2
        echo "$out" >&2
        exit 1
    fi
}

new_key() {
    run genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1"
}

new_ca() { # name subject
    new_key "$work/$1.key"
    printf '%s\n' "basicConstraints = critical, CA:TRUE" \
        "keyUsage = critical, keyCertSign, cRLSign" \
        "subjectKeyIdentifier = hash" > "$work/$1.ext"
    run req -new -key "$work/$1.key" -subj "$2" -out "$work/$1.csr"
    run x509 -req -in "$work/$1.csr" -signkey "$work/$1.key" -days "$days" -sha256 \
        -extfile "$work/$1.ext" -out "$work/$1.crt"
}

new_leaf() { # name subject ca serial extensions...
    name=$1 subject=$2 ca=$3 serial=$4
    shift 4
    new_key "$work/$name.key"
    printf '%s\n' "basicConstraints = critical, CA:FALSE" \
        "keyUsage = critical, digitalSignature" \
        "authorityKeyIdentifier = keyid" "$@" > "$work/$name.ext"
    run req -new -key "$work/$name.key" -subj "$subject" -out "$work/$name.csr"
    run x509 -req -in "$work/$name.csr" -CA "$work/$ca.crt" -CAkey "$work/$ca.key" \
        -set_serial "$serial" -days "$days" -sha256 -extfile "$work/$name.ext" \
        -out "$work/$name.crt"
}

# Serialise concurrent runs (unit and integration tests may share DIR).
if command -v flock >/dev/null 2>&1; then
    exec 9>"$dir/.make-certs.lock"
    flock 9
fi

if have_all_files; then
    exit 0
fi

work=$(mktemp -d "$dir/.make-certs.XXXXXX")
trap 'rm -rf "$work"' EXIT

new_ca ca "/CN=sluice test CA"
new_ca other-ca "/CN=sluice unrelated test CA"
new_leaf server "/CN=localhost" ca 4096 \
    "extendedKeyUsage = serverAuth" "subjectAltName = DNS:localhost, IP:127.0.0.1, IP:::1"
new_leaf client "/CN=app" ca 4097 "extendedKeyUsage = clientAuth"
new_leaf other-client "/CN=app" other-ca 4098 "extendedKeyUsage = clientAuth"

for f in $files; do
    mv -f "$work/$f" "$dir/$f"
done
chmod 0600 "$dir"/*.key
chmod 0644 "$dir"/*.crt
