"""``python -m rlm_sdk.cli``: the same as the ``rlm-sdk`` console script."""

import sys

from rlm_sdk.cli import main

sys.exit(main())
