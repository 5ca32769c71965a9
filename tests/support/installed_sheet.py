"""`python -I tests/support/installed_sheet.py SITE`: render the review contact sheet from the moeflow
installed in SITE (a wheel unpacked there), not from the checkout, and print it. The package test
runs it to see that the wheel carries the sheet's template, script and style."""

import sys

sys.path.insert(0, sys.argv[1])

import tasks.review.html as sheet  # noqa: E402 - from SITE, put first on the path above

if not sheet.__file__.startswith(sys.argv[1]):
    sys.exit(f"tasks.review.html came from {sheet.__file__}, not from {sys.argv[1]}")
print(sheet.render_html(total=1, pages=1, per_file=8, size=96, thumbs_dir="thumbs/v", version="v", store="x.csv"))
