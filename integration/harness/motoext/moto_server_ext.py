"""moto_server with the two IAM OIDC-provider actions moto 5.2.1 lacks, and IAM's error shape.

moto implements Create/Get/List/Delete/UpdateThumbprint/Tag/Untag for IAM OpenID Connect
providers, but answers AddClientIDToOpenIDConnectProvider and RemoveClientIDFromOpenIDConnectProvider
with HTTP 500 ("action has not been implemented"). This script adds both actions to moto's own IAM
response class, working on moto's own provider objects (the client ID list that Create stores and
Get returns), then runs the ordinary moto_server entry point with the same arguments. Every other
request is moto's unchanged code.

Semantics follow the IAM API reference: both actions are idempotent (adding a client ID that is
already there, or removing one that is not, succeeds and changes nothing); an unknown provider ARN
is NoSuchEntity; a client ID must be 1-255 characters; a provider holds at most 100 client IDs.

moto also renders its authorization failures (403 AccessDenied, InvalidClientTokenId, ... when
INITIAL_NO_AUTH_ACTION_COUNT turns on policy enforcement) in EC2's shape,
<ErrorResponse><Errors><Error>, which botocore reads but the IAM Query protocol does not have: AWS
IAM answers <ErrorResponse><Error>, and the Go SDK reads only that (it reports "UnknownError"
otherwise). For IAM requests only, such a 403 body is re-shaped; the status, code and message stay
moto's.

If moto ever implements an action itself, moto's implementation is kept. Started by
integration/harness (MotoConfig.IAMClientIDs); usable by hand:

    python3 moto_server_ext.py -H 127.0.0.1 -p 0
"""

import sys

try:
    from moto.core.responses import EmptyResult
    from moto.iam import exceptions as iam_exceptions
    from moto.iam.models import IAMBackend
    from moto.iam.responses import IamResponse
    from moto.server import main as moto_server_main
except ImportError as exc:  # the harness turns this exit code into a clear test failure
    sys.stderr.write(
        "moto_server_ext: cannot import moto with %s (%s); install it with: pip install 'moto[server]'\n"
        % (sys.executable, exc)
    )
    sys.exit(3)

MAX_CLIENT_IDS = 100
MAX_CLIENT_ID_LEN = 255

# The extension relies on these moto internals; fail loudly rather than misbehave if they change.
for _name in ("get_open_id_connect_provider",):
    if not hasattr(IAMBackend, _name):
        sys.stderr.write("moto_server_ext: this moto has no IAMBackend.%s; update the extension\n" % _name)
        sys.exit(4)


def _provider_and_client_id(response):
    arn = response._get_param("OpenIDConnectProviderArn")
    client_id = response._get_param("ClientID") or ""
    if not 1 <= len(client_id) <= MAX_CLIENT_ID_LEN:
        raise iam_exceptions.ValidationError(
            "1 validation error detected: Value at 'clientID' failed to satisfy constraint: "
            "Member must have length less than or equal to 255, "
            "Member must have length greater than or equal to 1"
        )
    # Raises NoSuchEntity for an unknown ARN, exactly as GetOpenIDConnectProvider does.
    provider = response.backend.get_open_id_connect_provider(arn)
    if not hasattr(provider, "client_id_list"):
        raise RuntimeError("moto_server_ext: moto's OpenIDConnectProvider has no client_id_list")
    return provider, client_id


def add_client_id_to_open_id_connect_provider(self):
    provider, client_id = _provider_and_client_id(self)
    if client_id not in provider.client_id_list:
        if len(provider.client_id_list) >= MAX_CLIENT_IDS:
            raise iam_exceptions.LimitExceededException(
                "Cannot exceed quota for ClientIdsPerOpenIdConnectProvider: %d" % MAX_CLIENT_IDS
            )
        provider.client_id_list.append(client_id)
    return EmptyResult()


def remove_client_id_from_open_id_connect_provider(self):
    provider, client_id = _provider_and_client_id(self)
    if client_id in provider.client_id_list:
        provider.client_id_list.remove(client_id)
    return EmptyResult()


_moto_call_action = IamResponse.call_action


def call_action(self):
    status, headers, body = _moto_call_action(self)
    if status == 403 and isinstance(body, str) and "<Errors><Error>" in body:
        body = body.replace("<Errors><Error>", "<Error>", 1).replace("</Error></Errors>", "</Error>", 1)
    return status, headers, body


def install():
    IamResponse.call_action = call_action
    added = []
    for fn in (add_client_id_to_open_id_connect_provider, remove_client_id_from_open_id_connect_provider):
        if fn.__name__ not in IamResponse.__dict__:
            setattr(IamResponse, fn.__name__, fn)
            added.append(fn.__name__)
    sys.stderr.write("moto_server_ext: added IAM actions: %s\n" % (", ".join(added) or "none (moto has them)"))
    sys.stderr.flush()


if __name__ == "__main__":
    install()
    sys.argv[0] = "moto_server"
    moto_server_main(sys.argv[1:])
