"""The Make.Girls.Moe tag layout, defined once for models/ and tasks/ (tasks.tag.schema re-exports
it): 13 hair colours (one-hot), 5 hair styles and 6 other tags (independent), 10 eye colours (one-hot)."""

from __future__ import annotations

HAIR_COLORS = ("blonde", "brown", "black", "blue", "pink", "purple", "green", "red", "silver", "white",
               "orange", "aqua", "grey")
HAIR_STYLES = ("long_hair", "short_hair", "twintails", "drill_hair", "ponytail")
OTHER_TAGS = ("blush", "smile", "open_mouth", "hat", "ribbon", "glasses")
EYE_COLORS = ("blue", "red", "brown", "green", "purple", "yellow", "pink", "aqua", "black", "orange")

MGM_TAGS: tuple[str, ...] = (tuple(f"{c}_hair" for c in HAIR_COLORS) + HAIR_STYLES + OTHER_TAGS
                             + tuple(f"{c}_eyes" for c in EYE_COLORS))
N_TAGS = len(MGM_TAGS)
HAIR_COLOR_SLICE = slice(0, len(HAIR_COLORS))  # one-hot group
INDEPENDENT_SLICE = slice(len(HAIR_COLORS), len(HAIR_COLORS) + len(HAIR_STYLES) + len(OTHER_TAGS))
EYE_COLOR_SLICE = slice(INDEPENDENT_SLICE.stop, N_TAGS)  # one-hot group
ONE_HOT_GROUPS = ((HAIR_COLOR_SLICE.start, HAIR_COLOR_SLICE.stop), (EYE_COLOR_SLICE.start, EYE_COLOR_SLICE.stop))
