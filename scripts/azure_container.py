"""Create a blob container on Azurite (object_store cannot create one).

One SharedKey-signed PUT with the emulator's well-known account key.
Usage: azure_container.py PORT CONTAINER
"""
import base64
import hashlib
import hmac
import sys
import urllib.request
from email.utils import formatdate

ACCOUNT = "devstoreaccount1"
KEY = base64.b64decode(
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)

port, container = sys.argv[1], sys.argv[2]
date, version = formatdate(usegmt=True), "2021-08-06"
to_sign = (
    "PUT\n" + "\n" * 11
    + f"x-ms-date:{date}\nx-ms-version:{version}\n"
    + f"/{ACCOUNT}/{ACCOUNT}/{container}\nrestype:container"
)
sig = base64.b64encode(hmac.new(KEY, to_sign.encode(), hashlib.sha256).digest()).decode()
req = urllib.request.Request(
    f"http://127.0.0.1:{port}/{ACCOUNT}/{container}?restype=container",
    method="PUT",
    headers={
        "x-ms-date": date,
        "x-ms-version": version,
        "Authorization": f"SharedKey {ACCOUNT}:{sig}",
        "Content-Length": "0",
    },
)
urllib.request.urlopen(req).read()
