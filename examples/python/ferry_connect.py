"""Reaching ferryd with TLS and an access token, for submit.py and worker.py.

The same options and environment variables as the ferry CLI and ferry-worker:

    --tls_ca FILE           $FERRY_TLS_CA           use TLS, trusting this CA
    --tls_cert FILE         $FERRY_TLS_CERT         client certificate (mutual TLS)
    --tls_key FILE          $FERRY_TLS_KEY          its private key
    --tls_server_name NAME  $FERRY_TLS_SERVER_NAME  the name in ferryd's certificate
    --token_file FILE       $FERRY_TOKEN, else the file $FERRY_TOKEN_FILE

An option wins over its variable. TLS is on when a CA is given; a client
certificate needs its key and a CA. The token goes with every call as the
metadata ("authorization", "Bearer <token>"): pass `metadata` to each stub
call. Nothing here prints the token.
"""

import os

import grpc


def add_arguments(parser):
    """Adds the TLS and token options to an argparse parser."""
    group = parser.add_argument_group("TLS and token")
    group.add_argument("--tls_ca", "--tls-ca", metavar="FILE",
                       help="use TLS, trusting this CA (PEM) for ferryd's certificate "
                            "(default: $FERRY_TLS_CA)")
    group.add_argument("--tls_cert", "--tls-cert", metavar="FILE",
                       help="client certificate (PEM) for mutual TLS (default: $FERRY_TLS_CERT)")
    group.add_argument("--tls_key", "--tls-key", metavar="FILE",
                       help="private key (PEM) of --tls_cert (default: $FERRY_TLS_KEY)")
    group.add_argument("--tls_server_name", "--tls-server-name", metavar="NAME",
                       help="the name in ferryd's certificate, if not the host of --broker "
                            "(default: $FERRY_TLS_SERVER_NAME)")
    group.add_argument("--token_file", "--token-file", metavar="FILE",
                       help="file holding the access token (default: $FERRY_TOKEN, "
                            "else the file $FERRY_TOKEN_FILE)")


def _read(path, what):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ValueError(f"{what}: cannot read {path}: {e.strerror}") from None


def _token_from_file(path, what):
    token = _read(path, what).decode("ascii", errors="replace").strip()
    if not token:
        raise ValueError(f"{what}: token file {path} is empty")
    if any(c <= " " or c > "~" for c in token):
        # Never quote the token: it is a secret.
        raise ValueError(f"{what}: token file {path} should hold the token's secret alone, "
                         "on one line")
    return token


def resolve(args, environ=os.environ):
    """The settings from the options, else the environment, as a dict.

    Raises ValueError, naming the option or variable and the file, when
    they are wrong.
    """
    def pick(option, variable):
        value = getattr(args, option)
        if value:
            return value, "--" + option
        return environ.get(variable) or None, variable

    ca, _ = pick("tls_ca", "FERRY_TLS_CA")
    cert, cert_from = pick("tls_cert", "FERRY_TLS_CERT")
    key, key_from = pick("tls_key", "FERRY_TLS_KEY")
    name, name_from = pick("tls_server_name", "FERRY_TLS_SERVER_NAME")
    if cert and not key:
        raise ValueError(f"{cert_from} needs --tls_key (or FERRY_TLS_KEY)")
    if key and not cert:
        raise ValueError(f"{key_from} needs --tls_cert (or FERRY_TLS_CERT)")
    if cert and not ca:
        raise ValueError(f"{cert_from} needs --tls_ca (or FERRY_TLS_CA)")
    if name and not ca:
        raise ValueError(f"{name_from} needs --tls_ca (or FERRY_TLS_CA)")

    if args.token_file:
        token = _token_from_file(args.token_file, "--token_file")
    elif environ.get("FERRY_TOKEN", "").strip():
        token = environ["FERRY_TOKEN"].strip()
        if any(c <= " " or c > "~" for c in token):
            raise ValueError("FERRY_TOKEN should hold the token's secret alone")
    elif environ.get("FERRY_TOKEN_FILE"):
        token = _token_from_file(environ["FERRY_TOKEN_FILE"], "FERRY_TOKEN_FILE")
    else:
        token = None

    settings = {"ca": None, "cert": None, "key": None, "server_name": name, "token": token}
    if ca:
        settings["ca"] = _read(ca, "--tls_ca" if args.tls_ca else "FERRY_TLS_CA")
        if b"-----BEGIN CERTIFICATE-----" not in settings["ca"]:
            raise ValueError(f"{ca} is not a PEM certificate")
    if cert:
        settings["cert"] = _read(cert, cert_from)
        if b"-----BEGIN CERTIFICATE-----" not in settings["cert"]:
            raise ValueError(f"{cert} is not a PEM certificate")
        settings["key"] = _read(key, key_from)
    return settings


def open_channel(broker, settings):
    """A channel to `broker` with the settings of resolve(), and the metadata
    every call must carry (empty without a token)."""
    if settings["ca"]:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=settings["ca"], private_key=settings["key"],
            certificate_chain=settings["cert"])
        options = []
        if settings["server_name"]:
            options.append(("grpc.ssl_target_name_override", settings["server_name"]))
        channel = grpc.secure_channel(broker, credentials, options=options)
    else:
        channel = grpc.insecure_channel(broker)
    metadata = ()
    if settings["token"]:
        metadata = (("authorization", "Bearer " + settings["token"]),)
    return channel, metadata


def hint(error, settings):
    """A line that helps with a refused or failed call, or None."""
    code = error.code()
    if code == grpc.StatusCode.UNAUTHENTICATED:
        if settings["token"]:
            return "the broker does not know this token (revoked?)"
        return "the broker needs a token: pass --token_file FILE or set FERRY_TOKEN"
    if code == grpc.StatusCode.UNAVAILABLE and settings["ca"]:
        return ("if the TLS handshake failed: is --tls_ca the CA of ferryd's certificate, "
                "and does that certificate carry the host (else --tls_server_name)?")
    return None
