"""The render metrics as words: one line per metric for the log, the Prefect artifact and the
dataset card (no torch: the card imports it)."""

from __future__ import annotations


def unavailable(e: BaseException | str) -> dict:
    """A metric that could not be computed, with the reason (never nulls under available: true)."""
    return {"available": False, "reason": e if isinstance(e, str) else f"{type(e).__name__}: {e}"}


def metric_lines(m: dict) -> list[str]:
    def why(s):
        return f"unavailable ({s.get('reason', 'not in the metrics file')})"

    d, v, mem, a, fd = (m.get(k, {}) for k in ("detectability", "diversity", "memorisation", "attributes", "frechet"))
    out = []
    if d.get("available"):
        out.append(f"face detectability: {d['ratio']:.2f}x real ({d['detector']}: {d[d['detector']]:.3f} of samples, "
                   f"{d['real_' + d['detector']]:.3f} of real crops at {m.get('model_px')} px)"
                   + "".join(f"; {k}: {d[k]:.3f} vs {d['real_' + k]:.3f}" for k in ("lbpcascade", "animeface")
                             if k in d and k != d["detector"]))
    else:
        out.append(f"face detectability: {why(d)}")
    out.append(f"diversity: {v['ratio']:.2f}x real (nearest-sample distance {v['samples']:.4f} vs {v['real']:.4f})"
               if v.get("available") else f"diversity: {why(v)}")
    out.append(f"memorisation: nearest training face {mem['ratio']:.2f}x as far as for held-out faces "
               f"({mem['samples_median']:.4f} vs {mem['heldout_median']:.4f}); near copies {mem['near_copies']:.3f}"
               if mem.get("available") else f"memorisation: {why(mem)}")
    if a.get("available"):
        parts = [f"{k.replace('_', ' ')} {a[k]:.2f} (ceiling {a[k + '_ceiling']:.2f}, read on {a[k + '_read']:.0%})"
                 for k in ("hair_color", "eye_color") if k in a]
        out.append(f"attribute agreement ({a['tagger']}): mean {a['mean']:.2f} (ceiling {a['mean_ceiling']:.2f}"
                   f" over {a['scored']} attributes)" + "".join(f"; {p}" for p in parts))
    else:
        out.append(f"attribute agreement: {why(a)}")
    out.append(f"Frechet distance ({fd['features']}): {fd['value']:.3f}" if fd.get("available")
               else f"Frechet distance: {why(fd)}")
    return out
