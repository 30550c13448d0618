#!/usr/bin/env bash
# Makes a private CA and certificates it signs, for ferryd's TLS and for
# clients' certificates under mutual TLS. Needs openssl (Debian: openssl).
#
#   deploy/make-certs.sh DIR server NAME [NAME...]
#       DIR/ca.crt, DIR/ca.key (made once, reused after), and
#       DIR/server.crt, DIR/server.key for ferryd, valid for each NAME
#       (host names or IP addresses clients dial).
#   deploy/make-certs.sh DIR client CN
#       DIR/CN.crt, DIR/CN.key: a client certificate (for --tls_client_ca).
#
# Clients verify ferryd with DIR/ca.crt (--tls_ca). Keys are written 0600;
# keep ca.key off the broker if you can: it mints certificates. Renewing is
# running the same command again: ferryd picks the new files up within
# --tls_refresh, without dropping connections.
set -euo pipefail

usage() {
  sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}
(($# >= 3)) || usage
dir=$1 kind=$2
shift 2
days=${FERRY_CERT_DAYS:-825}
command -v openssl >/dev/null || { echo "make-certs: needs openssl (apt-get install openssl)" >&2; exit 1; }
mkdir -p "$dir"
umask 077

if [ ! -f "$dir/ca.crt" ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$dir/ca.key" -out "$dir/ca.crt" -days 3650 \
    -subj "/CN=Ferry CA $(hostname)" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  chmod 644 "$dir/ca.crt"
  echo "made $dir/ca.crt (give it to clients: --tls_ca)" >&2
fi

# sign NAME CN EXTENSIONS: DIR/NAME.key and DIR/NAME.crt signed by the CA,
# each written under a temporary name and renamed into place.
sign() {
  local name=$1 cn=$2 ext=$3
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$dir/.$name.key" -out "$dir/.$name.csr" -subj "/CN=$cn" 2>/dev/null
  openssl x509 -req -in "$dir/.$name.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" \
    -CAcreateserial -days "$days" -out "$dir/.$name.crt" \
    -extfile <(printf '%s\n' "$ext") 2>/dev/null
  rm -f "$dir/.$name.csr"
  chmod 644 "$dir/.$name.crt"  # certificates are public; keys stay 0600
  mv -f "$dir/.$name.key" "$dir/$name.key"
  mv -f "$dir/.$name.crt" "$dir/$name.crt"
  echo "made $dir/$name.crt and $dir/$name.key" >&2
}

case "$kind" in
  server)
    sans=()
    for name in "$@"; do
      if [[ $name =~ ^[0-9.]+$ || $name == *:* ]]; then
        sans+=("IP:$name")
      else
        sans+=("DNS:$name")
      fi
    done
    san=$(IFS=,; echo "${sans[*]}")
    # clientAuth too: under mutual TLS ferryd checks its own listener with
    # this certificate.
    sign server "$1" "subjectAltName=$san
extendedKeyUsage=serverAuth,clientAuth
keyUsage=critical,digitalSignature"
    ;;
  client)
    (($# == 1)) || usage
    [[ $1 =~ ^[A-Za-z0-9._-]+$ ]] || { echo "make-certs: client name must be [A-Za-z0-9._-]" >&2; exit 2; }
    sign "$1" "$1" "extendedKeyUsage=clientAuth
keyUsage=critical,digitalSignature"
    ;;
  *) usage ;;
esac
