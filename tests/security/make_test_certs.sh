#!/usr/bin/env bash
# Writes fresh test certificates into DIR (EC P-256 keys, valid for 2 days):
#   ca.pem                          the CA that signs the server and the good client
#   server.pem server.key           server certificate for localhost, 127.0.0.1, scanserve.test
#   client.pem client.key           client certificate signed by ca.pem
#   rogue_ca.pem                    an unrelated CA
#   rogue_client.pem rogue_client.key  client certificate signed by rogue_ca.pem
# Exit status 3 (and a reason on stderr) when openssl is not installed, so callers can skip.
set -euo pipefail
dir=${1:?usage: make_test_certs.sh DIR}
if ! command -v openssl >/dev/null 2>&1; then
  echo "openssl not found (Debian package: openssl)" >&2
  exit 3
fi
mkdir -p "$dir"
cd "$dir"

key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

ca() {  # ca NAME SUBJECT
  key "$1.key"
  openssl req -x509 -new -key "$1.key" -sha256 -days 2 -subj "/CN=$2" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign" \
    -out "$1.pem"
}

leaf() {  # leaf NAME CA SUBJECT EXTENSIONS
  key "$1.key"
  openssl req -new -key "$1.key" -subj "/CN=$3" -out "$1.csr"
  printf '%s\n' "$4" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA "$2.pem" -CAkey "$2.key" -CAcreateserial -sha256 -days 2 \
    -extfile "$1.ext" -out "$1.pem" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}

ca ca "scanserve test CA"
ca rogue_ca "unrelated test CA"
leaf server ca "scanserve.test" \
  "subjectAltName=DNS:scanserve.test,DNS:localhost,IP:127.0.0.1
extendedKeyUsage=serverAuth"
leaf client ca "scanserve test client" "extendedKeyUsage=clientAuth"
leaf rogue_client rogue_ca "rogue test client" "extendedKeyUsage=clientAuth"
