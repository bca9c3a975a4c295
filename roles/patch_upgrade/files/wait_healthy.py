"""Poll a Kangpai EMS `/health` until it answers 200 with VERSION, or the deadline passes.

Usage: wait_healthy.py URL VERSION DEADLINE_S. One call on the host, so the deadline is the real
one (an Ansible retry loop pays a round trip per attempt). Prints the last answer as one JSON
line, {"status": HTTP status or null, "body": the JSON body or null, "error": ...}; exit status 0
when healthy on VERSION, 1 otherwise.
"""

import json
import sys
import time
import urllib.error
import urllib.request

url, version, deadline_s = sys.argv[1], sys.argv[2], float(sys.argv[3])
deadline = time.monotonic() + deadline_s
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy
while True:
    try:
        with opener.open(url, timeout=2) as resp:
            last = {"status": resp.status, "body": json.load(resp), "error": None}
    except urllib.error.HTTPError as exc:
        try:
            body = json.load(exc)
        except ValueError:
            body = None
        last = {"status": exc.code, "body": body, "error": str(exc)}
    except (OSError, ValueError) as exc:
        last = {"status": None, "body": None, "error": str(exc)}
    healthy = last["status"] == 200 and (last["body"] or {}).get("version") == version
    if healthy or time.monotonic() >= deadline:
        break
    time.sleep(0.25)
print(json.dumps(last))
sys.exit(0 if healthy else 1)
