#!/usr/bin/env bash
# Put nagadomi's lbpcascade_animeface.xml at models/ (the path detect.cascade defaults to),
# pinned by models/lbpcascade_animeface.xml.dvc. In order: already there and verified;
# `dvc pull` (a DVC remote or cache); `dvc update` (download from its public URL, then
# verify); offline, a symlink to ../shared/models/lbpcascade_animeface.xml after verifying
# its sha256. The file itself is never copied into the repository by this script.
set -euo pipefail
cd "$(dirname "$0")/.."
SHA256=9376d30ac38db6bda2a68b88b3b76bbd7e6aa33af47f7f5c76bc88ca75f1ce30
TARGET=models/lbpcascade_animeface.xml
RECORD=models/lbpcascade_animeface.xml.dvc
SHARED=../shared/models/lbpcascade_animeface.xml
DVC=${DVC:-.venv/bin/dvc}
[ -x "$DVC" ] || DVC=dvc

ok() { [ -e "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$SHA256" ]; }

if ok "$TARGET"; then echo "cascade: $TARGET verified"; exit 0; fi
if timeout 120 "$DVC" pull -q "$RECORD" 2>/dev/null && ok "$TARGET"; then
  echo "cascade: $TARGET from dvc pull"; exit 0
fi
cp "$RECORD" "$RECORD.bak"
if timeout 120 "$DVC" update -q "$RECORD" 2>/dev/null && ok "$TARGET"; then
  mv "$RECORD.bak" "$RECORD"  # same content: keep the pinned record as it was
  echo "cascade: $TARGET downloaded (dvc update) and verified"; exit 0
fi
mv "$RECORD.bak" "$RECORD"
if ok "$TARGET"; then :; elif [ -e "$TARGET" ] || [ -L "$TARGET" ]; then
  echo "cascade: $TARGET does not match sha256 $SHA256; removing it" >&2; rm -f "$TARGET"
fi
if ok "$SHARED"; then
  ln -sfn "../$SHARED" "$TARGET"
  echo "cascade: offline; $TARGET -> $SHARED (sha256 verified)"; exit 0
fi
echo "cascade: cannot get $TARGET (no DVC remote, no network, no verified $SHARED)" >&2
exit 1
