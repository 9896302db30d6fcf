# Sourced by the benches that run supervisord beside clinit: sets VENV to a
# venv with supervisor 4.2 from PyPI (made on first use; $VENV to reuse
# another). Never a dependency of the product.
VENV=${VENV:-${TMPDIR:-/tmp}/clinit-bench-venv}
if [ ! -x "$VENV/bin/supervisord" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q 'supervisor>=4.2,<4.3'
fi
