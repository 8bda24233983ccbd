"""moto_server with the AWS behaviours of moto_aws.py (the launcher of the tests, `make demo` and
`make bench`): runs moto's own server entry point with the same arguments."""
import sys

import moto_aws  # noqa: F401  (patches moto on import)
from moto.server import main

sys.exit(main(sys.argv[1:]))
