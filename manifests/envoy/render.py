#!/usr/bin/env python3
"""Fill the @PLACEHOLDERS@ of reference-sidecar.yaml.

  render.py TEMPLATE OUT KEY=VALUE... [--policy-file FILE | --no-policy]

--policy-file embeds a WorkloadPolicy JSON file as the filters' configuration (a JSON
string is a valid YAML double-quoted scalar, so it is inserted with json.dumps).
--no-policy removes the `configuration` blocks: the filter then starts and denies everything.
Fails if a placeholder is left unfilled.
"""
import json
import re
import sys


def main(argv):
    if len(argv) < 3:
        sys.exit(__doc__)
    template, out, rest = argv[1], argv[2], argv[3:]
    text = open(template).read()
    policy = None
    no_policy = False
    i = 0
    while i < len(rest):
        arg = rest[i]
        if arg == "--policy-file":
            policy = open(rest[i + 1]).read()
            i += 2
            continue
        if arg == "--no-policy":
            no_policy = True
        else:
            key, _, value = arg.partition("=")
            text = text.replace("@%s@" % key, value)
        i += 1
    if no_policy:
        text = re.sub(r"\n( *)configuration:\n\1  \"@type\": [^\n]*\n\1  value: \"@POLICY@\"", "", text)
    elif policy is not None:
        text = text.replace('"@POLICY@"', json.dumps(policy))
    body = "\n".join(l for l in text.splitlines() if not l.lstrip().startswith("#"))
    left = sorted(set(re.findall(r"@[A-Z_]+@", body)))
    if left:
        sys.exit("render.py: unfilled placeholders: %s" % ", ".join(left))
    open(out, "w").write(text)


if __name__ == "__main__":
    main(sys.argv)
