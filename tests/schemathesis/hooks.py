"""schemathesis hooks, loaded through schemathesis.toml (`hooks`).

POST /devices takes a compact JWS as `application/jose` (RFC 7515 §9.2.1):
text on the wire, which schemathesis does not know by that name.
"""
import schemathesis

schemathesis.serializer.alias("application/jose", "text/plain")
