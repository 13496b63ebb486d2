"""Repository-wide test settings."""

import os

# tests/e2e starts real nginx and Envoy: `make check-decision` installs them and runs it
# (GATEWAY_E2E=1); tests/e2e_http2 runs curl (`make check-http2`); `make test` needs nothing
# but python3 and leaves both out.
collect_ignore = [] if os.environ.get("GATEWAY_E2E") == "1" else ["e2e", "e2e_http2"]
