"""Print a YAML file of params.yaml overrides (dotted keys) as -S arguments, one a line, for
`python -m bertops.stages NAME` or `dvc exp run` (e.g. bench/distill_pair.yaml).

    mapfile -t args < <(python bench/overrides.py bench/distill_pair.yaml)
    python -m bertops.stages distill "${args[@]}"
"""

import json
import sys

import yaml


def text(value) -> str:
    """A value as YAML reads it back: JSON, with floats always written with a dot (YAML 1.1 reads
    `3e-05` as a string)."""
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        r = repr(value)
        return r.replace("e", ".0e", 1) if "e" in r and "." not in r else r
    if isinstance(value, list):
        return "[" + ",".join(text(v) for v in value) + "]"
    return json.dumps(value)


def main(path: str) -> int:
    with open(path) as f:
        for key, value in (yaml.safe_load(f) or {}).items():
            print("-S")
            print(f"{key}={text(value)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
