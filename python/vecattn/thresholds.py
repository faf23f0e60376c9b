"""Per-head threshold files written by `vecattn-autotune thresholds` (see its --help)."""
import json
import math

FORMAT, VERSION = "vecattn-thresholds", 1


def load_thresholds(path):
    """[layers][heads] thresholds from a JSON file; ValueError names what is wrong.

    Use one layer's list as the `threshold` of vecattn.prefill:
        th = vecattn.load_thresholds("thresholds.json")
        o = vecattn.prefill(q, k, v, threshold=th[layer])
    """
    try:
        with open(path, "r", encoding="utf-8") as f:
            doc = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: malformed JSON: {e}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError(f"{path}: not a {FORMAT} file (\"format\" is {doc.get('format') if isinstance(doc, dict) else None!r})")
    if doc.get("version") != VERSION:
        raise ValueError(f"{path}: version {doc.get('version')!r} is not supported (expected {VERSION})")
    layers = doc.get("thresholds")
    if not isinstance(layers, list) or not layers:
        raise ValueError(f"{path}: \"thresholds\" must be a non-empty list of layers")
    heads = None
    out = []
    for li, row in enumerate(layers):
        if not isinstance(row, list) or not row:
            raise ValueError(f"{path}: thresholds[{li}] must be a non-empty list of per-head values")
        if heads is not None and len(row) != heads:
            raise ValueError(f"{path}: thresholds[{li}] has {len(row)} heads, thresholds[0] has {heads}")
        heads = len(row)
        values = []
        for hi, x in enumerate(row):
            if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x) or not 0 < x <= 1:
                raise ValueError(f"{path}: thresholds[{li}][{hi}] = {x!r} is not a number in (0, 1]")
            values.append(float(x))
        out.append(values)
    return out
