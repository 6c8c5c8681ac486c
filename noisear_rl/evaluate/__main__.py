"""`python -m noisear_rl.evaluate`."""

import sys

from noisear_rl.evaluate import main

sys.exit(main())
