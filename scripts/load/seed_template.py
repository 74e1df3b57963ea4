"""Prints the load tests' request template: the example request with __ID__ wherever every
request needs its own value (event id, local id, CircuitID), which post.lua fills in.
Usage: python3 scripts/load/seed_template.py docs/examples/seed-adi-request.json"""
import json
import sys

seed = json.load(open(sys.argv[1]))
circuits = {r["id"] for r in seed["value"].get("externalReference", [])
            if r.get("externalIdentifierType") == "CircuitID"}


def walk(v):
    if isinstance(v, dict):
        return {k: walk(x) for k, x in v.items()}
    if isinstance(v, list):
        return [walk(x) for x in v]
    return ".BMEC.__ID__..ATI." if v in circuits else v


seed = walk(seed)
seed["headers"]["id"] = seed["value"]["id"] = "__ID__"
print(json.dumps(seed, ensure_ascii=False, separators=(",", ":")))
