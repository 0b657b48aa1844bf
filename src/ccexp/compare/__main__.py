"""python -m ccexp.compare"""

import sys

from ccexp.compare import main

sys.exit(main())
